"""What the peer scripts share: their command line, and running a server as a child
process until SIGTERM, then removing the folder it was given."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def arguments(description: str | None, *, workers: str, wait: str) -> argparse.ArgumentParser:
    """``--model-repository``, ``--port``, ``--workers``, ``--threads``,
    ``--max-batch-size`` and ``--wait-ms``, with the peer's own names in the help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--workers", type=int, default=2, help=workers)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads each")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=5.0, help=wait)
    return parser


def run_until_stopped(command: list[str], env: dict[str, str], folder: Path) -> None:
    """Run ``command`` until it exits or this process gets SIGTERM (passed on), then
    remove ``folder`` and exit with the child's status."""
    server = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(server.returncode)
