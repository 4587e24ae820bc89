"""Headline load numbers from ``wrk``, a C load generator, so the client does not eat the
server's cores (``sentiserve bench``'s aiohttp client spends about as much CPU per request
as a lean server does).

wrk runs one client thread with N connections, each a closed loop: one request at a time,
the next one sent when the answer arrives. A Lua script cycles through the same request
bodies ``sentiserve bench`` sends (one text each) and prints a JSON summary; latency
percentiles are wrk's own (its HdrHistogram, microsecond resolution). A warm-up run is
made first and thrown away.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve import DEFAULT_MODEL
from sentiserve.bench.protocols import http_base, http_request
from sentiserve.errors import ConfigError, SentiserveError

SCRIPT = """\
local bodies = {}
local i = 0
local headers = {["Content-Type"] = "application/json"}

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  if args[2] ~= nil and args[2] ~= "" then headers["Authorization"] = "Bearer " .. args[2] end
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


class WrkError(SentiserveError):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk level."""

    concurrency: int
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "throughput": self.throughput,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "client": "wrk",
        }


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk; `make system`)")
    return found


def run_wrk(
    url: str,
    protocol: str,
    texts: Sequence[str],
    concurrency: Sequence[int],
    *,
    duration_s: float = 15.0,
    warmup_s: float = 3.0,
    model: str = DEFAULT_MODEL,
    timeout_s: float = 30.0,
    api_key: str | None = None,
) -> list[WrkResult]:
    """One wrk run per concurrency level, each after a discarded warm-up run, with the
    request bodies ``sentiserve bench`` sends for ``protocol``. Durations are rounded up to
    whole seconds (wrk's unit)."""
    path, bodies = http_request(protocol, model, texts)
    return run_wrk_bodies(
        f"{http_base(url)}{path}",
        bodies,
        concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        timeout_s=timeout_s,
        api_key=api_key,
    )


def run_wrk_bodies(
    target: str,
    bodies: Sequence[bytes],
    concurrency: Sequence[int],
    *,
    duration_s: float = 15.0,
    warmup_s: float = 3.0,
    timeout_s: float = 30.0,
    api_key: str | None = None,
) -> list[WrkResult]:
    """``run_wrk`` for any JSON API: POST ``bodies`` (one JSON document each, cycled) to the
    full URL ``target``."""
    if any(c < 1 for c in concurrency):
        raise ConfigError("concurrency levels must be >= 1")
    if not bodies:
        raise ConfigError("no request bodies to send")
    if any(b"\n" in b or b"\r" in b for b in bodies):
        # JSON escapes newlines inside strings, so a body is always one line; kept as a check.
        raise ConfigError("request bodies must be single lines")
    binary = wrk_binary()
    results = []
    with tempfile.TemporaryDirectory(prefix="sentiserve-wrk-") as tmp:
        script = Path(tmp) / "cycle.lua"
        script.write_text(SCRIPT)
        data = Path(tmp) / "bodies.jsonl"
        data.write_bytes(b"\n".join(bodies) + b"\n")
        for clients in concurrency:
            args = [binary, "-t", "1", "-c", str(clients), "--timeout", f"{timeout_s:g}s"]
            args += ["-s", str(script), target, "--", str(data), api_key or ""]
            if warmup_s > 0:
                _wrk([*args[:1], "-d", f"{math.ceil(warmup_s)}s", *args[1:]])
            summary = _wrk([*args[:1], "-d", f"{math.ceil(duration_s)}s", *args[1:]])
            results.append(
                WrkResult(
                    concurrency=clients,
                    requests=summary["requests"],
                    duration_s=summary["duration_us"] / 1e6,
                    errors=summary["socket_errors"] + summary["non2xx"],
                    p50_ms=summary["p50_us"] / 1000,
                    p90_ms=summary["p90_us"] / 1000,
                    p99_ms=summary["p99_us"] / 1000,
                    max_ms=summary["max_us"] / 1000,
                )
            )
    return results


def _wrk(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-500:]
        raise WrkError(f"wrk failed ({done.returncode}): {said}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            summary: dict[str, Any] = json.loads(line)
            return summary
    raise WrkError(f"wrk printed no summary: {done.stdout[-500:]}")
