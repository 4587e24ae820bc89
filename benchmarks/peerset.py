"""The serving frameworks people pick instead of sentiserve, as benchmark peers: each runs
from its own virtual environment (``.peers/<name>``, made by ``make bench-peers`` from
benchmarks/peers/<name>.txt, since their pins clash with ours and with each other), on the
same int8 engine file and tokenizer (benchmarks/peers/engine.py), on free local ports.

Each peer has a few settings its documentation suggests for a CPU (workers, batch size,
batch wait); compare.py's ``tune`` measures each one at 32 clients and runs the full curves
with the best, recording which it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_DIR = HERE / "peers"
VENVS = ROOT / ".peers"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "BENTOML_DO_NOT_TRACK": "True",
    "DO_NOT_TRACK": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
}
"""Telemetry off and no hub look-ups: every peer runs offline."""


Request = Callable[[Sequence[str]], tuple[str, list[bytes]]]
"""Texts -> the URL path and one JSON body per text."""


def protocol_request(protocol: str) -> Request:
    """The bodies ``sentiserve bench`` sends for ``protocol`` (v1: sentiserve's
    ``/v1/sentiment``; v2-http: the KServe v2 tensor, which MLServer takes unchanged)."""
    from sentiserve.bench.protocols import http_request

    return lambda texts: http_request(protocol, "sentiment", texts)


def bentoml_request(texts: Sequence[str]) -> tuple[str, list[bytes]]:
    """A batchable BentoML API takes a list: one text per request, in a list of one."""
    return "/v1/sentiment", [json.dumps({"texts": [t]}).encode() for t in texts]


def infinity_request(texts: Sequence[str]) -> tuple[str, list[bytes]]:
    """Infinity's ``/classify``: ``input`` is a list of texts."""
    return "/classify", [json.dumps({"input": [t], "model": "sentiment"}).encode() for t in texts]


@dataclass(frozen=True)
class Framework:
    """A peer framework: its environment, its start command and its settings to try."""

    name: str
    venv: str
    package: str
    script: str
    request: Request
    settings: tuple[dict[str, Any], ...]
    protocol: str = "v1"
    entry: str = "python"
    known_issue: str = ""

    @property
    def python(self) -> Path:
        return VENVS / self.venv / "bin" / "python"

    def installed(self) -> bool:
        return self.python.exists() and (VENVS / self.venv / ".installed").exists()

    def command(self, repo: Path, setting: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The command line (``{http}`` for the port) and environment for ``setting``."""
        env = {**os.environ, **OFFLINE}
        env["PYTHONPATH"] = str(PEERS_DIR)
        if self.entry == "bentoml":
            env.update(
                PEER_MODEL_REPOSITORY=str(repo.resolve()),
                PEER_WORKERS=str(setting["workers"]),
                PEER_THREADS=str(setting["threads"]),
                PEER_MAX_BATCH_SIZE=str(setting["max_batch_size"]),
            )
            bentoml = str(self.python.parent / "bentoml")
            cmd = [bentoml, "serve", "bentoml_service:Sentiment", "--working-dir", str(PEERS_DIR)]
            return [*cmd, "--host", "127.0.0.1", "--port", "{http}"], env
        cmd = [str(self.python), str(PEERS_DIR / self.script)]
        cmd += ["--model-repository", str(repo.resolve()), "--port", "{http}"]
        for key, value in setting.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd, env


def grid(**choices: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """Settings as written in ``choices``: each key's n-th value makes the n-th setting."""
    count = len(next(iter(choices.values())))
    return tuple({k: v[i] for k, v in choices.items()} for i in range(count))


BATCHING = grid(
    workers=(2, 2, 1), threads=(1, 1, 2), max_batch_size=(16, 32, 32), wait_ms=(5, 10, 10)
)
"""What LitServe's, Ray Serve's and MLServer's docs suggest for a CPU: one worker per core
with one thread each, or one worker with every core; batch 16 or 32; a 5 or 10 ms wait."""

FRAMEWORKS = (
    Framework(
        "litserve",
        "litserve",
        "litserve",
        "litserve_server.py",
        protocol_request("v1"),
        BATCHING,
    ),
    Framework(
        "ray serve",
        "rayserve",
        "ray",
        "rayserve_server.py",
        protocol_request("v1"),
        BATCHING,
    ),
    Framework(
        "bentoml",
        "bentoml",
        "bentoml",
        "bentoml_service.py",
        bentoml_request,
        grid(workers=(2, 2, 1), threads=(1, 1, 2), max_batch_size=(16, 32, 32)),
        entry="bentoml",
    ),
    Framework(
        "mlserver (v2)",
        "mlserver",
        "mlserver",
        "mlserver_runtime.py",
        protocol_request("v2-http"),
        BATCHING,
        protocol="v2-http",
    ),
    Framework(
        "infinity",
        "infinity",
        "infinity-emb",
        "infinity_server.py",
        infinity_request,
        grid(max_batch_size=(16, 32)),
        known_issue=(
            "infinity-emb 0.0.78 gives Optimum an absolute ONNX file path, which Optimum 2 "
            "refuses; Optimum 1.x (1.27) needs transformers < 4.49 and imports "
            "torch.onnx.symbolic_opset14._attention_scale, which torch 2.13 (the CPU build "
            "installed here) no longer has. It needs an older CPU torch (from PyTorch's own "
            "package index) or an Infinity release that supports Optimum 2."
        ),
    ),
)
NAMES = tuple(f.name for f in FRAMEWORKS)


def by_name(name: str) -> Framework:
    return next(f for f in FRAMEWORKS if f.name == name)


def install(names: Sequence[str] = ()) -> None:
    """Make each peer's environment (``.peers/<venv>``) from its requirements file."""
    for framework in FRAMEWORKS:
        if names and framework.name not in names and framework.venv not in names:
            continue
        if framework.installed():
            continue
        folder = VENVS / framework.venv
        print(f"installing {framework.name} into {folder}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [
                str(framework.python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(PEERS_DIR / f"{framework.venv}.txt"),
            ],
            check=True,
        )
        (folder / ".installed").touch()


if __name__ == "__main__":
    install(sys.argv[1:])
