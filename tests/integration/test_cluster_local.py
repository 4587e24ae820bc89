"""Scale-out rehearsal: replicas behind a real HAProxy; one is killed under load. Nothing
the balancer accepted is lost beyond what was in flight on the killed replica (the balancer
retries those elsewhere), and traffic goes on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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


@pytest.mark.timeout(120)
def test_the_command_serves_until_sigterm_and_leaves_nothing_running(tiny_build: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "cluster-local",
            "--replicas",
            "1",
            "--port",
            str(port),
            "--model-repository",
            str(tiny_build / "model_repository"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()  # the command's first line says where it listens
        assert f"127.0.0.1:{port}/v1/sentiment" in ready, ready + proc.stderr.read()
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/sentiment", json={"text": "good"})
        assert answer.status_code == 200
        assert answer.json()["results"][0]["label"] in {"negative", "positive"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # stopping takes well under a second
        left = subprocess.run(
            ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True, check=False
        )
        assert left.stdout.strip() == "", f"left running: {left.stdout}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
