"""The plain peer: the server a user would write in an afternoon, and the one to beat on CPU.

FastAPI + uvicorn, a synchronous handler (FastAPI runs it on its thread pool), one ONNX
Runtime call per request on the same engine file and tokenizer that sentiserve serves
(benchmarks/peers/engine.py, which every peer shares), the same ``/v1/sentiment`` answer.
No batching, no queue, no limits.

Usage: python benchmarks/plain_server.py --model-repository DIR --port 9000 [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from engine import MODEL, Engine  # noqa: E402


class Body(BaseModel):
    text: str
    model: str = MODEL


def build(repository: Path, threads: int) -> FastAPI:
    engine = Engine(repository, threads)
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/sentiment")
    def sentiment(body: Body) -> dict[str, object]:
        return {"model": MODEL, "version": engine.version, "results": engine.classify([body.text])}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    app = build(Path(args.model_repository), args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
