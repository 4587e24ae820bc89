"""LitServe as its documentation sets it up for a CPU with batching: a ``LitAPI`` with
``max_batch_size`` and ``batch_timeout``, ``workers_per_device`` inference workers, the
ZeroMQ queue (``fast_queue``), on the shared engine (engine.py). Answers
``POST /v1/sentiment`` with sentiserve's v1 body, so the same clients drive it.

Usage: .peers/litserve/bin/python benchmarks/peers/litserve_server.py --model-repository DIR
       --port 9000 [--workers 2] [--threads 1] [--max-batch-size 16] [--wait-ms 5]
"""

from typing import Any

import litserve as ls
from common import arguments
from engine import MODEL, Engine


class SentimentAPI(ls.LitAPI):
    def __init__(self, repository: str, threads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.repository, self.threads = repository, threads

    def setup(self, device: str) -> None:
        self.engine = Engine(self.repository, self.threads)

    # No annotation on ``request``: LitServe reads it to type the endpoint's body.
    def decode_request(self, request, **kwargs: Any) -> str:  # type: ignore[no-untyped-def]
        return str(request["text"])

    def predict(self, texts: list[str], **kwargs: Any) -> list[dict[str, Any]]:
        return self.engine.classify(list(texts))

    def encode_response(self, result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"model": MODEL, "version": self.engine.version, "results": [result]}


def main() -> None:
    parser = arguments(__doc__, workers="inference workers", wait="batch_timeout")
    args = parser.parse_args()
    api = SentimentAPI(
        args.model_repository,
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.wait_ms / 1000,
        api_path="/v1/sentiment",
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, fast_queue=True)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
