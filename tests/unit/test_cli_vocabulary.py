"""The command line's vocabulary, checked over the whole command tree (as
``test_architecture.py`` checks imports), and the old spellings it still takes."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sentiserve.cli import build_app
from sentiserve.cli.vocabulary import MOVED_COMMANDS, RENAMED_OPTIONS, rewrite

SERVERS = {("serve",), ("triton",), ("monitor",), ("cluster-local",)}
"""Commands that run until stopped: they produce no result to print as JSON."""
MODEL_FLAGS = {
    "--base-model",
    "--checkpoint",
    "--model-name",
    "--model-repository",
    "--triton-model-name",
    "--rollout-model-name",  # the served model the rollout options apply to
    "--model-control",
    "--no-model-control",
    "--model-control-mode",
}
DURATION_WORDS = re.compile(r"timeout|duration|warmup|interval|delay|grace|keep-alive")
UNITS = ("-s", "-ms", "-us")


Command = Any  # typer's (vendored) click Command


def commands() -> dict[tuple[str, ...], Command]:
    root = typer.main.get_command(build_app())
    found: dict[tuple[str, ...], Command] = {}

    def walk(command: Command, path: tuple[str, ...]) -> None:
        if hasattr(command, "list_commands"):  # a group
            ctx = typer.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, (*path, name))
        else:
            found[path] = command

    walk(root, ())
    return found


def flags(command: Command) -> list[str]:
    return [
        flag
        for p in command.params
        if p.param_type_name == "option"
        for flag in (*p.opts, *p.secondary_opts)
        if flag.startswith("--")
    ]


COMMANDS = commands()


def test_the_tree_is_what_the_docs_describe() -> None:
    assert ("repository", "publish") in COMMANDS
    assert ("repository", "pull") in COMMANDS
    assert ("publish",) not in COMMANDS, "moved under repository (an alias remains)"


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_models_are_named_by_what_they_are(path: tuple[str, ...]) -> None:
    model_flags = {f for f in flags(COMMANDS[path]) if "model" in f}
    assert model_flags <= MODEL_FLAGS, model_flags - MODEL_FLAGS


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_durations_carry_their_unit(path: tuple[str, ...]) -> None:
    timed = [f for f in flags(COMMANDS[path]) if DURATION_WORDS.search(f) and "ratio" not in f]
    bad = [f for f in timed if not f.endswith(UNITS)]
    assert not bad, f"sentiserve {' '.join(path)}: {bad} should end in -s, -ms or -us"


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in SERVERS], ids=" ".join)
def test_commands_with_a_result_print_it_as_json(path: tuple[str, ...]) -> None:
    assert "--json" in flags(COMMANDS[path]), f"sentiserve {' '.join(path)} has no --json"


def test_every_old_spelling_points_at_an_option_that_exists() -> None:
    for path, renamed in RENAMED_OPTIONS.items():
        assert path in COMMANDS, path
        present = set(flags(COMMANDS[path]))
        for old, new in renamed.items():
            assert new in present, f"{path}: {new}"
            assert old not in present, f"{path}: {old} is still a visible option"
    for new in MOVED_COMMANDS.values():
        assert new in COMMANDS


@pytest.mark.parametrize(
    ("argv", "expected", "notes"),
    [
        (["train", "--model", "x"], ["train", "--base-model", "x"], 1),
        (
            ["build", "--name=m", "--model", "b"],
            ["build", "--model-name=m", "--base-model", "b"],
            2,
        ),
        (["bench", "--duration", "3"], ["bench", "--duration-s", "3"], 1),
        (["repository", "show", "--model", "m"], ["repository", "show", "--model-name", "m"], 1),
        (["pull", "s3://b/p", "d"], ["repository", "pull", "s3://b/p", "d"], 1),
        (["serve", "--model-repository", "r"], ["serve", "--model-repository", "r"], 0),
        (["score", "a", "b", "--", "--model"], ["score", "a", "b", "--", "--model"], 0),
    ],
)
def test_old_spellings_are_rewritten_with_a_note(
    argv: list[str], expected: list[str], notes: int
) -> None:
    got, said = rewrite(argv)
    assert got == expected
    assert len(said) == notes
    assert all("deprecated" in note and "next release" in note for note in said)


def test_an_old_spelling_still_runs_and_says_so() -> None:
    runner = CliRunner()
    result = runner.invoke(build_app(), ["publish", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sentiserve repository publish" in result.output
    assert "`sentiserve publish` is deprecated" in result.stderr
    old = runner.invoke(build_app(), ["bench", "--duration", "0"], env={"COLUMNS": "200"})
    assert old.exit_code == 2, "the rewritten option reached bench's own check"
    assert "--duration-s and --timeout-s must be positive" in old.output
    assert "--duration is deprecated" in old.stderr
