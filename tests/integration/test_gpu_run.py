"""The prepared GPU run, rehearsed on the CPU (``benchmarks/gpu_run.sh`` with SMOKE=1): every
step runs and reports (on a tiny BERT), so a run on a GPU machine does not fail on a typo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_run.sh"


def test_the_gpu_run_rehearses_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "RESULTS-gpu.md").read_text()
    for section in ("## Doctor", "## Engines", "## Serving on the device", "## Fine-tuning"):
        assert section in report
    assert "Traceback" not in report, report[-3000:]
    assert "| sentiserve torch fp32 | 1 | 16 |" in report
    assert "ms/step" in report
    assert "| 1 | 1 |" in report, "the serving table has its 1-client row"
