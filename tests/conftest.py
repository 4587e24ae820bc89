"""Shared fixtures: a tiny randomly initialised BERT with its own tokenizer, and toy data."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

POSITIVE_WORDS = ["good", "great", "wonderful", "moving", "brilliant", "fun", "charming", "love"]
NEGATIVE_WORDS = ["bad", "awful", "boring", "dull", "terrible", "mess", "tedious", "hate"]
FILLER = [
    "the",
    "film",
    "movie",
    "was",
    "a",
    "and",
    "plot",
    "acting",
    "story",
    "really",
    "it",
    "this",
    "of",
    "with",
    "script",
    "cast",
    "ending",
    "quite",
    "so",
    "very",
]


def toy_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Reviews whose label is decided by their sentiment words, of varied lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
        length = rng.randint(3, 40)
        tokens = [rng.choice(FILLER) for _ in range(length)]
        for _ in range(max(1, length // 6)):
            tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(words))
        rows.append((" ".join(tokens), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT classifier with a word-level WordPiece vocabulary."""
    from sentiserve.train.tiny import tiny_bert

    words = sorted(set(POSITIVE_WORDS + NEGATIVE_WORDS + FILLER))
    tiny_bert(folder, words, {0: "negative", 1: "positive"})
    (folder / "README.txt").write_text(json.dumps({"what": "tiny random BERT for tests"}))
    return folder


SHARED = "SENTISERVE_TEST_SHARED"
"""A folder for what the whole test run builds once: `make test` sets it for its two pytest
runs (parallel, then serial); without it, the run's own temporary root is used."""


def shared(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """``name`` under the shared folder, made by ``make`` once per test run: the first pytest
    worker (or run) to ask builds it under a lock, the others wait and reuse it. A build that
    fails leaves no marker, so the next one starts again from an empty folder."""
    root = Path(os.environ[SHARED]) if os.environ.get(SHARED) else _run_root(factory)
    root.mkdir(parents=True, exist_ok=True)
    target, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            make(target)
            done.touch()
    return target


def _run_root(factory: pytest.TempPathFactory) -> Path:
    """The run's temporary root: one per pytest-xdist run (its workers' roots share a parent),
    the run's own otherwise."""
    base = factory.getbasetemp()
    return base.parent / "shared" if os.environ.get("PYTEST_XDIST_WORKER") else base / "shared"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared(tmp_path_factory, "tiny-bert", build_tiny_bert)


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return (
        shared(
            tmp_path_factory, "toy", lambda folder: write_csv(folder / "toy.csv", toy_texts(600))
        )
        / "toy.csv"
    )


def tiny_build_config(root: Path, tiny_bert: Path, toy_csv: Path) -> Any:
    """The tiny model's build settings, writing into ``root``."""
    from sentiserve.optimize.variants import OptimizeSettings
    from sentiserve.pipeline import BuildConfig
    from sentiserve.train.trainer import TrainConfig

    return BuildConfig(
        data=str(toy_csv),
        work_dir=root / "build",
        repository=root / "model_repository",
        train=TrainConfig(
            base_model=str(tiny_bert), epochs=3, batch_size=16, learning_rate=3e-3, max_length=64
        ),
        optimize=OptimizeSettings(
            invariance_texts=40,
            throughput_texts=64,
            calibration_texts=60,
            threads=1,
            variants=("fp32", "int8", "int8_dynamic"),
        ),
    )


@pytest.fixture(scope="session")
def tiny_build(tiny_bert: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete build folder and model repository from the tiny model on toy data."""
    from sentiserve.pipeline import build

    return shared(
        tmp_path_factory,
        "tiny-build",
        lambda root: build(tiny_build_config(root, tiny_bert, toy_csv)),
    )


FIRST = (
    "tests/e2e/",
    "tests/deploy/test_containers.py",
    "tests/integration/test_import.py",
    "tests/integration/test_triton.py",
    "tests/integration/test_pipeline.py",
    "tests/integration/test_gpu_run.py",
    "tests/integration/test_score.py",
    "tests/integration/test_fuzz.py",
    "tests/integration/test_s3.py",
)
"""The modules that took over 25 s each on the 2-core machine, longest first: a parallel run
hands modules out in collection order, so these start first and the run does not end on one
of them while the other workers idle (measured before: test_triton.py started last and ran
42 s after the others had stopped). The pass is CPU-bound, so this evens the workers' ends
rather than shortening the pass much."""

ONE_WORKER = {
    "tests/deploy/test_containers.py": "docker",
    "tests/deploy/test_stack.py": "docker",
}
"""Modules that must share a worker: both start and stop the private Docker daemon."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (the order a parallel run hands modules out in)."""
    items.sort(key=lambda item: rank(item.nodeid))


def rank(nodeid: str) -> int:
    """Its place in FIRST, or after all of them."""
    return next((k for k, prefix in enumerate(FIRST) if nodeid.startswith(prefix)), len(FIRST))


def scope(nodeid: str) -> str:
    """What a parallel run keeps on one worker: a test's module (its module fixtures, servers
    and Triton, start once), or the group in ONE_WORKER."""
    module = nodeid.split("::", 1)[0]
    return ONE_WORKER.get(module, module)


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist is a dev dependency; without it, tests run in one process
    pass
else:

    class ModuleScheduling(LoadScopeScheduling):
        """pytest-xdist's scope scheduling by :func:`scope`, in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return scope(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleScheduling:
        config.option.loadscopereorder = False
        return ModuleScheduling(config, log)
