"""Ray Serve as its documentation sets it up for batching: a deployment with one replica
per core (``num_replicas``), ``@serve.batch`` (``max_batch_size``, ``batch_wait_timeout_s``)
around the shared engine (engine.py), behind Serve's HTTP proxy. Ray's own processes (GCS,
raylet, controller, proxy) are part of its cost: they share the same cores and count in
its memory. Answers ``POST /v1/sentiment`` with sentiserve's v1 body.

Usage: .peers/rayserve/bin/python benchmarks/peers/rayserve_server.py --model-repository DIR
       --port 9000 [--workers 2] [--threads 1] [--max-batch-size 16] [--wait-ms 5]
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from common import arguments

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = arguments(__doc__, workers="replicas", wait="batch_wait_timeout_s")
    args = parser.parse_args()
    # Replicas import engine.py from here; telemetry and the dashboard stay off (offline).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), os.environ.get("PYTHONPATH")])
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from starlette.requests import Request

    repository = str(Path(args.model_repository).resolve())

    @serve.deployment(
        num_replicas=args.workers,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1024,
    )
    class Sentiment:
        def __init__(self) -> None:
            from engine import Engine

            self.engine = Engine(repository, args.threads)

        @serve.batch(max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.wait_ms / 1000)
        async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
            return self.engine.classify(texts)

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            result = await self.classify(str(body["text"]))
            return {"model": "sentiment", "version": self.engine.version, "results": [result]}

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Sentiment.bind(), route_prefix="/v1/sentiment")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
