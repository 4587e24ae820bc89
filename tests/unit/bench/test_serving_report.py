"""benchmarks/serving_report.py: the goals are judged against the best peer that answered
every request, errors and failed peers show in the tables, and the report renders."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.benchmarks import load


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load("serving_report.py")


def row(clients: int, throughput: float, p50: float, p99: float, errors: int = 0) -> dict[str, Any]:
    return {
        "concurrency": clients,
        "throughput": throughput,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "client": "wrk",
    }


def server(*rows: dict[str, Any], memory: float = 300) -> dict[str, Any]:
    return {
        "ready_s": 1.0,
        "memory_mb": {"VmRSS": memory, "VmHWM": memory},
        "results": {"wrk": list(rows)},
        "protocol": "v1",
    }


def a_run() -> dict[str, Any]:
    rt = {
        "description": "rt held-out reviews",
        "synthetic": False,
        "ceiling": {
            "sorted32_seq_s": 500.0,
            "one_session_seq_s": 480.0,
            "per_core_seq_s": 500.0,
            "batch1_p50_ms": 2.0,
            "cores": 2,
            "mean_tokens": 27,
            "texts": 2000,
        },
        "sentiserve": server(
            row(1, 400, 2.4, 4.0), row(32, 450, 50, 80), row(256, 460, 400, 600), memory=350
        ),
        "plain, 1 thread": server(row(1, 300, 3.0, 6.0), row(32, 300, 90, 100)),
        "sentiserve (v2 gRPC)": {
            "ready_s": 1.0,
            "memory_mb": {"VmHWM": 340},
            "results": {
                "bench": [
                    {
                        **row(32, 420, 60, 90),
                        "client": "sentiserve bench (grpc.aio)",
                        "server_batch_size": 6.0,
                        "server_queue_us": 20000,
                        "server_compute_us": 21000,
                    }
                ]
            },
        },
        # More throughput than sentiserve at 32 clients, but it failed requests: not the best.
        "litserve": server(row(1, 100, 2.0, 12.0), row(32, 900, 30, 60, errors=5)),
        "bentoml": server(row(1, 200, 5.0, 9.0), row(32, 360, 80, 120)),
        "infinity": {"error": "Traceback ...\nImportError: no optimum", "protocol": "v1"},
    }
    return {
        "meta": {},
        "tuning": {
            "litserve": {
                "tried": [
                    {"setting": {"workers": 2}, **row(32, 900, 30, 60, errors=5)},
                    {"setting": {"workers": 1}, "error": "exited:\nboom | here"},
                ],
                "best": {"workers": 2},
            },
            "infinity": {"error": "line one\nline | two"},
        },
        "rt": rt,
    }


def test_the_best_peer_is_the_fastest_without_errors(report: ModuleType) -> None:
    run = a_run()
    assert report.best_rival(run, "rt", 32) == "bentoml"
    assert report.lowest_rival_p50(run, "rt") == 2.0  # litserve's, errors at 32 or not


def test_goals_compare_with_that_peer(report: ModuleType) -> None:
    goals = {name: (measured, met) for name, measured, _, met in report.goals([a_run()])}
    assert goals["rt, 32 clients: sentiserve / best peer throughput (bentoml)"] == ("1.25", True)
    assert goals["rt, 32 clients: sentiserve p99 / that peer's p99"] == ("0.67", True)
    assert goals["rt, 1 client: sentiserve p50 − best peer p50 (ms)"] == ("0.40", False)
    assert goals["rt, 32 clients: sentiserve / engine ceiling throughput"] == ("0.90", True)
    assert goals["rt, 256 clients: sentiserve throughput / its own at 32"] == ("1.02", True)
    assert goals["sentiserve peak resident memory, rt (MB)"] == ("350", True)
    assert goals["long, 32 clients: sentiserve / engine ceiling throughput"][1] is None


def test_tables_show_errors_and_failures_on_one_line(report: ModuleType) -> None:
    text = report.markdown(
        [a_run(), a_run()],
        info={"cpu": "cpu", "cores": 2, "platform": "linux"},
        versions={"python": "3.11"},
        duration_s=10,
        warmup_s=2,
        plot_name="RESULTS-serving.png",
    )
    lines = text.splitlines()
    litserve = next(line for line in lines if line.startswith("| litserve | 100.0"))
    assert "**5 errors**" in litserve
    assert "| sentiserve | 400.0 · 4.0 | 450.0 · 80.0 | 460.0 · 600.0 |" in lines
    assert "| server | 1 client | 32 clients | 256 clients |" in lines
    tuning = next(line for line in lines if line.startswith("| litserve | workers 2"))
    assert "did not start (exited: boom / here)" in tuning
    assert "| infinity | could not run: line one line / two | - |" in lines
    assert any(
        line.startswith("- infinity: could not run: Traceback ... ImportError") for line in lines
    )
    assert (
        "| sentiserve (v2 gRPC) | sentiserve bench (grpc.aio) | 32 | 420.0 | 60.00 | 90.0 | 0 "
        "| 6.0 | 20000 | 21000 |"
    ) in lines
    assert "![throughput and p99 against clients](RESULTS-serving.png)" in lines


def test_the_plot_is_written(report: ModuleType, tmp_path: Path) -> None:
    picture = tmp_path / "curves.png"
    report.plot([a_run()], picture)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
