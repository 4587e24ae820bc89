"""Training on several processes with the Trainer's own DDP: ``torchrun --nproc-per-node 2
-m sentiserve train`` on the tiny model, two CPU processes (gloo), as on several GPUs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from sentiserve.data import load_corpus


def test_torchrun_trains_on_two_processes(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "model"
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "sentiserve",
            "train",
            "--data",
            str(toy_csv),
            "--base-model",
            str(tiny_bert),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--max-length",
            "64",
            "--learning-rate",
            "3e-3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("saved to") == 1, "only the first process reports"
    metrics = json.loads((out / "metrics.json").read_text())
    train_rows = len(load_corpus(str(toy_csv)).train)
    # Two processes of 8 each take 16 examples per step: half the steps of one process.
    assert metrics["steps"] == math.ceil(train_rows / 16)
    assert metrics["test"]["n"] == len(load_corpus(str(toy_csv)).test)
    assert (out / "model.safetensors").exists()
    assert (out / "tokenizer.json").exists()
