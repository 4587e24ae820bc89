"""benchmarks/batching.py: its closed-loop simulation cuts batches as the server does (the
cutter's limits in every batch, every text sent once), and its report section replaces only
its own part of RESULTS-serving.md."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sentiserve.repository.layout import ModelRepository
from sentiserve.repository.served import open_model
from sentiserve.serve.batcher import BatchingConfig
from tests.benchmarks import load


@pytest.fixture(scope="module")
def batching() -> ModuleType:
    return load("batching.py")


class Recording:
    """The real engine, with each call's shape and real lengths written down."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[tuple[int, int, list[int]]] = []

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        lengths = [int(n) for n in attention_mask.sum(axis=1)]
        self.calls.append((len(input_ids), int(input_ids.shape[1]), lengths))
        return np.asarray(self.engine.infer(input_ids, attention_mask))


@pytest.fixture(scope="module")
def model(tiny_build: Path) -> Any:
    return open_model(ModelRepository(tiny_build / "model_repository").load("sentiment"), threads=1)


def texts(model: Any, words: list[int]) -> list[list[int]]:
    """Token ids of texts of ``words`` words each (the tiny model's vocabulary)."""
    return model.tokenizer.encode([" ".join(["good"] * n) for n in words])


def test_the_closed_loop_sends_every_text_once_within_the_cutters_limits(
    batching: ModuleType, model: Any
) -> None:
    rng = np.random.default_rng(0)
    encoded = texts(model, [int(n) for n in rng.integers(2, 60, size=300)])
    config = BatchingConfig()
    engines = [Recording(model.engine), Recording(model.engine)]
    run = batching.closed_loop(engines, model.tokenizer.pad, encoded, config)
    calls = [c for e in engines for c in e.calls]
    assert run.texts == len(encoded) == sum(size for size, _, _ in calls)
    assert run.calls == len(calls)
    assert all(e.calls for e in engines), "both instances must have run batches"
    for size, width, lengths in calls:
        assert size <= config.max_batch_size
        assert size == 1 or size * width <= config.max_batch_tokens
        assert width == max(lengths)
        assert size * width - sum(lengths) <= config.max_padding_tokens * size
    # Never more than the clients' texts wait, so no batch is larger than 32.
    assert max(size for size, _, _ in calls) <= batching.CLIENTS
    assert sorted(n for _, _, lengths in calls for n in lengths) == sorted(map(len, encoded))
    # Every text but the first and last 32 has its latency, and none is negative.
    assert len(run.latencies_ms) == len(encoded) - 2 * batching.CLIENTS
    assert min(run.latencies_ms) > 0
    assert run.latency(50) <= run.latency(99) <= max(run.latencies_ms)


def test_the_window_keeps_batches_among_the_oldest_texts(batching: ModuleType, model: Any) -> None:
    """With --batch-window 4 a batch is cut from the four oldest waiting texts, so no batch
    holds more than four, where the whole queue groups many texts of one length."""
    encoded = texts(model, [8, 40] * 64)
    windowed, whole = Recording(model.engine), Recording(model.engine)
    run = batching.closed_loop(
        [windowed], model.tokenizer.pad, encoded, BatchingConfig(batch_window=4)
    )
    assert run.texts == len(encoded)
    assert max(size for size, _, _ in windowed.calls) <= 4
    batching.closed_loop([whole], model.tokenizer.pad, encoded, BatchingConfig())
    assert max(size for size, _, _ in whole.calls) > 4


def test_one_length_makes_whole_batches_and_grouping_keeps_lengths_apart(
    batching: ModuleType, model: Any
) -> None:
    same = Recording(model.engine)
    batching.closed_loop(
        [same, same], model.tokenizer.pad, texts(model, [12] * 256), BatchingConfig()
    )
    sizes = [size for size, _, _ in same.calls]
    # 32 waiting, two free instances: a fair share of 16 each, then what the answered
    # clients send back while the other call runs.
    assert sizes[0] == 16
    assert sum(sizes) / len(sizes) > 4
    mixed = texts(model, [8, 40] * 128)
    grouped, arrival = Recording(model.engine), Recording(model.engine)
    batching.closed_loop([grouped], model.tokenizer.pad, mixed, BatchingConfig())
    batching.closed_loop(
        [arrival], model.tokenizer.pad, mixed, BatchingConfig(group_by_length=False)
    )

    def padding(calls: list[tuple[int, int, list[int]]]) -> float:
        """Padding tokens per text."""
        return sum(n * w - sum(ls) for n, w, ls in calls) / sum(n for n, _, _ in calls)

    # Grouped: at most 4 padding tokens per text in a batch (a lone 10-token text may join
    # eight of 42); in arrival order every batch mixes them (32 padding per short text).
    assert padding(grouped.calls) <= BatchingConfig().max_padding_tokens
    assert padding(arrival.calls) > 10


def test_its_section_replaces_only_its_own(batching: ModuleType, tmp_path: Path) -> None:
    report = tmp_path / "RESULTS-serving.md"
    report.write_text(
        "# Serving\n\n<!-- compat:start -->\ncompat table\n<!-- compat:end -->\n"
        "\n<!-- batching:start -->\nold batching table\n<!-- batching:end -->\n"
    )
    run = {"texts_s": 100.0, "mean_size": 2.0, "padded_per_text": 30.0}
    run |= {"p50_ms": 80.0, "p99_ms": 160.0}
    ceiling = {"texts_s": 200.0, "mean_size": 32.0, "padded_per_text": 28.0}
    ceiling |= {"p50_ms": None, "p99_ms": None}
    doc = {
        "machine": {"cpu": "test cpu", "cores": 2},
        "texts": "64 rt texts",
        "mean_tokens": 27.0,
        "instances": 2,
        "sessions": 1,
        "rounds": {"one text per call": [run], "ceiling: length-sorted batches": [ceiling]},
    }
    raw = tmp_path / "RESULTS-batching.json"
    batching.write_results(doc, raw, report, batching.section(doc), batching.START, batching.END)
    text = report.read_text()
    assert "compat table" in text
    assert "old batching table" not in text
    assert text.count(batching.START) == 1
    assert text.count("<!-- compat:start -->") == 1
    assert "| one text per call | 2.0 | 30.0 | 100 (100) | 0.50 | 80 / 160 |" in text
    assert "| ceiling: length-sorted batches | 32.0 | 28.0 | 200 (200) | 1.00 |  |" in text
    assert raw.exists()
    assert '"sessions": 1' in raw.read_text()
