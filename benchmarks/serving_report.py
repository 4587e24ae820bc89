"""benchmarks/RESULTS-serving.md and its plot from compare.py's runs: the goals with met /
not met, one table per text set and client (req/s and p99 per concurrency level, one row
per server), the peers' settings, start times and memory.

A run is ``{data: section}``; a section maps a server's name to ``{"results": {client:
[row per level]}, "ready_s", "memory_mb", "protocol", "settings"}`` plus ``ceiling``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Run = dict[str, Any]
PLAIN = ("plain, 1 thread", "plain, 2 threads")
FRAMEWORKS = ("litserve", "ray serve", "bentoml", "mlserver (v2)", "infinity")
PEERS = (
    *PLAIN,
    "sentiserve",
    "sentiserve, window 8",
    "sentiserve, grouping off",
    *FRAMEWORKS,
    "naive",
    "triton (v2)",
    "sentiserve (v2)",
    "triton (v2 gRPC)",
    "sentiserve (v2 gRPC)",
)
"""Every server compare.py can measure, in table order."""
OURS = (
    "sentiserve",
    "sentiserve, window 8",
    "sentiserve, grouping off",
    "sentiserve (v2)",
    "sentiserve (v2 gRPC)",
)
RIVALS = tuple(p for p in PEERS if p not in OURS)
"""The peers sentiserve's goals are judged against (each at its best settings)."""


def row_at(section: dict[str, Any], peer: str, clients: int, client: str = "wrk") -> Any:
    rows: list[dict[str, Any]] = section.get(peer, {}).get("results", {}).get(client, [])
    return next((row for row in rows if row["concurrency"] == clients), None)


def finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def span(values: Sequence[Any], digits: int = 1) -> str:
    """``12.3`` or ``12.3–14.1`` over runs; ``-`` when nothing was measured."""
    found = finite(values)
    if not found:
        return "-"
    lo, hi = min(found), max(found)
    if round(lo, digits) == round(hi, digits):
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def at(run: Run, data: str, peer: str, clients: int, key: str) -> float | None:
    if data not in run:
        return None
    row = row_at(run[data], peer, clients)
    return None if row is None else row[key]


def best_rival(run: Run, data: str, clients: int) -> str | None:
    """The peer with the most throughput at ``clients`` (errors free), in this run."""
    found = [
        (value, peer)
        for peer in RIVALS
        if (value := at(run, data, peer, clients, "throughput")) is not None
        and not at(run, data, peer, clients, "errors")
    ]
    return max(found)[1] if found else None


def lowest_rival_p50(run: Run, data: str) -> float | None:
    values = finite([at(run, data, p, 1, "p50_ms") for p in RIVALS])
    return min(values) if values else None


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ceiling_of(run: Run, data: str) -> float | None:
    value = run.get(data, {}).get("ceiling", {}).get("sorted32_seq_s")
    return None if value is None else float(value)


Goal = tuple[str, str, str, bool | None]


