"""The load generator's parts: texts, percentiles, the metrics reader, the report files."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiserve.bench.loadgen import Sample
from sentiserve.bench.report import BenchReport, percentile, summarize, write_outputs
from sentiserve.bench.servermetrics import difference, parse_totals
from sentiserve.bench.texts import LONG_WORDS, compose_long, file_texts
from sentiserve.cli import build_app
from sentiserve.errors import DataError

METRICS = """\
# HELP nv_inference_request_success Successful inference requests.
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="sentiment",version="2"} 10
nv_inference_request_success{model="other",version="1"} 99
nv_inference_count{model="sentiment",version="2"} 12
nv_inference_exec_count{model="sentiment",version="2"} 4
nv_inference_queue_duration_us{model="sentiment",version="2"} 5000
nv_inference_compute_infer_duration_us{model="sentiment",version="2"} 20000
nv_inference_compute_input_duration_us{model="sentiment",version="2"} 1000
nv_inference_request_failure{model="sentiment",version="2",reason="REJECTED"} 3
"""


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_metrics_are_summed_per_model_and_differenced() -> None:
    after = parse_totals(METRICS, "sentiment")
    assert after["nv_inference_request_success"] == 10, "other models are left out"
    assert parse_totals(METRICS)["nv_inference_request_success"] == 109
    before = dict.fromkeys(after, 0.0)
    view = difference(before, after)
    assert view.requests == 10
    assert view.queue_us == 500
    assert view.compute_us == 2100, "input + infer + output, per request"
    assert view.batch_size == 3
    idle = difference(after, after)
    assert idle.queue_us is None, "no requests: nothing to divide"
    assert idle.batch_size is None


def test_long_texts_are_deterministic_and_in_range() -> None:
    source = tuple(f"Sentence number {i} is about a film. It was fine!" for i in range(50))
    first = compose_long(source, count=20, seed=3)
    assert first == compose_long(source, count=20, seed=3)
    assert first != compose_long(source, count=20, seed=4)
    for text in first:
        assert LONG_WORDS[0] <= len(text.split()) <= LONG_WORDS[1] + 12
    with pytest.raises(DataError):
        compose_long(("",), count=1)


def test_text_files(tmp_path: Path) -> None:
    lines = tmp_path / "texts.txt"
    lines.write_text("first review\n\nsecond review\n")
    assert file_texts(lines).texts == ("first review", "second review")
    table = tmp_path / "texts.csv"
    table.write_text('text,label\n"a, b",1\nc,0\n')
    assert file_texts(table).texts == ("a, b", "c")
    rows = tmp_path / "texts.jsonl"
    rows.write_text('{"text": "x"}\n{"text": "y"}\n')
    assert file_texts(rows).texts == ("x", "y")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("none.csv", "review,label\nx,1\n", "no 'text' column"),
        ("bad.jsonl", '{"text": "x"}\n{oops\n', "bad.jsonl:2: invalid JSON"),
        ("kind.jsonl", '{"text": 3}\n', "kind.jsonl:1: expected an object"),
        ("empty.txt", "\n\n", "no texts"),
    ],
)
def test_bad_text_files_name_the_problem(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        file_texts(path)


def test_binary_and_missing_files(tmp_path: Path) -> None:
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        file_texts(binary)
    with pytest.raises(DataError, match="no such file"):
        file_texts(tmp_path / "missing.txt")


def test_summary_and_report_files(tmp_path: Path) -> None:
    sample = Sample(
        latencies_s=[0.01, 0.02, 0.03, 0.04], errors=Counter({"http 503": 2}), window_s=2.0
    )
    row = summarize({"concurrency": 4}, sample, None)
    assert row["throughput"] == 2.0
    assert row["p50_ms"] == pytest.approx(20)
    assert row["max_ms"] == pytest.approx(40)
    assert row["errors"] == 2
    assert row["errors_by_kind"] == {"http 503": 2}
    empty = summarize({"concurrency": 8}, Sample(window_s=1.0), None)
    report = BenchReport(
        settings={"url": "u", "protocol": "v1", "model": "m", "data": "d"}, results=[row, empty]
    )
    paths = write_outputs(report, tmp_path / "out")
    assert [p.name for p in paths] == ["bench.json", "bench.csv", "bench.png", "bench.html"]
    data = json.loads(paths[0].read_text())
    assert data["results"][1]["p50_ms"] is None, "no successes: null, not NaN"
    with paths[1].open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["concurrency"] for r in table] == ["4", "8"]
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bench.png" in paths[3].read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "at least 1"),
        (["--concurrency", "a,b"], "comma-separated integers"),
        (["--protocol", "soap"], "expected one of v1, v2-http, v2-grpc"),
        (["--rate", "-5"], "--rate must be positive"),
        (["--duration-s", "0"], "must be positive"),
    ],
)
def test_bad_arguments_are_one_clear_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(build_app(), ["bench", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.output
