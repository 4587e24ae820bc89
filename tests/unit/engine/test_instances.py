"""Engine instances: defaults per device, the cgroup CPU quota, and bad settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sentiserve.engine.instances import InstanceConfig, available_cores
from sentiserve.errors import ConfigError


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), ("garbage", None)],
)
def test_available_cores_follows_the_cgroup_quota(
    tmp_path: Path, cpu_max: str, expected: int | None
) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(path) == min(affinity, expected or affinity)


def test_missing_cgroup_file_means_the_affinity(tmp_path: Path) -> None:
    assert available_cores(tmp_path / "none") == len(os.sched_getaffinity(0))


def test_cpu_defaults_one_single_thread_instance_per_core_plus_solo() -> None:
    plan = InstanceConfig().resolve("cpu", cores=4)
    assert (plan.count, plan.threads, plan.solo_threads) == (4, 1, 4)


def test_one_cpu_instance_takes_every_core_and_needs_no_solo() -> None:
    plan = InstanceConfig(count=1).resolve("cpu", cores=4)
    assert (plan.count, plan.threads, plan.solo_threads) == (1, 4, 0)


def test_gpu_defaults_to_one_instance_without_solo() -> None:
    plan = InstanceConfig().resolve("cuda", cores=16)
    assert (plan.count, plan.solo_threads) == (1, 0)


def test_solo_can_be_turned_off() -> None:
    assert InstanceConfig(solo_threads=0).resolve("cpu", cores=2).solo_threads == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "instances must be >= 1"),
        ({"threads": 0}, "intra-op threads must be >= 1"),
        ({"solo_threads": -1}, "solo threads must be >= 0"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InstanceConfig(**kwargs)


def test_more_threads_than_cores_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sentiserve.engine.instances"):
        InstanceConfig(count=3, threads=2).resolve("cpu", cores=2)
    assert "3 instances x 2 intra-op threads = 6 threads on 2 cores" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sentiserve.engine.instances"):
        InstanceConfig(count=2, threads=1).resolve("cpu", cores=2)
    assert not caplog.text
