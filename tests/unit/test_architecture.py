"""The package map, checked: only a few modules at the top of the package, and imports run
one way along the pipeline (serve never imports train; engines never import the web layer;
no command imports another command; production code never imports the rehearsal script)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "sentiserve"
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "settings.py", "py.typed"}

FORBIDDEN = {
    # package: packages it must never import (at module level or inside functions)
    "serve": {"train", "export", "optimize", "pipeline", "cli", "bench", "local"},
    "engine": {"serve", "cli", "bench", "train", "pipeline", "triton", "client"},
    "repository": {"serve", "cli", "bench", "train", "export", "pipeline", "triton"},
    "data": {"serve", "cli", "engine", "repository", "train", "pipeline", "bench"},
    "train": {"serve", "cli", "bench", "export", "optimize", "pipeline", "triton"},
    "export": {"serve", "cli", "bench", "optimize", "pipeline", "triton"},
    "optimize": {"serve", "cli", "bench", "pipeline", "triton"},
    "triton": {"cli", "bench", "train", "pipeline"},
    "client": {"serve", "cli", "engine", "repository", "train", "pipeline", "bench"},
    "bench": {"cli", "train", "pipeline"},
    "evaluate": {"serve", "cli", "bench", "pipeline"},
}


def imported_packages(path: Path) -> set[str]:
    """The sentiserve sub-packages (first component) ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "sentiserve":
                names += [f"sentiserve.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sentiserve" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_only_the_entry_points_errors_and_settings_are_at_the_top() -> None:
    top = {p.name for p in PACKAGE.iterdir() if p.is_file()}
    assert top <= TOP_LEVEL, f"move into a package: {sorted(top - TOP_LEVEL)}"


def test_imports_run_one_way() -> None:
    problems = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            bad = imported_packages(path) & forbidden
            if bad:
                problems.append(f"{path.relative_to(PACKAGE)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)


def test_no_command_imports_another_command() -> None:
    problems = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if (
                module
                and module.startswith("sentiserve.cli.")
                and module != "sentiserve.cli.console"
            ):
                problems.append(f"{path.name} imports {module}")
    assert not problems, problems


def test_production_code_never_imports_the_rehearsal() -> None:
    users = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "sentiserve.local.cluster" in path.read_text() and path.parts[-2] != "local"
    ]
    assert users == []
