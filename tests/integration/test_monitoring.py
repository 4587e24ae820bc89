"""A real Prometheus scraping a running `sentiserve serve`: every query used by the dashboard,
the alerts and the HPA returns data with sane values, and every rule evaluates cleanly."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from sentiserve.local.ready import wait_until
from sentiserve.monitoring import prometheus as monitoring
from tests.integration.serving import Running, free_port, start_server, stop

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "monitoring" / "rules"
DASHBOARD = ROOT / "deploy" / "monitoring" / "dashboards" / "sentiserve.json"
HPA_METRIC = "sentiserve:queue_us_per_request:rate1m"
GPU = re.compile(r"gpu", re.IGNORECASE)

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus missing (Debian package prometheus)"
)


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository")
    yield running
    stop(running)


@pytest.fixture(scope="module")
def prometheus(server: Running, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("prometheus")
    running = monitoring.start(
        [f"127.0.0.1:{server.metrics_port}"],
        workdir,
        port=free_port(),
        rules=RULES_DIR,
        scrape_s=1,
        evaluate_s=1,
    )
    stopping = threading.Event()

    def traffic() -> None:
        """Single and multi-text requests, plus some that fail (unknown model is a 404 that
        never reaches a model; an empty text is a 400 counted as a failure)."""
        with httpx.Client(base_url=server.url, timeout=10) as client:
            k = 0
            while not stopping.is_set():
                k += 1
                client.post("/v1/sentiment", json={"text": f"a fine film number {k}"})
                client.post("/v1/sentiment", json={"texts": ["good", "bad plot " * (k % 9)]})
                if k % 25 == 0:
                    client.post("/v1/sentiment", json={"text": ""})

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    yield running.url
    stopping.set()
    for thread in threads:
        thread.join(10)
    running.stop()


def query(url: str, expr: str) -> list[dict[str, object]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert response["status"] == "success", (expr, response)
    result: list[dict[str, object]] = response["data"]["result"]
    return result


def wait_for(url: str, expr: str, timeout: float = 60) -> list[float]:
    """The values of ``expr`` once it returns some and none is NaN."""
    values: list[float] = []

    def present() -> bool:
        values[:] = [float(s["value"][1]) for s in query(url, expr)]  # type: ignore[index]
        return bool(values) and all(v == v for v in values)

    if not wait_until(present, timeout, interval_s=1):
        raise AssertionError(f"{expr!r} returned no data in {timeout:g} s")
    return values


def top_level_comparison(expr: str) -> int | None:
    """Where the last comparison outside any parentheses or braces starts, if there is one
    (``x > 0.01`` has one; ``(a unless b) or c`` has none, however many it holds inside)."""
    depth, found = 0, None
    for i, char in enumerate(expr):
        depth += char in "({[" and 1 or 0
        depth -= char in ")}]" and 1 or 0
        if depth == 0 and re.match(r"\s(?:>|<|==|>=|<=|!=)\s", expr[i:]):
            found = i
    return found


def alert_subjects() -> list[tuple[str, str]]:
    """Each alert's expression, and what it watches: the expression left of its threshold,
    or, for an alert that is a set of series (no threshold), the whole expression."""
    out = []
    for group in yaml.safe_load((RULES_DIR / "sentiserve.rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and not GPU.search(rule["expr"]):
                expr = " ".join(rule["expr"].split())
                cut = top_level_comparison(expr)
                out.append((expr, expr if cut is None else expr[:cut].strip()))
    return out


def test_dashboard_alert_and_hpa_queries_return_sane_data(prometheus: str) -> None:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    checked = 0
    # Alerts that watch a set of series, or the gateway's Triton: on a healthy embedded server
    # they parse and return nothing (they do not fire).
    quiet = [alert for alert, subject in alert_subjects() if alert == subject]
    quiet += [alert for alert, subject in alert_subjects() if "sentiserve_backend_ready" in subject]
    assert len(quiet) == 2
    wait_for(prometheus, 'up{job="sentiserve"}')  # scraped at least once
    for alert in quiet:
        assert query(prometheus, alert) == [], alert
    watched = [s for a, s in alert_subjects() if a not in quiet]
    for expr in [*exprs, *watched, HPA_METRIC]:
        if GPU.search(expr):
            continue  # Triton's GPU metrics exist only on GPU nodes
        if "overload_rejected" in expr:
            values = wait_for(prometheus, expr)  # present and zero: nothing was refused
            assert values == [0.0]
            continue
        values = wait_for(prometheus, expr)
        assert all(v >= 0 for v in values), (expr, values)
        checked += 1
    assert checked >= 12

    assert min(wait_for(prometheus, "sentiserve:requests:rate1m")) > 1
    assert min(wait_for(prometheus, "sentiserve:batch_size:avg1m")) >= 1
    ratio = wait_for(prometheus, "sentiserve:error_ratio:rate5m")
    assert all(0 < r < 0.2 for r in ratio), f"some requests fail on purpose: {ratio}"
    p50 = wait_for(prometheus, "sentiserve:request_duration_seconds:p50_5m")
    p99 = wait_for(prometheus, "sentiserve:request_duration_seconds:p99_5m")
    assert p99[0] >= p50[0] > 0
    assert min(wait_for(prometheus, "sentiserve:compute_us_per_request:rate1m")) > 0
    hpa = query(prometheus, HPA_METRIC)
    assert hpa[0]["metric"].keys() >= {"instance", "job", "model"}, "the HPA needs the target"  # type: ignore[union-attr]


def test_every_rule_evaluates_cleanly(prometheus: str) -> None:
    wait_for(prometheus, "sentiserve:requests:rate1m")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 18
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    firing = [a["labels"]["alertname"] for a in alerts]
    assert "SentiserveNoReadyTargets" not in firing


def test_the_monitor_command_stops_prometheus_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "monitor",
            "--target",
            "127.0.0.1:9",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()
        assert "prometheus ready" in ready, ready + proc.stderr.read()
        assert httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # stopping takes well under a second
        left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
        assert left.stdout.strip() == "", f"left running: {left.stdout}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
