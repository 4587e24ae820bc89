"""The README's commands exist, with the options they use."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiserve.cli import build_app

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("sentiserve "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_has_the_two_fresh_machine_commands() -> None:
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    lines = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines() if ln.strip()]
    assert lines[:2] == ["make serve", "make test"]
    assert lines[2:] == ["make serve-checkpoint CHECKPOINT=./my-classifier REPO=my_repository"]
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^serve:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    assert re.search(r"^serve-checkpoint:", makefile, flags=re.M)
    assert "make test" in (README.parent / ".ci" / "run").read_text()


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_command_matches_the_cli(argv: list[str]) -> None:
    words = [a for a in argv if not a.startswith("-")]
    app = build_app()
    # Subcommand path: "repository build" is two words, other commands one.
    path = words[:2] if words and words[0] == "repository" else words[:1]
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in (a.split("=")[0] for a in argv if a.startswith("--")):
        assert option in result.output, f"{option} is not an option of sentiserve {' '.join(path)}"
