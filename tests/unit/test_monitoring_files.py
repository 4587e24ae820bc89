"""The monitoring files: rules checked and unit-tested by promtool, and every query in the
rules and the dashboard names only metrics the server exports or the rules record."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentiserve.serve.batcher import BatchStats
from sentiserve.serve.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "sentiserve.rules.yml"
DASHBOARD = MONITORING / "dashboards" / "sentiserve.json"
TRITON_ONLY = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}
"""Triton's GPU metrics: exported by Triton on GPU nodes, never by the embedded server."""

PROMQL_WORDS = {
    "or",
    "and",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "bool",
    "offset",
    "group_left",
    "group_right",
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing (Debian package prometheus)"
)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, groupings and strings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    tokens = re.findall(r"(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()", expr)
    return {t for t in tokens if t not in PROMQL_WORDS}


def exported_names() -> set[str]:
    """Every sample name the server's metrics page can show, from a real Metrics object."""
    metrics = Metrics()
    metrics.backend_ready()  # a gateway's
    key = ("sentiment", "1")
    metrics.request_success.inc(key)
    metrics.request_failure.inc((*key, "REJECTED"))
    metrics.inference_count.inc(key)
    metrics.pending.inc(key)
    metrics.request_duration.inc(key, 5)
    metrics.request_latency.labels(*key).observe(0.01)
    metrics.overload_rejected.inc()
    metrics.record_batch("sentiment", 1, BatchStats(1, 8, 8, [0.001], 0.001, 0.002, 0.001))
    metrics.record_predictions("sentiment", 1, ["positive"], [0.9], [12], truncated=1)
    metrics.set_reference(
        "sentiment", 1, {"label_shares": {"positive": 0.5}, "input_tokens": {"p50": 20.0}}
    )
    names = set()
    for line in metrics.exposition().decode().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def rules() -> list[dict[str, str]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def test_every_query_names_known_metrics() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    known = exported_names() | recorded | TRITON_ONLY | {"up", "ALERTS"}
    for expr in [r["expr"] for r in rules()] + dashboard_exprs():
        unknown = metric_names(expr) - known
        assert not unknown, f"{expr!r} names {unknown}, which nothing exports or records"


def test_the_name_extractor_sees_what_it_should() -> None:
    assert metric_names('sum by (model, le) (rate(a_bucket{job=~"x|y"}[5m])) / b') == {
        "a_bucket",
        "b",
    }


def test_dashboard_is_generated_and_complete() -> None:
    sys.path.insert(0, str(MONITORING / "dashboards"))
    try:
        import build  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == build.render(), "run deploy/monitoring/dashboards/build.py"
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for topic in ("throughput", "latency", "queue", "batch", "errors", "replicas", "gpu"):
        assert topic in titles


def test_alerts_have_summary_description_and_runbook() -> None:
    docs = (ROOT / "docs" / "monitoring.md").read_text().lower()
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) >= 5
    for alert in alerts:
        notes = alert["annotations"]  # type: ignore[index]
        assert {"summary", "description", "runbook_url"} <= set(notes)
        anchor = notes["runbook_url"].split("#")[1]  # type: ignore[index]
        assert f"### {alert['alert'].lower()}" in docs, f"{anchor}: no section in the runbook"


@needs_promtool
def test_promtool_checks_and_unit_tests_pass() -> None:
    unit_tests = MONITORING / "tests" / "sentiserve.rules.test.yml"
    for args in (
        ["check", "rules", str(RULES)],
        ["check", "config", str(MONITORING / "prometheus.yml")],
        ["test", "rules", str(unit_tests)],
    ):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
