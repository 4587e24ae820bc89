"""The registry with real engines on the tiny model: load, hot reload that swaps only a
complete version, a failed load that keeps the old one serving, unload, the index."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sentiserve.engine.instances import InstanceConfig
from sentiserve.engine.predict import predict_probabilities
from sentiserve.errors import ModelNotFoundError, RepositoryError
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.registry import Registry


@pytest.fixture
def repo(tiny_build: Path, tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(tiny_build / "model_repository", target)
    return target


def new_version(repo: Path, number: int, corrupt: bool = False) -> None:
    folder = repo / "sentiment" / str(number)
    shutil.copytree(repo / "sentiment" / "1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": number}))
    if corrupt:
        weights = folder / "model.int8.onnx.data"
        weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")


def test_load_reload_fail_and_unload(repo: Path) -> None:
    registry = Registry(repo, BatchingConfig(), instances=InstanceConfig(count=2, threads=1))
    registry.load_all()
    try:
        first = registry.get("sentiment")
        assert first.version == 1
        assert first.instances.count == 2
        assert len(first.batcher.engines) == 2
        with pytest.raises(ModelNotFoundError, match="no ready version 2"):
            registry.get("sentiment", 2)
        new_version(repo, 2)
        assert registry.load("sentiment").primary.version == 2
        assert registry.get("sentiment").version == 2
        new_version(repo, 3, corrupt=True)
        with pytest.raises(RepositoryError, match="corrupt"):
            registry.load("sentiment")
        assert registry.get("sentiment").version == 2, "the serving version must stay"
        statuses = registry.index()
        assert [(s.name, s.version, s.state) for s in statuses] == [("sentiment", 2, "READY")]
        registry.unload("sentiment")
        with pytest.raises(ModelNotFoundError):
            registry.get("sentiment")
        (status,) = registry.index()
        assert status.state == "UNAVAILABLE"
        assert "corrupt" in status.reason
    finally:
        registry.stop()


@pytest.mark.parametrize(("threads", "shared"), [(1, True), (2, False)])
def test_one_thread_instances_share_one_session(repo: Path, threads: int, shared: bool) -> None:
    """One-thread CPU instances run side by side on one session (its weights once); with
    more threads each gets its own (a shared session would also share its thread pool). The
    solo session is always its own, and every instance answers the same."""
    registry = Registry(
        repo, BatchingConfig(), instances=InstanceConfig(count=3, threads=threads, solo_threads=2)
    )
    registry.load_all()
    try:
        loaded = registry.get("sentiment")
        engines = loaded.batcher.engines
        assert len(engines) == 3
        assert (len({id(e) for e in engines}) == 1) is shared
        if not shared:
            assert len({id(e) for e in engines}) == 3
        assert loaded.batcher.solo is not None
        assert all(loaded.batcher.solo is not e for e in engines)
        texts = ["a fine film", "dull and far too long, with a plot that never starts"]
        tokenizer = loaded.served.tokenizer
        alone = predict_probabilities(loaded.batcher.solo, tokenizer, texts)
        with ThreadPoolExecutor(3) as pool:  # every instance at once, as the workers call
            runs = list(pool.map(lambda e: predict_probabilities(e, tokenizer, texts), engines))
        for probabilities in runs:
            np.testing.assert_allclose(probabilities, alone, atol=1e-6)
    finally:
        registry.stop()


def test_an_empty_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no models"):
        Registry(tmp_path / "empty", BatchingConfig()).load_all()


def test_each_load_hands_on_the_versions_drift_reference(repo: Path) -> None:
    seen: list[tuple[str, int, dict[str, object]]] = []
    registry = Registry(
        repo,
        BatchingConfig(),
        instances=InstanceConfig(count=1, threads=1),
        on_reference=lambda name, version, ref: seen.append((name, version, ref)),
    )
    registry.load_all()
    try:
        ((name, version, ref),) = seen
        manifest = json.loads((repo / "sentiment" / "1" / "manifest.json").read_text())
        assert (name, version) == ("sentiment", 1)
        assert ref == manifest["reference"]
        # The build's reference: the served engine's answers on the validation split.
        assert ref["split"] == "validation"
        assert ref["texts"] > 0
        assert set(ref["label_shares"]) == set(manifest["labels"])
        assert sum(ref["label_shares"].values()) == pytest.approx(1.0)
        assert 2 < ref["input_tokens"]["p50"] <= manifest["max_length"] * 4
        registry.unload("sentiment")
        assert seen[-1] == ("sentiment", 1, {})
    finally:
        registry.stop()
