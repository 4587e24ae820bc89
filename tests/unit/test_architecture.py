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


SHARED_CLI = {"sentiserve.cli.console", "sentiserve.cli.options"}
"""The cli modules that are not commands: what commands share."""


def test_no_command_imports_another_command() -> None:
    problems = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("sentiserve.cli.") and module not in SHARED_CLI:
                problems.append(f"{path.name} imports {module}")
    assert not problems, problems


def test_production_code_never_imports_the_rehearsal() -> None:
    users = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "sentiserve.local.cluster" in path.read_text() and path.parts[-2] != "local"
    ]
    assert users == ["cli/cluster.py"], "only `sentiserve cluster-local` starts the rehearsal"


def serve_modules_imported(path: Path) -> set[str]:
    """The ``sentiserve.serve`` modules (first component below serve) ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[:2] == ["sentiserve", "serve"]:
                if len(parts) > 2:
                    found.add(parts[2])
                else:
                    found.update(a.name for a in node.names)
    return found


TRANSPORTS = {"rest_v1", "rest_v2", "grpc_v2", "rest_tei", "rest_classify"}


def test_transports_never_import_each_other() -> None:
    problems = []
    for name in sorted(TRANSPORTS):
        bad = serve_modules_imported(PACKAGE / "serve" / f"{name}.py") & (TRANSPORTS - {name})
        if bad:
            problems.append(f"serve/{name}.py imports {sorted(bad)}")
    assert not problems, problems


def test_the_planes_know_no_transport_and_no_policy() -> None:
    web = TRANSPORTS | {"edge", "policy", "auth", "app", "playground", "openapi", "settings"}
    problems = []
    for path in sorted((PACKAGE / "serve" / "plane").glob("*.py")):
        bad = serve_modules_imported(path) & web
        if bad:
            problems.append(f"serve/plane/{path.name} imports {sorted(bad)}")
    assert not problems, problems


def test_the_data_plane_protocol_and_its_implementations_agree() -> None:
    import inspect

    from sentiserve.serve.plane import DataPlane
    from sentiserve.serve.plane.embedded import EmbeddedPlane
    from sentiserve.serve.plane.triton import TritonPlane

    operations = [
        name
        for name, member in vars(DataPlane).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    ]
    assert {"infer", "classify", "ready", "metadata"} <= set(operations)
    for implementation in (EmbeddedPlane, TritonPlane):
        for name in operations:
            want = inspect.signature(getattr(DataPlane, name)).parameters
            got = inspect.signature(getattr(implementation, name)).parameters
            where = f"{implementation.__name__}.{name}"
            assert inspect.iscoroutinefunction(getattr(implementation, name)), where
            for param, spec in want.items():
                assert param in got, f"{where} lacks {param}"
                assert got[param].kind == spec.kind, f"{where}: {param} is {got[param].kind}"
                assert got[param].default == spec.default, f"{where}: {param}'s default"
            extra = [p for p in got.values() if p.name not in want]
            assert all(p.default is not inspect.Parameter.empty for p in extra), where
    plane_attributes = set(DataPlane.__annotations__)
    assert not plane_attributes & {"api_key", "limits", "accepting"}, (
        "the policy's, not the plane's"
    )
