"""The server's own view of a load level, from its Prometheus metrics (before and after).

Triton's metric names, so this reads sentiserve and a real Triton alike: average queue time
and compute time per request and the average batch size (perf_analyzer's server columns).
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


def parse_totals(text: str, model: str | None = None) -> dict[str, float]:
    """Sum each of COUNTERS over its label sets (only ``model``'s when given), read with
    prometheus_client's own parser of the text format."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser names a counter's samples <name>_total; Triton's counters have no
            # such suffix on the wire, so the family's own name is the one to match.
            name = family.name if family.type == "counter" else sample.name
            if name not in totals:
                continue
            if model is not None and sample.labels.get("model") != model:
                continue
            totals[name] += float(sample.value)
    return totals


@dataclass(frozen=True)
class ServerView:
    requests: float
    queue_us: float | None
    compute_us: float | None
    batch_size: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "server_requests": self.requests,
            "server_queue_us": self.queue_us,
            "server_compute_us": self.compute_us,
            "server_batch_size": self.batch_size,
        }


def difference(before: dict[str, float], after: dict[str, float]) -> ServerView:
    delta = {name: after[name] - before[name] for name in COUNTERS}
    requests = delta["nv_inference_request_success"]
    compute = sum(delta[n] for n in COUNTERS if n.startswith("nv_inference_compute_"))
    per = (lambda v: v / requests) if requests > 0 else (lambda v: None)  # noqa: E731
    executions = delta["nv_inference_exec_count"]
    return ServerView(
        requests=requests,
        queue_us=per(delta["nv_inference_queue_duration_us"]),
        compute_us=per(compute),
        batch_size=delta["nv_inference_count"] / executions if executions > 0 else None,
    )


async def scrape(url: str, model: str | None) -> dict[str, float] | None:
    """Totals from ``url`` (a /metrics page); None when it cannot be read."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            if response.status != 200:
                return None
            return parse_totals(await response.text(), model)
    except (aiohttp.ClientError, TimeoutError):
        return None
