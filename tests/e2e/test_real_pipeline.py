"""The real path: MiniLM on real rt reviews through `sentiserve build`, with a small step
budget and the model and its engines checked on the first 300 held-out reviews, then
`sentiserve evaluate --json` on the served form over the same reviews."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HELD_OUT = 300
MAJORITY_BASELINE = 162 / HELD_OUT
"""Share of the larger class (positive) in the first 300 rt held-out reviews (1150 / 2000
in the whole split)."""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sentiserve", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )


def test_real_build_beats_the_majority_class(tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    proc = run(
        "build",
        "--work-dir",
        str(tmp_path / "build"),
        "--model-repository",
        str(repo),
        "--max-steps",
        "50",
        "--learning-rate",
        "2e-4",
        "--batch-size",
        "16",
        "--held-out-limit",
        str(HELD_OUT),
        "--variants",
        "fp32,int8",  # the two the CPU serves (tests/integration/test_pipeline.py builds all)
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["version"] == 1
    assert summary["default_engine"]["cpu"] in {"fp32", "int8"}

    manifest = json.loads((repo / "sentiment" / "1" / "manifest.json").read_text())
    assert manifest["provenance"]["dataset"] == "rt"
    assert manifest["provenance"]["base_model"] == "minilm"
    for variant in ("fp32", "int8"):
        assert manifest["evaluation"][variant]["max_batch_delta"] <= 1e-4
    assert manifest["evaluation"]["int8"]["agreement"] > 0.95
    assert manifest["evaluation"]["pytorch"]["n"] == HELD_OUT  # the engines' texts

    proc = run(
        "evaluate",
        "--model-repository",
        str(repo),
        "--data",
        "rt",
        "--limit",
        str(HELD_OUT),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["n"] == HELD_OUT
    engine = summary["default_engine"]["cpu"]
    assert result["engine"] == engine
    assert result["accuracy"] == pytest.approx(manifest["evaluation"][engine]["accuracy"])
    assert result["accuracy"] > MAJORITY_BASELINE + 0.1
