"""Triton's environment and the gateway's error mapping, without starting Triton."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiserve.errors import ModelNotFoundError
from sentiserve.serve.batcher import DeadlineExceededError, QueueFullError
from sentiserve.serve.dataplane import InvalidInputError
from sentiserve.serve.gateway import BackendUnavailableError, map_error
from sentiserve.triton.environment import TritonEnvironment
from sentiserve.triton.server import TritonServer, TritonUnavailableError


def test_process_env_fixes_the_stub_traps(tmp_path: Path) -> None:
    env = TritonEnvironment(tmp_path / "t")
    env.venv.joinpath("bin").mkdir(parents=True)
    (env.python).symlink_to(Path(__import__("sys").executable))
    made = env.process_env({"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere", "HOME": "/root",
                            "LD_LIBRARY_PATH": "/opt/lib"})  # fmt: skip
    assert made["PATH"].split(":")[0] == str(env.venv / "bin")
    assert "PYTHONPATH" not in made
    libs = made["LD_LIBRARY_PATH"].split(":")
    assert libs[0] == env.libpython_dir()
    assert libs[-1] == "/opt/lib"
    assert made["PYTHONDONTWRITEBYTECODE"] == "1"


def test_missing_environment_is_a_clear_error(tmp_path: Path) -> None:
    env = TritonEnvironment(tmp_path / "none")
    assert not env.ready()
    server = TritonServer(env, str(tmp_path))
    with pytest.raises(TritonUnavailableError, match="sentiserve triton --setup-only"):
        server.start()
    command = server.command()
    assert "--strict-readiness=true" in command
    assert "--http-address=127.0.0.1" in command


class FakeTritonError(Exception):
    """A tritonclient InferenceServerException's interface (status() and message())."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self._status, self._message = status, message

    def status(self) -> str:
        return self._status

    def message(self) -> str:
        return self._message


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect", BackendUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceededError),
        ("StatusCode.RESOURCE_EXHAUSTED", "queue full", QueueFullError),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'x' is not found", ModelNotFoundError),
        ("StatusCode.INVALID_ARGUMENT", "text 3 has 900 tokens", InvalidInputError),
        ("StatusCode.INTERNAL", "stub crashed", BackendUnavailableError),
    ],
)
def test_triton_errors_map_to_client_statuses(status: str, message: str, kind: type) -> None:
    assert isinstance(map_error(FakeTritonError(status, message), "sentiment"), kind)