def goals(runs: list[Run]) -> list[Goal]:
    """(goal, measured per run, target, met in every run)."""
    out: list[Goal] = []

    def goal(
        name: str,
        target: float,
        fn: Callable[[Run], float | None],
        higher: bool = True,
        fmt: str = "{:.2f}",
    ) -> None:
        values = finite([fn(run) for run in runs])
        sign = "≥" if higher else "≤"
        if not values:
            out.append((name, "not measured", f"{sign} {target:g}", None))
            return
        met = all(v >= target if higher else v <= target for v in values)
        out.append((name, " / ".join(fmt.format(v) for v in values), f"{sign} {target:g}", met))

    def ours(run: Run, data: str, clients: int, key: str) -> float | None:
        return at(run, data, "sentiserve", clients, key)

    def versus_best(run: Run, data: str, key: str, mine: str = "sentiserve") -> float | None:
        rival = best_rival(run, data, 32)
        return (
            None
            if rival is None
            else div(at(run, data, mine, 32, key), at(run, data, rival, 32, key))
        )

    names = [best_rival(r, "rt", 32) or "-" for r in runs]
    goal(
        f"rt, 32 clients: sentiserve / best peer throughput ({' / '.join(names)})",
        1.2,
        lambda r: versus_best(r, "rt", "throughput"),
    )
    goal(
        "rt, 32 clients: sentiserve p99 / that peer's p99",
        0.8,
        lambda r: versus_best(r, "rt", "p99_ms"),
        higher=False,
    )
    window = "sentiserve, window 8"
    goal(
        "rt, 32 clients, with `--batch-window 8`: sentiserve / best peer throughput",
        1.2,
        lambda r: versus_best(r, "rt", "throughput", window),
    )
    goal(
        "rt, 32 clients, with `--batch-window 8`: sentiserve p99 / best peer p99",
        0.8,
        lambda r: versus_best(r, "rt", "p99_ms", window),
        higher=False,
    )
    goal(
        "rt, 1 client: sentiserve p50 − best peer p50 (ms)",
        0.3,
        lambda r: (
            None
            if (mine := ours(r, "rt", 1, "p50_ms")) is None
            or (theirs := lowest_rival_p50(r, "rt")) is None
            else mine - theirs
        ),
        higher=False,
    )
    for data in ("rt", "long"):
        goal(
            f"{data}, 32 clients: sentiserve / engine ceiling throughput",
            0.85,
            lambda r, d=data: div(ours(r, d, 32, "throughput"), ceiling_of(r, d)),
        )
        goal(
            f"{data}, 256 clients: sentiserve errors",
            0,
            lambda r, d=data: ours(r, d, 256, "errors"),
            higher=False,
            fmt="{:.0f}",
        )
        goal(
            f"{data}, 256 clients: sentiserve throughput / its own at 32",
            1.0,
            lambda r, d=data: div(ours(r, d, 256, "throughput"), ours(r, d, 32, "throughput")),
        )
    goal(
        "long, 32 clients: sentiserve / best peer throughput",
        1.0,
        lambda r: versus_best(r, "long", "throughput"),
    )
    goal(
        "rt, 32 clients, v2 HTTP: sentiserve / Triton throughput",
        1.6,
        lambda r: div(
            at(r, "rt", "sentiserve (v2)", 32, "throughput"),
            at(r, "rt", "triton (v2)", 32, "throughput"),
        ),
    )
    goal(
        "sentiserve ready after start (s)",
        2.0,
        lambda r: r.get("rt", {}).get("sentiserve", {}).get("ready_s"),
        higher=False,
    )
    for data in ("rt", "long"):
        goal(
            f"sentiserve peak resident memory, {data} (MB)",
            400,
            lambda r, d=data: r.get(d, {}).get("sentiserve", {}).get("memory_mb", {}).get("VmHWM"),
            higher=False,
            fmt="{:.0f}",
        )
    return out


def data_sets(runs: list[Run]) -> list[str]:
    """The text sets measured (a run's other keys hold its settings and versions)."""
    return [k for k, v in runs[0].items() if isinstance(v, dict) and "ceiling" in v]


def levels_of(runs: list[Run], data: str, client: str) -> list[int]:
    found = {
        row["concurrency"]
        for peer in PEERS
        for row in runs[0][data].get(peer, {}).get("results", {}).get(client, [])
    }
    return sorted(found)


def curve_table(runs: list[Run], data: str, client: str = "wrk") -> list[str]:
    """Rows: servers; columns: client counts; cells: req/s, p99 ms and errors (if any),
    each a range over runs."""
    levels = levels_of(runs, data, client)
    lines = [
        "| server | " + " | ".join(f"{n} client{'s' if n > 1 else ''}" for n in levels) + " |",
        "| --- |" + " --- |" * len(levels),
    ]
    for peer in PEERS:
        if not runs[0][data].get(peer, {}).get("results", {}).get(client):
            continue
        cells = []
        for n in levels:
            rows = [x for r in runs if (x := row_at(r[data], peer, n, client)) is not None]
            if not rows:
                cells.append("")
                continue
            cell = f"{span([x['throughput'] for x in rows])} · {span([x['p99_ms'] for x in rows])}"
            errors = finite([x.get("errors") for x in rows])
            if any(errors):
                cell += f" · **{span(errors, 0)} errors**"
            cells.append(cell)
        lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    return lines


