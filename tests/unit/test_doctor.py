"""sentiserve doctor on this machine (no GPU: it says so and passes) and its checks' logic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sentiserve import doctor
from sentiserve.doctor import Check, run_checks


@pytest.mark.skipif(doctor.gpu_present(), reason="this machine has an NVIDIA GPU")
def test_without_a_gpu_it_says_so_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sentiserve", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["gpu"] is False
    assert report["ok"] is True
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["NVIDIA driver"] == "skip"
    assert statuses["ONNX Runtime"] == "pass"
    assert statuses["disk for the build"] in ("pass", "warn")
    table = subprocess.run(
        [sys.executable, "-m", "sentiserve", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "No NVIDIA GPU here" in table.stderr


def test_a_broken_check_is_a_failure_not_a_crash() -> None:
    def check_broken() -> Check:
        raise RuntimeError("probe exploded")

    (result,) = run_checks((check_broken,))
    assert result.status == "fail"
    assert "probe exploded" in result.found


@pytest.mark.parametrize(
    ("driver", "status"),
    [("580.65.06", "pass"), ("565.57.01", "fail"), ("535.104.05", "warn"), ("418.1", "fail")],
)
def test_triton_driver_support(monkeypatch: pytest.MonkeyPatch, driver: str, status: str) -> None:
    # nvidia-smi's answer stands in for a GPU this machine does not have.
    gpus = [{"name": "Tesla T4", "driver": driver, "memory_mib": "15360", "compute_cap": "7.5"}]
    monkeypatch.setattr(doctor, "_nvidia_smi", lambda: gpus)
    assert doctor.check_triton_driver().status == status
    assert doctor.check_gpu_model().status == "pass"
