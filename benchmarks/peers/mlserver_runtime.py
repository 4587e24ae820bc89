"""MLServer as its documentation sets up a custom runtime with adaptive batching: an
``MLModel`` on the shared engine (engine.py), ``max_batch_size`` and ``max_batch_time`` in
the model settings, ``parallel_workers`` inference processes (one per core). It speaks
KServe v2, so the v2 clients drive it unchanged (input ``TEXT``, BYTES, one row per text;
outputs ``label`` and ``score``).

``python mlserver_runtime.py`` writes settings.json and model-settings.json into a fresh
folder, runs ``mlserver start`` on it until stopped (SIGTERM), then removes the folder.

Usage: .peers/mlserver/bin/python benchmarks/peers/mlserver_runtime.py --model-repository DIR
       --port 9000 [--workers 2] [--threads 1] [--max-batch-size 16] [--wait-ms 5]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import arguments, run_until_stopped
from engine import MODEL, Engine
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

HERE = Path(__file__).resolve().parent


class SentimentRuntime(MLModel):
    async def load(self) -> bool:
        threads = int(os.environ.get("PEER_THREADS", "1"))
        self.engine = Engine(self.settings.parameters.uri, threads)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].data]
        results = self.engine.classify(texts)
        rows = [len(results), 1]
        return InferenceResponse(
            model_name=self.name,
            model_version=str(self.engine.version),
            outputs=[
                ResponseOutput(
                    name="label", datatype="BYTES", shape=rows, data=[r["label"] for r in results]
                ),
                ResponseOutput(
                    name="score", datatype="FP32", shape=rows, data=[r["score"] for r in results]
                ),
            ],
        )


def main() -> None:
    parser = arguments(__doc__, workers="parallel_workers", wait="max_batch_time")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mlserver-peer-"))
    settings = {
        "host": "127.0.0.1",
        "http_port": args.port,
        "grpc_port": 0,
        "metrics_port": 0,
        "parallel_workers": args.workers,
        "debug": False,
    }
    model = {
        "name": MODEL,
        "implementation": "mlserver_runtime.SentimentRuntime",
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.wait_ms / 1000,
        "parameters": {"uri": str(Path(args.model_repository).resolve())},
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    env = {
        **os.environ,
        "PEER_THREADS": str(args.threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    mlserver = shutil.which("mlserver", path=str(Path(sys.executable).parent))
    if mlserver is None:
        sys.exit("mlserver is not installed beside this Python (make bench-peers)")
    run_until_stopped([mlserver, "start", str(folder)], env, folder)


if __name__ == "__main__":
    main()
