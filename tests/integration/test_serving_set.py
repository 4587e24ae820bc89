"""The serving set (pyproject's core dependencies, what the slim image installs) is enough
to serve: the server starts and answers with every module of the other extras made
unimportable, and a command that needs one says which extra to install.

The modules are hidden by a ``sitecustomize`` import hook (a stand-in for an environment
without them; building that environment would download hundreds of MB per run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from sentiserve.cli import EXTRAS
from tests.integration.serving import start_server, stop

HOOK = """
import importlib.abc, sys

HIDDEN = {hidden!r}

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
"""


def hiding(folder: Path, modules: set[str]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HOOK.format(hidden=sorted(modules)))
    return {"PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}


def test_the_core_serves_without_the_other_extras(tiny_build: Path, tmp_path: Path) -> None:
    env = hiding(tmp_path / "hook", set(EXTRAS))
    running = start_server(tiny_build / "model_repository", env=env)
    try:
        answer = httpx.post(f"{running.url}/v1/sentiment", json={"text": "a fine film"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["label"] in {"negative", "positive"}
        metrics = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics").text
        assert "nv_inference_request_success" in metrics
    finally:
        stop(running)


def test_a_missing_extra_is_named(tmp_path: Path) -> None:
    env = {**os.environ, **hiding(tmp_path / "hook", set(EXTRAS))}
    cases = {
        ("train", "--max-steps", "1", "--out", str(tmp_path / "m")): "sentiserve[train]",
        ("repository", "pull", "s3://bucket/prefix", str(tmp_path / "r")): "sentiserve[s3]",
    }
    for args, extra in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "sentiserve", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        assert extra in done.stderr
        assert "Traceback" not in done.stderr
