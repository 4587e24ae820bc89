"""Run by tests/integration/test_clients.py with KServe's own Python client, in its own
environment (.kserve/: its pins clash with ours). Prints one JSON object of what the client
saw; the test decides what is right.

Usage: .kserve/bin/python tests/clients/kserve_conformance.py HTTP_URL GRPC_HOST:PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

TEXTS = [b"a wonderful, moving film", b"boring and dull", b"the plot was a mess"]


def request() -> InferRequest:
    tensor = InferInput("TEXT", [len(TEXTS), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_).reshape(-1, 1))
    return InferRequest(model_name="sentiment", infer_inputs=[tensor])


def labels(response: object) -> list[str]:
    for output in response.outputs:  # type: ignore[attr-defined]
        if output.name == "LABEL":
            return [
                x.decode() if isinstance(x, bytes) else str(x)
                for x in np.asarray(output.as_numpy()).reshape(-1)
            ]
    return []


async def main(http_url: str, grpc_url: str) -> dict[str, object]:
    out: dict[str, object] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    out["rest_live"] = await rest.is_server_live(http_url)
    out["rest_ready"] = await rest.is_server_ready(http_url)
    out["rest_model_ready"] = await rest.is_model_ready(http_url, "sentiment")
    out["rest_labels"] = labels(await rest.infer(http_url, request(), model_name="sentiment"))
    await rest.close()
    grpc = InferenceGRPCClient(grpc_url)  # its defaults: a 60 s deadline, 3 tries
    out["grpc_live"] = await grpc.is_server_live()
    out["grpc_ready"] = await grpc.is_server_ready()
    out["grpc_model_ready"] = await grpc.is_model_ready("sentiment")
    failures: list[str] = []
    answers = []
    for _ in range(40):
        try:
            answers.append(labels(await grpc.infer(request())))
        except Exception as exc:  # count every failure the client raises
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
    out["grpc_labels"] = answers[0] if answers else []
    out["grpc_failures"] = failures
    await grpc.close()
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))) + "\n")
