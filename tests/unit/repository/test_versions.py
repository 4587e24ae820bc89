"""Writing and loading versions: atomic, verified, immutable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sentiserve.errors import ModelNotFoundError, RepositoryError
from sentiserve.repository.builder import PARTIAL_PREFIX, write_version
from sentiserve.repository.layout import ModelRepository
from sentiserve.repository.manifest import MANIFEST


def tiny_onnx(path: Path, seed: int) -> Path:
    """A one-node ONNX graph with a 4 KB weight, so it has a weights file in a repository."""
    weight = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save_model(helper.make_model(graph), str(path))
    return path


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"fake": "tokenizer"}')
    tiny_onnx(src / "model.onnx", 0)
    tiny_onnx(src / "model.int8.onnx", 1)
    return {
        "tokenizer": src / "tokenizer.json",
        "fp32": src / "model.onnx",
        "int8": src / "model.int8.onnx",
    }


def write(root: Path, sources: dict[str, Path], **overrides: object) -> object:
    kwargs: dict[str, object] = {
        "labels": ["negative", "positive"],
        "max_length": 64,
        "pad_id": 0,
        "inputs": ["input_ids", "attention_mask"],
        "tokenizer_file": sources["tokenizer"],
        "engine_files": {"fp32": sources["fp32"], "int8": sources["int8"]},
        "default_engine": {"cpu": "int8", "cuda": "fp32"},
        "evaluation": {"fp32": {"accuracy": 0.9}},
        "provenance": {"dataset": "toy"},
    }
    kwargs.update(overrides)
    return write_version(root, "sentiment", **kwargs)  # type: ignore[arg-type]


def test_write_then_load_verifies(tmp_path: Path, sources: dict[str, Path]) -> None:
    root = tmp_path / "repo"
    write(root, sources)
    write(root, sources)
    repo = ModelRepository(root)
    assert repo.models() == ["sentiment"]
    assert repo.versions("sentiment") == [1, 2]
    latest = repo.load("sentiment")
    assert latest.version == 2
    assert latest.manifest.engine_for("cpu") == "int8"
    assert latest.manifest.provenance["dataset"] == "toy"
    assert "code_version" in latest.manifest.provenance
    assert (root / "sentiment" / "config.pbtxt").read_text().startswith('name: "sentiment"')
    assert repo.load("sentiment", 1).version == 1


def test_corrupt_and_incomplete_versions_are_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    root = tmp_path / "repo"
    write(root, sources)
    repo = ModelRepository(root)
    engine = root / "sentiment" / "1" / "model.int8.onnx"
    data = bytearray(engine.read_bytes())
    data[3] ^= 0xFF
    engine.write_bytes(bytes(data))
    with pytest.raises(RepositoryError, match=r"model.int8.onnx: corrupt: sha256"):
        repo.load("sentiment", 1)
    engine.write_bytes(b"short")
    with pytest.raises(RepositoryError, match=r"corrupt: 5 bytes"):
        repo.load("sentiment", 1)
    engine.unlink()
    with pytest.raises(RepositoryError, match=r"incomplete version: model.int8.onnx is missing"):
        repo.load("sentiment", 1)

    (root / "sentiment" / "1" / MANIFEST).unlink()
    with pytest.raises(RepositoryError, match=r"incomplete version \(no manifest.json\)"):
        repo.load("sentiment", 1)


def test_onnx_engines_are_written_as_graph_plus_weights_and_load_the_same(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    import onnxruntime as ort

    root = tmp_path / "repo"
    version = write(root, sources)
    folder = root / "sentiment" / "1"
    entry = version.manifest.engines["int8"]  # type: ignore[attr-defined]
    assert entry.data is not None
    assert entry.data.file == "model.int8.onnx.data"
    assert (folder / "model.int8.onnx").stat().st_size < 1024 < entry.data.bytes
    x = np.ones(1024, np.float32)
    original = ort.InferenceSession(str(sources["int8"])).run(None, {"x": x})[0]
    served = ort.InferenceSession(str(folder / "model.int8.onnx")).run(None, {"x": x})[0]
    assert np.array_equal(original, served)
    again = write(tmp_path / "again", sources).manifest  # type: ignore[attr-defined]
    assert again.engines["int8"] == entry, "the same source must give the same files"
    weights = folder / "model.int8.onnx.data"
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")
    with pytest.raises(RepositoryError, match=r"model.int8.onnx.data: corrupt: sha256"):
        ModelRepository(root).load("sentiment", 1)


def test_invalid_manifest_names_the_field(tmp_path: Path, sources: dict[str, Path]) -> None:
    root = tmp_path / "repo"
    write(root, sources)
    path = root / "sentiment" / "1" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["labels"] = ["only-one"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(RepositoryError, match=r"invalid manifest at labels"):
        ModelRepository(root).load("sentiment", 1)
    path.write_text("{truncated")
    with pytest.raises(RepositoryError, match=r"invalid manifest"):
        ModelRepository(root).load("sentiment", 1)


def test_unknown_model_and_version(tmp_path: Path, sources: dict[str, Path]) -> None:
    root = tmp_path / "repo"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        ModelRepository(root).load("sentiment")
    write(root, sources)
    with pytest.raises(ModelNotFoundError, match=r"no model 'other' .*models: sentiment"):
        ModelRepository(root).load("other")
    with pytest.raises(ModelNotFoundError, match=r"no version 7 \(versions: 1\)"):
        ModelRepository(root).load("sentiment", 7)


def test_failed_write_leaves_nothing(tmp_path: Path, sources: dict[str, Path]) -> None:
    root = tmp_path / "repo"
    write(root, sources)
    sources["int8"].unlink()
    with pytest.raises(RepositoryError, match=r"model.int8.onnx is missing"):
        write(root, sources)
    with pytest.raises(RepositoryError, match=r"default engine\(s\) \['int8'\]"):
        write(root, sources, engine_files={"fp32": sources["fp32"]})
    folder = root / "sentiment"
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"]


def test_half_written_versions_are_ignored_then_cleaned(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    root = tmp_path / "repo"
    write(root, sources)
    stale = root / "sentiment" / f"{PARTIAL_PREFIX}2-dead"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    repo = ModelRepository(root)
    assert repo.versions("sentiment") == [1]
    assert repo.load("sentiment").version == 1
    write(root, sources)
    assert not stale.exists()
    assert repo.versions("sentiment") == [1, 2]


def test_versions_are_immutable(tmp_path: Path, sources: dict[str, Path]) -> None:
    root = tmp_path / "repo"
    write(root, sources)
    with pytest.raises(RepositoryError, match="versions are immutable"):
        write(root, sources, version=1)
