"""One benchmark: a sweep of load levels against one endpoint, with the server's metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sentiserve import DEFAULT_MODEL
from sentiserve.bench import loadgen, servermetrics
from sentiserve.bench.protocols import Client, make_client
from sentiserve.bench.report import BenchReport, level_name, summarize
from sentiserve.bench.texts import BenchTexts


@dataclass(frozen=True)
class BenchConfig:
    url: str
    protocol: str = "v1"
    model: str = DEFAULT_MODEL
    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    rate: float | None = None
    duration_s: float = 10.0
    warmup_s: float = 2.0
    timeout_s: float = 30.0
    metrics_url: str | None = None
    api_key: str | None = None
    texts_per_request: int = 1


Progress = Callable[[str, float], None]
"""Called with the level's name and its planned length in seconds when a level starts."""


async def run_levels(
    config: BenchConfig, texts: BenchTexts, progress: Progress = lambda _n, _s: None
) -> BenchReport:
    report = BenchReport(
        settings={
            "url": config.url,
            "protocol": config.protocol,
            "model": config.model,
            "data": texts.name,
            "data_description": texts.description,
            "synthetic": texts.synthetic,
            "duration_s": config.duration_s,
            "warmup_s": config.warmup_s,
            "metrics_url": config.metrics_url,
            "mode": "open loop (Poisson)" if config.rate else "closed loop",
            "texts_per_request": config.texts_per_request,
        }
    )
    client = make_client(
        config.protocol,
        config.url,
        config.model,
        texts.texts,
        config.timeout_s,
        config.api_key,
        config.texts_per_request,
    )
    levels: Sequence[dict[str, Any]] = (
        [{"rate": config.rate}] if config.rate else [{"concurrency": c} for c in config.concurrency]
    )
    try:
        for level in levels:
            report.results.append(await _measure(config, client, level, progress))
    finally:
        await client.close()
    return report


async def _measure(
    config: BenchConfig, client: Client, level: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    marks: dict[str, dict[str, float] | None] = {}

    def mark(name: str) -> loadgen.Hook:
        async def hook() -> None:
            if config.metrics_url:
                marks[name] = await servermetrics.scrape(config.metrics_url, config.model)

        return hook

    progress(level_name(level), config.warmup_s + config.duration_s)
    if "rate" in level:
        sample = await loadgen.open_loop(
            client,
            level["rate"],
            duration_s=config.duration_s,
            warmup_s=config.warmup_s,
            on_start=mark("before"),
            on_end=mark("after"),
        )
    else:
        sample = await loadgen.closed_loop(
            client,
            level["concurrency"],
            duration_s=config.duration_s,
            warmup_s=config.warmup_s,
            on_start=mark("before"),
            on_end=mark("after"),
        )
    before, after = marks.get("before"), marks.get("after")
    view = servermetrics.difference(before, after) if before and after else None
    return summarize(level, sample, view)


def run(
    config: BenchConfig, texts: BenchTexts, progress: Progress = lambda _n, _s: None
) -> BenchReport:
    return asyncio.run(run_levels(config, texts, progress))
