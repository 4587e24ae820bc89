"""The naive peer: what most tutorials deploy. FastAPI + uvicorn + ``transformers.pipeline``
on the fine-tuned PyTorch model, one forward pass per request, same ``/v1/sentiment`` API.

Usage: python benchmarks/naive_server.py --model build/model --port 9000
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Body(BaseModel):
    text: str
    model: str = "sentiment"


def build(model_dir: str) -> FastAPI:
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, top_k=None)
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/sentiment")
    def sentiment(body: Body) -> dict[str, object]:
        (ranked,) = classify([body.text], truncation=True)
        scores = {str(s["label"]): float(s["score"]) for s in ranked}  # type: ignore[index]
        label = max(scores, key=scores.__getitem__)
        result = {"label": label, "score": scores[label], "scores": scores}
        return {"model": "sentiment", "version": 1, "results": [result]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
