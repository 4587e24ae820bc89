"""How many engine instances a model gets, and how many threads each (Triton's
``instance_group``), with defaults measured on the machines we serve on.

On CPU (2-core machine, int8 MiniLM, rt texts): two one-thread sessions side by side ran
467 seq/s together where one two-thread session ran 444-469 on sorted batches of 32, and the
plain peer with one-thread calls in parallel beat a two-thread engine worker by 1.37x at 32
clients, because two threads synchronise on every small batch. So the default is one
instance per core with one thread each, plus a *solo* session with every core for a lone
request on an idle server (latency at light load). On a GPU one instance feeds the device
with large batches; more only add contention.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sentiserve.errors import ConfigError

logger = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    Kubernetes CPU limit), rounded up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = cores or os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    try:
        limit = -(-int(quota) // int(period))
    except (ValueError, ZeroDivisionError):
        return cores
    return max(1, min(cores, limit))


@dataclass(frozen=True)
class InstanceConfig:
    """Engine instances per model.

    Attributes:
        count: Instances (worker threads). One-thread CPU instances share one ONNX Runtime
            session (``engine.base.runs_side_by_side``); others get a session each. None:
            one per core on CPU, one on a GPU.
        threads: Intra-op threads per instance. None: 1 on CPU when there are several
            instances, else every core.
        solo_threads: Threads of the solo session used for a lone request when every
            instance is idle. None: every core when instances use fewer; 0 turns it off.
    """

    count: int | None = None
    threads: int | None = None
    solo_threads: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ConfigError(f"instances must be >= 1, got {self.count}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"intra-op threads must be >= 1, got {self.threads}")
        if self.solo_threads is not None and self.solo_threads < 0:
            raise ConfigError(f"solo threads must be >= 0, got {self.solo_threads}")

    def resolve(self, device: str, cores: int | None = None) -> ResolvedInstances:
        """Fill in the defaults for ``device`` (``cpu`` or ``cuda``) on ``cores`` cores, and
        warn when the instances ask for more threads than there are cores."""
        cores = cores or available_cores()
        gpu = device != "cpu"
        count = self.count or (1 if gpu else cores)
        threads = self.threads or (cores if count == 1 else max(1, cores // count))
        solo = self.solo_threads
        if solo is None:
            solo = cores if (not gpu and count > 1 and threads < cores) else 0
        if count * threads > cores and not gpu:
            logger.warning(
                "%d instances x %d intra-op threads = %d threads on %d cores: they will "
                "contend for the cores (lower --instances or --intra-op-threads)",
                count,
                threads,
                count * threads,
                cores,
            )
        return ResolvedInstances(count, threads, solo, cores)


@dataclass(frozen=True)
class ResolvedInstances:
    """:class:`InstanceConfig` with every default decided."""

    count: int
    threads: int
    solo_threads: int
    cores: int
