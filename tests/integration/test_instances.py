"""Engine instances with the real ONNX Runtime engine on the tiny model: several instances
(and the solo session) answer exactly what one instance answers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentiserve.engine.instances import InstanceConfig
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.plane import Limits
from sentiserve.serve.plane.embedded import EmbeddedPlane
from sentiserve.serve.registry import Registry
from tests.conftest import toy_texts


async def classify_all(repo: Path, instances: InstanceConfig, texts: list[str]) -> np.ndarray:
    registry = Registry(repo, BatchingConfig(), instances=instances)
    registry.load_all()
    plane = EmbeddedPlane(registry, Metrics(), Limits())
    try:
        # Concurrent single-text requests: batches of every size form, on every instance.
        results = await asyncio.gather(*(plane.classify("sentiment", [t]) for t in texts))
        return np.concatenate([r.probabilities for r in results])
    finally:
        await plane.close()


async def test_several_instances_answer_what_one_instance_answers(tiny_build: Path) -> None:
    repo = tiny_build / "model_repository"
    texts = [text for text, _ in toy_texts(200, seed=3)]
    one = await classify_all(repo, InstanceConfig(count=1, threads=1, solo_threads=0), texts)
    many = await classify_all(repo, InstanceConfig(count=3, threads=1, solo_threads=2), texts)
    assert one.shape == (200, 2)
    assert np.abs(one - many).max() <= 1e-6
    assert (one.argmax(axis=1) == many.argmax(axis=1)).all()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "--instances=0",
            "Invalid value for '--instances': Input should be greater than or equal to 1",
        ),
        ("--intra-op-threads=0", "Invalid value for '--intra-op-threads' / '--threads'"),
    ],
)
def test_zero_instances_or_threads_is_a_clear_error(
    tiny_build: Path, flag: str, message: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "serve",
            "--model-repository",
            str(tiny_build / "model_repository"),
            flag,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
