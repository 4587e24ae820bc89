"""GPU metrics with Triton's names (``nv_gpu_utilization``, ``nv_gpu_memory_total_bytes``,
``nv_gpu_memory_used_bytes``, ``nv_gpu_power_usage``; label ``gpu_uuid``), read from NVML
(``nvidia-ml-py``) at each scrape. On a machine without an NVIDIA driver nothing is loaded
and nothing is exported."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sentiserve.engine.torch import NVIDIA_DRIVER

logger = logging.getLogger(__name__)

GAUGES = (
    ("nv_gpu_utilization", "GPU utilization rate (0.0 - 1.0)."),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes."),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes."),
    ("nv_gpu_power_usage", "GPU power usage in watts."),
)


def _nvml() -> Any:
    if not any(path.exists() for path in NVIDIA_DRIVER):
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, or a driver/library mismatch
        logger.warning("GPU metrics off: NVML unavailable (%s)", exc)
        return None
    return pynvml


class GpuMetrics:
    """Reads every GPU's utilization, memory and power when scraped.

    Args:
        nvml: An initialised NVML module (``pynvml``); None: find one if there is a GPU.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml if nvml is not None else _nvml()
        self._handles: list[tuple[str, Any]] = []
        if self._nvml is not None:
            for index in range(self._nvml.nvmlDeviceGetCount()):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = self._nvml.nvmlDeviceGetUUID(handle)
                self._handles.append((uuid.decode() if isinstance(uuid, bytes) else uuid, handle))

    @property
    def enabled(self) -> bool:
        return bool(self._handles)

    def render(self) -> Iterable[str]:
        if not self._handles:
            return
        nvml = self._nvml
        rows: dict[str, list[tuple[str, float]]] = {name: [] for name, _ in GAUGES}
        for uuid, handle in self._handles:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                rows["nv_gpu_utilization"].append(
                    (uuid, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                )
                rows["nv_gpu_memory_total_bytes"].append((uuid, float(memory.total)))
                rows["nv_gpu_memory_used_bytes"].append((uuid, float(memory.used)))
                rows["nv_gpu_power_usage"].append(
                    (uuid, nvml.nvmlDeviceGetPowerUsage(handle) / 1000)
                )
            except Exception as exc:  # a GPU that fell off the bus: skip it this scrape
                logger.warning("NVML read failed for %s: %s", uuid, exc)
        for name, doc in GAUGES:
            yield f"# HELP {name} {doc}"
            yield f"# TYPE {name} gauge"
            for uuid, value in rows[name]:
                yield f'{name}{{gpu_uuid="{uuid}"}} {value:.17g}'
