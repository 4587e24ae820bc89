"""benchmarks/peers/engine.py, the engine every benchmark peer serves, computes the same
logits as sentiserve's own engine on the same model version, padded batches included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.benchmarks import load

TEXTS = ["a fine film", "dull, long and badly acted from the first scene to the last", "ok"]


def test_peer_engine_matches_sentiserve(tiny_build: Path) -> None:
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    module = load("peers/engine.py")
    repo = tiny_build / "model_repository"
    peer = module.Engine(repo, threads=1)
    served = open_model(ModelRepository(repo).load("sentiment"), threads=1)

    ours = []
    for text in TEXTS:  # one at a time: no padding on sentiserve's side
        batch = served.tokenizer.pad(served.tokenizer.encode([text]))
        ours.append(np.asarray(served.engine.infer(batch.input_ids, batch.attention_mask))[0])
    theirs = peer.logits(TEXTS)  # one padded batch
    np.testing.assert_allclose(theirs, np.stack(ours), atol=1e-4)
    answers = peer.classify(TEXTS)
    assert [a["label"] for a in answers] == [served.labels[int(i)] for i in np.argmax(ours, 1)]
    assert all(abs(sum(a["scores"].values()) - 1) < 1e-5 for a in answers)
