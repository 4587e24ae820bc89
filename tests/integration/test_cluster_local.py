"""Scale-out rehearsal: replicas behind a real HAProxy; one is killed under load. Nothing
the balancer accepted is lost beyond what was in flight on the killed replica (the balancer
retries those elsewhere), and traffic goes on."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from sentiserve.local.cluster import LocalCluster
from sentiserve.local.ready import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy missing (Debian package haproxy)"
)

CLIENTS = 6


@pytest.mark.timeout(180)
def test_killing_a_replica_under_load_loses_nothing(tiny_build: Path) -> None:
    cluster = LocalCluster(
        str(tiny_build / "model_repository"), replicas=3, port=free_port(), extra=("--threads", "1")
    ).start()
    outcomes: list[tuple[float, int]] = []  # (time, status; 0 = no answer)
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=cluster.url, timeout=15) as http:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"text": f"client {k} review {n}, quite good"}
                try:
                    status = http.post("/v1/sentiment", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                outcomes.append((time.monotonic(), status))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    start = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        time.sleep(4)
        killed_at = time.monotonic()
        cluster.kill(0)
        time.sleep(6)
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
        cluster.stop()
    failures = [(t - start, s) for t, s in outcomes if s != 200]
    assert len(failures) <= CLIENTS, f"more failures than requests in flight: {failures}"
    before = sum(1 for t, s in outcomes if s == 200 and killed_at - 3 <= t < killed_at) / 3
    after = sum(1 for t, s in outcomes if s == 200 and t >= killed_at + 3) / 3
    assert after >= 0.4 * before, f"throughput {before:.0f}/s before the kill, {after:.0f}/s after"
    late = [f for f in failures if f[0] > killed_at - start + 2]
    assert not late, f"failures after the balancer should have noticed: {late}"
