"""nv_gpu_* metrics. No GPU here: NVML is replaced by a stand-in with NVML's interface (the
one fault this test injects: a GPU this machine does not have)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from sentiserve.serve.gpu_metrics import GpuMetrics
from sentiserve.serve.metrics import Metrics


class FakeNvml:
    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's names
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        return f"gpu{index}"

    def nvmlDeviceGetUUID(self, handle: str) -> bytes:  # noqa: N802
        return b"GPU-1234"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(total=16 << 30, used=4 << 30)

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=37)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        return 70_500


def test_gpu_metrics_use_tritons_names() -> None:
    text = Metrics(gpu=GpuMetrics(FakeNvml())).exposition().decode()
    samples = {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("nv_gpu_")
    }
    assert samples["nv_gpu_utilization"] == ({"gpu_uuid": "GPU-1234"}, 0.37)
    assert samples["nv_gpu_memory_total_bytes"][1] == 16 << 30
    assert samples["nv_gpu_memory_used_bytes"][1] == 4 << 30
    assert samples["nv_gpu_power_usage"][1] == 70.5


def test_no_gpu_no_gpu_metrics() -> None:
    metrics = Metrics()
    assert not metrics.gpu.enabled
    assert b"nv_gpu_" not in metrics.exposition()