def server_side_table(runs: list[Run], data: str) -> list[str]:
    """``sentiserve bench`` rows with the server's own batch, queue and compute metrics."""
    lines = [
        "| server | client | clients | req/s | p50 ms | p99 ms | errors | batch | queue µs/req | "
        "compute µs/req |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for peer in PEERS:
        for row in runs[0][data].get(peer, {}).get("results", {}).get("bench", []):
            n = row["concurrency"]
            rows = [x for r in runs if (x := row_at(r[data], peer, n, "bench")) is not None]

            def cell(key: str, digits: int = 1, rows: list[Any] = rows) -> str:
                return span([x.get(key) for x in rows], digits)

            lines.append(
                f"| {peer} | {row['client']} | {n} | {cell('throughput')} | {cell('p50_ms', 2)} | "
                f"{cell('p99_ms')} | {cell('errors', 0)} | {cell('server_batch_size')} | "
                f"{cell('server_queue_us', 0)} | {cell('server_compute_us', 0)} |"
            )
    return lines


def one_line(text: str, limit: int = 800) -> str:
    """``text`` fit for a table cell: one line, no pipes, at most ``limit`` characters."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[:limit] + "…"


def describe_settings(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in setting.items())


def tuning_lines(runs: list[Run]) -> list[str]:
    tuning = runs[0].get("tuning", {})
    if not tuning:
        return []
    lines = [
        "## Peer settings",
        "",
        "Each framework peer ran with the settings its documentation suggests for a CPU; each "
        "was measured at 32 clients (wrk, rt) before the runs, and the curves below use the "
        "one with the most throughput without errors.",
        "",
        "| peer | settings tried: req/s · p99 ms (errors) | kept |",
        "| --- | --- | --- |",
    ]
    for name, found in tuning.items():
        if "error" in found:
            lines.append(f"| {name} | could not run: {one_line(found['error'], 1500)} | - |")
            continue
        tried = "; ".join(
            f"{describe_settings(t['setting'])}: "
            + (
                f"did not start ({one_line(t['error'], 120)})"
                if "error" in t
                else f"{t['throughput']:.0f} · {t['p99_ms']:.0f}"
                + (f" ({t['errors']} errors)" if t["errors"] else "")
            )
            for t in found["tried"]
        )
        lines.append(f"| {name} | {tried} | {describe_settings(found['best'])} |")
    return [*lines, ""]


def plot(runs: list[Run], path: Path) -> None:
    """Throughput and p99 against clients, one line per server (medians over runs), one
    row of panels per text set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = data_sets(runs)
    fig, axes = plt.subplots(len(datas), 2, figsize=(12, 4.2 * len(datas)), squeeze=False)
    for row, data in enumerate(datas):
        for peer in PEERS:
            levels = [
                r["concurrency"]
                for r in runs[0][data].get(peer, {}).get("results", {}).get("wrk", [])
            ]
            if len(levels) < 2:
                continue
            style = {"linewidth": 2.6, "color": "black"} if peer == "sentiserve" else {}
            for col, key in enumerate(("throughput", "p99_ms")):
                values = [
                    statistics.median(found)
                    if (found := finite([at(r, data, peer, n, key) for r in runs]))
                    else math.nan
                    for n in levels
                ]
                axes[row][col].plot(levels, values, marker="o", label=peer, **style)
        for col, label in enumerate(("requests / s", "p99 latency (ms)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels_of(runs, data, "wrk"))
            ax.set_xticklabels([str(n) for n in levels_of(runs, data, "wrk")])
            ax.set_xlabel("concurrent clients (wrk)")
            ax.set_ylabel(label)
            ax.set_title(f"{data}: {label}")
            if col == 1:
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
        axes[row][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(
    runs: list[Run],
    *,
    info: dict[str, Any],
    versions: dict[str, str],
    duration_s: float,
    warmup_s: float,
    plot_name: str | None = None,
) -> str:
    lines = [
        "# Serving benchmark: sentiserve side by side with its peers",
        "",
        "Written by `python benchmarks/compare.py` (`make bench`). One machine; the client "
        "shares its cores with the server. Headline numbers: `wrk` (C, one thread, N "
        "keep-alive connections, closed loop, one text per request, "
        f"{warmup_s:g} s warm-up thrown away, {duration_s:g} s per level); beside it "
        "`sentiserve bench` (Python: aiohttp, and grpc.aio for gRPC) with the server's own "
        "queue and compute metrics. "
        f"{len(runs)} full runs; cells show the range over runs. The machine is shared and "
        "noisy: compare ratios within a run.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['platform']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- Every peer serves the same int8 engine file and tokenizer. The plain peers: "
        "FastAPI, sync handler, one ONNX Runtime call per request (benchmarks/plain_server.py), "
        "1 or 2 intra-op threads. The framework peers (benchmarks/peers/, one file each, each "
        "in its own environment): LitServe, Ray Serve, BentoML, MLServer, Infinity. Triton: "
        "2.51's python backend with dynamic batching. Naive: `transformers.pipeline`.",
        '- "Best peer": the peer (any server but sentiserve) with the most throughput '
        "without errors at 32 clients, in each run.",
    ]
    if plot_name:
        lines += ["", f"![throughput and p99 against clients]({plot_name})"]
    lines += [
        "",
        "## Goals",
        "",
        "| goal | measured (per run) | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for name, measured, target, met in goals(runs):
        verdict = "n/a" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {measured} | {target} | {verdict} |")
    lines += ["", *tuning_lines(runs)]
    for data in data_sets(runs):
        first = runs[0][data]
        c = [r[data]["ceiling"] for r in runs]
        lines += [f"## Data `{data}`: {first['description']}", ""]
        lines.append(
            f"Ceiling (no server, the same engine, all {c[0]['texts']:,} texts in "
            f"length-sorted batches of 32): {span([x['sorted32_seq_s'] for x in c])} seq/s, "
            f"the better of one session with {c[0]['cores']} threads "
            f"({span([x['one_session_seq_s'] for x in c])}) and {c[0]['cores']} one-thread "
            f"runs side by side ({span([x['per_core_seq_s'] for x in c])}). Engine "
            f"batch-1 p50 {span([x['batch1_p50_ms'] for x in c], 2)} ms with "
            f"{c[0]['cores']} threads; mean length {c[0]['mean_tokens']:.0f} tokens."
        )
        lines += ["", "wrk, req/s · p99 ms per number of clients:", ""]
        lines += curve_table(runs, data)
        if any(first.get(p, {}).get("results", {}).get("bench") for p in PEERS):
            lines += [
                "",
                "`sentiserve bench` (Python: aiohttp over HTTP, grpc.aio over gRPC), with the "
                "server's own metrics where it has them:",
                "",
                *server_side_table(runs, data),
            ]
        lines.append("")
        for peer in PEERS:
            if "error" in first.get(peer, {}):
                lines.append(f"- {peer}: could not run: {one_line(first[peer]['error'], 300)}")
            elif peer in first:
                ready = span([r[data][peer]["ready_s"] for r in runs], 2)
                peak = span([r[data][peer]["memory_mb"].get("VmHWM", 0) for r in runs], 0)
                lines.append(
                    f"- {peer}: first answer {ready} s after start; peak resident {peak} MB "
                    "(summed over its processes)."
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
