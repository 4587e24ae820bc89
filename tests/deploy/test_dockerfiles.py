"""The Dockerfiles (CPU: the embedded server; GPU: Triton), checked statically (no Docker
engine runs here; no Dockerfile linter is obtainable from the registries): pinned bases, a
numeric non-root user in the final stage, a health check on readiness, no secrets, binds
0.0.0.0, and a .dockerignore that keeps the build context to what the build copies."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
TRITON = ROOT / "deploy" / "docker" / "Dockerfile.triton"
BOTH = pytest.mark.parametrize("dockerfile", [DOCKERFILE, TRITON], ids=["cpu", "triton"])


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(step)
    return found


@BOTH
def test_bases_are_pinned_and_the_build_is_multi_stage(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    froms = [a.split()[0] for k, a in steps if k == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    for base in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        if image in {a.split()[-1] for k, a in steps if k == "FROM" and " AS " in a.upper()}:
            continue  # a previous stage
        name, _, tag = image.partition(":")
        assert tag, f"{image} is not pinned"
        assert tag != "latest"
        assert re.search(r"\d+\.\d+", tag), f"{image}: pin a version"


@BOTH
def test_final_stage_runs_as_numeric_non_root_with_a_health_check(dockerfile: Path) -> None:
    final = stages(instructions(dockerfile))[-1]
    users = [a for k, a in final if k == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    checks = [a for k, a in final if k == "HEALTHCHECK"]
    assert checks
    assert "/v2/health/ready" in checks[-1]
    if dockerfile == DOCKERFILE:
        (entrypoint,) = [a for k, a in final if k == "ENTRYPOINT"]
        assert "0.0.0.0" in entrypoint
        assert "serve" in entrypoint
    else:
        # NVIDIA's nvidia_entrypoint.sh (CUDA forward compatibility) must stay the entrypoint;
        # tritonserver is the command it runs (and binds every address by default).
        assert not [a for k, a in final if k == "ENTRYPOINT"]
        (cmd,) = [a for k, a in final if k == "CMD"]
        assert json.loads(cmd)[0] == "tritonserver"
    exposed = {p for k, a in final if k == "EXPOSE" for p in a.split()}
    assert {"8000", "8001", "8002"} <= exposed
    volumes = " ".join(a for k, a in final if k == "VOLUME")
    assert "/tmp" in volumes, "writable paths for a read-only root"
    if dockerfile == DOCKERFILE:
        assert "/cache" in volumes


def test_triton_image_runs_triton_as_the_issue_asks() -> None:
    steps = instructions(TRITON)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", args["TRITON_IMAGE"])
    final = stages(steps)[-1]
    (cmd,) = [a for k, a in final if k == "CMD"]
    for flag in ("--model-repository=", "--strict-readiness=true", "--model-control-mode="):
        assert flag in cmd
    installs = " ".join(a for k, a in final if k == "RUN")
    assert "numpy>=1.26,<2" in installs, "the python stub needs numpy < 2"
    assert "tokenizers" in installs
    assert "--no-deps" in installs, "sentiserve without PyTorch"
    # The chart pins the same Triton release as the image's base.
    values = (ROOT / "deploy/helm/sentiserve/values.yaml").read_text()
    release = args["TRITON_IMAGE"].split(":")[1].removesuffix("-py3")
    assert f'tag: "{release}-' in values


def test_cpu_image_installs_the_serving_set_only() -> None:
    installs = " ".join(a for k, a in instructions(DOCKERFILE) if k == "RUN")
    assert "torch" not in installs, "serving needs no PyTorch"
    assert '".[${EXTRAS}]"' in installs
    assert "ARG EXTRAS=s3,load" in DOCKERFILE.read_text(), "the serving set by default"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(
        extras["dependencies"]
        + extras["optional-dependencies"]["s3"]
        + extras["optional-dependencies"]["load"]
    )
    for heavy in ("torch", "transformers", "pandas", "matplotlib", "accelerate"):
        assert heavy not in core, f"{heavy} is in the serving set"


@BOTH
def test_no_secrets_and_no_latest(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert ":latest" not in text
    for keyword, rest in instructions(dockerfile):
        if keyword in {"ENV", "ARG"}:
            for pair in shlex.split(rest):
                name = pair.split("=", 1)[0].upper()
                assert not re.search(r"KEY|SECRET|TOKEN|PASSWORD", name), f"{keyword} {pair}"


@BOTH
def test_build_context_is_what_the_build_copies(dockerfile: Path) -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "ignore everything first"
    copied = {
        a.split()[0] for k, a in instructions(dockerfile) if k == "COPY" and "--from" not in a
    }
    for source in copied:
        assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, source


def test_cpu_image_creates_cache_for_its_user() -> None:
    """Review finding: /cache was a VOLUME with no folder behind it, so Docker created it
    root-owned and uid 10001 could not pull from S3 into it without a tmpfs."""
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    runtime = text.split("AS runtime", 1)[1]
    made = runtime.index("install -d -o 10001 -g 10001")
    assert "/cache" in runtime[made : runtime.index("\n", made)]
    assert made < runtime.index('VOLUME ["/tmp", "/cache"]')


def test_the_build_requirement_supports_the_license_string() -> None:
    """setuptools reads ``license = "SPDX"`` from version 77 (PEP 639)."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    (setuptools,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(\..*)?", setuptools)
    assert found is not None
    assert int(found.group(1)) >= 77
