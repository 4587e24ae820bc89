"""Triton's environment, without starting Triton."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiserve.triton.environment import TritonEnvironment
from sentiserve.triton.server import TritonServer, TritonUnavailableError


def test_process_env_fixes_the_stub_traps(tmp_path: Path) -> None:
    env = TritonEnvironment(tmp_path / "t")
    env.venv.joinpath("bin").mkdir(parents=True)
    (env.python).symlink_to(Path(__import__("sys").executable))
    made = env.process_env(
        {
            "PATH": "/usr/bin",
            "PYTHONPATH": "/elsewhere",
            "HOME": "/root",
            "LD_LIBRARY_PATH": "/opt/lib",
        }
    )
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
