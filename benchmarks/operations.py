"""What operating features cost: throughput and latency at 32 clients with the payload log
off and on (100% sampling, into a folder and into an HTTP CloudEvents sink, one POST per
event as KServe's logger sends them or one per batch with --payload-log-batch), with
OpenTelemetry tracing of every request (OTLP/HTTP to a receiver), with both, and with a
shadow version (a copy of the model getting a copy of every request); with ``--base REV``,
also the server as it was at git revision REV (features off), one
``sentiserve serve`` each (its defaults otherwise), wrk as the client, one rt text per
request through ``/v1/sentiment``, several rounds interleaved so that drift on a shared
machine falls on every setting alike. Targets (median of the rounds): everything off within
2% of REV's throughput; the payload log, tracing, and both at 100%: throughput ≥ 90% of
the run without them; events lost are reported. A shadow
doubles the inference work on the same cores, so at saturation its p99 may rise by the
cost of that extra inference: up to twice the p99 without it.

The HTTP sink is a small receiver on this machine (benchmarks/operations.py --receiver),
so its cost lands on the server's two cores too; in a cluster it runs elsewhere.

Writes its section of benchmarks/RESULTS-serving.md (between the ``operations`` markers)
and benchmarks/RESULTS-operations.json.

Usage: python benchmarks/operations.py [--model-repository DIR] [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from compare import Peer, sentiserve_cmd, versions  # benchmarks/ is the script's folder
from compat import median, rounds_parser, write_results
from sentiserve import DEFAULT_MODEL
from sentiserve.bench.report import machine
from sentiserve.bench.texts import load_texts
from sentiserve.bench.wrk import run_wrk
from sentiserve.local.ready import free_port, wait_until

HERE = Path(__file__).resolve().parent
START, END = "<!-- operations:start -->", "<!-- operations:end -->"
CLIENTS = 32
TARGET = 0.90
SHADOW = "shadow version (a copy of every request)"
TRACING = "tracing, 100%"
BOTH = "tracing and payload log (HTTP sink), 100%"
BOTH_BATCHED = "tracing and payload log (HTTP sink batched), 100%"
BASE_TARGET = 0.98
SHADOW_VERSION = 1000


def receiver(port: int) -> None:
    """A CloudEvents sink that accepts every POST (aiohttp, one process): ``--receiver``."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", accept)
    app.router.add_get("/", lambda _r: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def counters(peer: Peer, prefix: str = "sentiserve_payload_events_") -> dict[str, float]:
    """The server's series whose names start with ``prefix`` (by default the payload log's:
    sent, dropped by reason), from its metrics page."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{peer.metrics}/metrics").read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name.replace(prefix, "")] = float(value)
    return out


def settled(peer: Peer) -> dict[str, float]:
    """The payload counters once the log has shipped what the run queued (they stop
    moving), at most 30 s after the load ends."""
    last: dict[str, float] = {}
    for _ in range(10):
        now = counters(peer)
        if now and now == last:
            break
        last = now
        time.sleep(3)  # longer than the log's 2 s flush: a partial batch has gone out
    return last


def cpu_seconds(pid: int, thread: str | None = None) -> float:
    """User + system CPU time so far (Linux /proc) of process ``pid``, or of its threads
    named ``thread``."""
    stats = (
        [Path(f"/proc/{pid}/stat")]
        if thread is None
        else [
            t / "stat"
            for t in Path(f"/proc/{pid}/task").iterdir()
            if (t / "comm").read_text().strip() == thread
        ]
    )
    ticks = 0
    for stat in stats:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    texts = load_texts("rt")
    repo = Path(args.model_repository)
    port = free_port()
    sink = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), 30)
    shadowed, first = shadow_repository(repo, Path(tempfile.mkdtemp(prefix="sentiserve-")))
    rollout = [f"--version-policy=specific:{first},{SHADOW_VERSION}", f"--split={first}=1"]
    settings: dict[str, tuple[Path, list[str]]] = {
        "off": (repo, []),
        "payload log, folder, 100%": (repo, ["--payload-log", "{folder}"]),
        "payload log, HTTP sink, 100%": (
            repo,
            ["--payload-log", f"http://127.0.0.1:{port}/events"],
        ),
        "payload log, HTTP sink batched, 100%": (
            repo,
            ["--payload-log", f"http://127.0.0.1:{port}/events", "--payload-log-batch"],
        ),
        TRACING: (repo, ["--otlp-endpoint", f"http://127.0.0.1:{port}"]),
        BOTH: (
            repo,
            ["--otlp-endpoint", f"http://127.0.0.1:{port}"]
            + ["--payload-log", f"http://127.0.0.1:{port}/events"],
        ),
        BOTH_BATCHED: (
            repo,
            ["--otlp-endpoint", f"http://127.0.0.1:{port}"]
            + ["--payload-log", f"http://127.0.0.1:{port}/events", "--payload-log-batch"],
        ),
        SHADOW: (shadowed, [*rollout, f"--shadow={SHADOW_VERSION}"]),
    }
    base = None
    if args.base:
        base = Path(tempfile.mkdtemp(prefix="sentiserve-base-")) / "tree"
        subprocess.run(["git", "worktree", "add", "-f", str(base), args.base], check=True)
        settings = {f"before ({args.base}), all off": (repo, ["{base}"]), **settings}
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        settings = {
            k: v for k, v in settings.items() if k == "off" or any(k.startswith(w) for w in wanted)
        }
    # The receiver takes OTLP over HTTP (it accepts every POST).
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    try:
        for k in range(args.rounds):
            for name, (served, extra) in settings.items():
                print(f"round {k + 1}: {name}", file=sys.stderr)
                with tempfile.TemporaryDirectory(prefix="sentiserve-payloads-") as folder:
                    cmd = sentiserve_cmd(
                        served, *[e.replace("{folder}", folder) for e in extra if e != "{base}"]
                    )
                    if "{base}" in extra:  # that revision's package first on the path
                        cmd = ["env", f"PYTHONPATH={base}/src", *cmd]
                    peer = Peer(cmd)
                    try:
                        sink_cpu = cpu_seconds(sink.pid)
                        log_cpu = cpu_seconds(peer.proc.pid, "payload-log")
                        server_cpu = cpu_seconds(peer.proc.pid)
                        served = answered(peer)
                        (row,) = run_wrk(
                            peer.url,
                            "v1",
                            texts.texts,
                            [CLIENTS],
                            duration_s=args.duration,
                            warmup_s=args.warmup,
                        )
                        result = row.as_dict()
                        # CPU per request of the whole server (every thread): less moved
                        # by a noisy neighbour than throughput.
                        result["cpu_ms"] = (
                            1000
                            * (cpu_seconds(peer.proc.pid) - server_cpu)
                            / max(answered(peer) - served, 1)
                        )
                        # The receiver's share of one core over the run (load and warm-up).
                        seconds = args.duration + args.warmup
                        result["sink_cpu"] = (cpu_seconds(sink.pid) - sink_cpu) / seconds
                        # The server's payload-log thread (building and shipping events).
                        result["log_cpu"] = (
                            cpu_seconds(peer.proc.pid, "payload-log") - log_cpu
                        ) / seconds
                        if "--payload-log" in extra:
                            result["payload_events"] = settled(peer)
                        if name == SHADOW:
                            time.sleep(2)  # the last copies finish
                            result["shadow"] = shadow_copies(peer)
                    finally:
                        peer.stop()
                rounds[name].append(result)
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(shadowed.parent, ignore_errors=True)
        if base is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], check=False)
    return {"machine": machine(), "versions": versions(), "texts": texts.description, **rounds}


def answered(peer: Peer) -> float:
    """Requests the server answered so far (Triton's success counter; not the shadow's)."""
    found = counters(peer, "nv_inference_request_success{")
    return sum(v for k, v in found.items() if f'version="{SHADOW_VERSION}"' not in k)


def shadow_copies(peer: Peer) -> dict[str, float]:
    """Texts the shadow answered, and requests not copied (busy: too many in flight)."""
    answered = counters(peer, "sentiserve_shadow_predictions_total")
    skipped = counters(peer, "sentiserve_shadow_requests_skipped_total")
    return {"answered": sum(answered.values()), "skipped": sum(skipped.values())}


def shadow_repository(repo: Path, folder: Path) -> tuple[Path, int]:
    """A copy of ``repo`` whose default model has a version ``SHADOW_VERSION`` identical to
    its newest one (returned with the copy)."""
    target = folder / "repo"
    shutil.copytree(repo, target)
    model = target / DEFAULT_MODEL
    newest = max(int(p.name) for p in model.iterdir() if p.name.isdigit())
    copy = model / str(SHADOW_VERSION)
    shutil.copytree(model / str(newest), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": SHADOW_VERSION}))
    return target, newest


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except OSError:
        return False
    return True


def section(doc: dict[str, Any], args: argparse.Namespace, names: list[str]) -> str:
    base = median(doc["off"], "throughput")
    m = doc["machine"]
    lines = [
        START,
        "## Operating features (benchmarks/operations.py)",
        "",
        f"One `sentiserve serve` per setting (defaults otherwise), wrk at {CLIENTS} clients, "
        f"one {doc['texts']} text per request to `/v1/sentiment`, {args.rounds} rounds of "
        f"{args.duration:g} s per setting, interleaved; {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores. Targets: with the payload log, tracing, or both on at "
        f"100% sampling, throughput ≥ {TARGET:.0%} of the run without them; everything off "
        f"within {1 - BASE_TARGET:.0%} of the earlier revision's (when one is run); a shadow "
        "version's p99 at most twice the p99 without it. The HTTP sink (payload events and "
        "OTLP/HTTP spans) is an aiohttp receiver on the same two cores.",
        "",
        "| setting | req/s (median; each round) | p50 ms | p99 ms | / off | server CPU ms per "
        "request | events sent (all rounds) | dropped | log thread CPU (cores) | receiver CPU "
        "(cores) | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for name in names:
        rows = doc[name]
        rate = median(rows, "throughput")
        each = ", ".join(f"{r['throughput']:.0f}" for r in rows)
        ratio = rate / base if base else float("nan")
        events = [r.get("payload_events", {}) for r in rows]
        sent = sum(e.get("sent_total", 0) for e in events)
        lost = sum(v for e in events for k, v in e.items() if k.startswith("dropped_total"))
        logged = any(events)
        met = "" if name == "off" else ("yes" if ratio >= TARGET else "no")
        if name.startswith("before"):
            met = ""
        before = [k for k in doc if k.startswith("before")]
        if name == "off" and before:  # against the earlier revision: within 2%
            then = median(doc[before[0]], "throughput")
            met = "yes" if rate >= BASE_TARGET * then else "no"
            notes.append(
                f"Everything off: {rate:.0f} req/s against {then:.0f} for {before[0]} "
                f"({rate / then:.3f}; target ≥ {BASE_TARGET})."
            )
        if name == SHADOW:  # twice the inference work: p99 within twice the one without
            p99 = median(rows, "p99_ms")
            met = "yes" if p99 <= 2 * median(doc["off"], "p99_ms") else "no"
            answered = sum(r["shadow"]["answered"] for r in rows)
            skipped = sum(r["shadow"]["skipped"] for r in rows)
            notes.append(
                f"Shadow: {answered:.0f} texts answered by the shadow version over the rounds, "
                f"{skipped:.0f} requests not copied (busy); p99 {p99:.1f} ms against "
                f"{median(doc['off'], 'p99_ms'):.1f} ms without a shadow (target: at most 2x)."
            )
        lines.append(
            f"| {name} | {rate:.0f} ({each}) | {median(rows, 'p50_ms'):.1f} | "
            f"{median(rows, 'p99_ms'):.1f} | {ratio:.3f} | {median(rows, 'cpu_ms'):.2f} | "
            f"{f'{sent:.0f}' if logged else ''} | "
            f"{f'{lost:.0f}' if logged else ''} | "
            f"{median(rows, 'log_cpu'):.2f} | {median(rows, 'sink_cpu'):.2f} | {met} |"
        )
    lines += ["", *notes, "", "Command: `python benchmarks/operations.py`.", END]
    return "\n".join(lines)


def main() -> None:
    parser = rounds_parser(__doc__)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--only", help="Run these settings (comma-separated name prefixes) beside off only."
    )
    parser.add_argument(
        "--base", help="Also run the server of this git revision (features off), for comparison."
    )
    args = parser.parse_args()
    if args.receiver:
        receiver(args.receiver)
        return
    os.environ.setdefault("SENTISERVE_LOG_LEVEL", "WARNING")
    doc = measure(args)
    names = [k for k in doc if k not in ("machine", "versions", "texts")]
    text = section(doc, args, names)
    write_results(doc, HERE / "RESULTS-operations.json", Path(args.out), text, START, END)


if __name__ == "__main__":
    main()
