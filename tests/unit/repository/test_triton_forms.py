"""Triton forms of a repository: generated configs, their checks, and what lands on disk."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from sentiserve.errors import ConfigError, RepositoryError
from sentiserve.repository.config import TRT_ENGINE_CACHE, DataType, Tensor
from sentiserve.repository.layout import CONFIG, ModelRepository
from sentiserve.repository.triton import (
    MODEL_PY,
    MODEL_PY_TEXT,
    write_form,
    write_gpu_form,
    write_python_form,
)
from sentiserve.repository.triton_configs import (
    Platform,
    TritonBatching,
    check_ensemble,
    check_onnx,
    ensemble_configs,
)


@pytest.fixture
def repo(tiny_build: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_build / "model_repository", tmp_path / "repo"))


def test_new_versions_carry_the_python_form(repo: Path) -> None:
    version = ModelRepository(repo).load("sentiment")
    assert (version.path / MODEL_PY).read_text() == MODEL_PY_TEXT
    text = (repo / "sentiment" / CONFIG).read_text()
    assert 'backend: "python"' in text
    assert "max_batch_size: 64" in text


def test_gpu_form_is_an_ensemble_the_embedded_server_still_reads(repo: Path) -> None:
    configs = write_gpu_form(repo, "sentiment", Platform.ONNXRUNTIME)
    assert [c.name for c in configs] == [
        "sentiment",
        "sentiment_tokenizer",
        "sentiment_onnx",
        "sentiment_postprocess",
    ]
    ensemble = (repo / "sentiment" / CONFIG).read_text()
    assert 'platform: "ensemble"' in ensemble
    assert ensemble.count("model_name:") == 3
    onnx = (repo / "sentiment_onnx" / CONFIG).read_text()
    assert 'platform: "onnxruntime_onnx"' in onnx
    assert "KIND_GPU" in onnx
    assert 'name: "tensorrt"' in onnx
    assert 'value: "FP16"' in onnx
    # Engines are cached on the volume the Helm chart mounts, not rebuilt on every start.
    assert 'key: "trt_engine_cache_enable" value: "1"' in onnx
    assert f'key: "trt_engine_cache_path" value: "{TRT_ENGINE_CACHE}"' in onnx
    number = str(ModelRepository(repo).versions("sentiment")[-1])
    assert (repo / "sentiment_onnx" / number / "model.onnx").is_file()
    assert (repo / "sentiment_tokenizer" / number / "tokenizer.json").is_file()
    assert (repo / "sentiment_tokenizer" / number / MODEL_PY).is_file()
    assert not list(repo.glob(".partial-*"))
    # The embedded server serves only models with a manifest.
    assert ModelRepository(repo).servable() == ["sentiment"]
    # Rewriting the python form removes the members again.
    write_python_form(repo, "sentiment")
    assert ModelRepository(repo).models() == ["sentiment"]


def test_gpu_engine_follows_the_manifest_and_batching_options(repo: Path) -> None:
    batching = TritonBatching(
        max_batch_size=16,
        preferred_batch_sizes=(4, 8, 32),
        delay_us=100,
        instances=2,
        trt_fp16=False,
    )
    configs = write_form(repo, "sentiment", Platform.ONNXRUNTIME, batching)
    onnx = configs[2]
    assert onnx.max_batch_size == 16
    assert onnx.dynamic_batching is not None
    assert onnx.dynamic_batching.preferred_batch_sizes == (4, 8)  # 32 > max_batch_size: dropped
    assert onnx.dynamic_batching.max_queue_delay_microseconds == 100
    assert onnx.accelerator is None
    assert onnx.instance_groups[0].count == 2


def test_tensorrt_form_needs_a_built_engine(repo: Path) -> None:
    with pytest.raises(RepositoryError, match="no plan engine"):
        write_gpu_form(repo, "sentiment", Platform.TENSORRT)
    assert ModelRepository(repo).models() == ["sentiment"]  # nothing half-written


def test_tensorrt_config_uses_the_plan_platform(repo: Path) -> None:
    manifest = ModelRepository(repo).load("sentiment").manifest
    configs = ensemble_configs("sentiment", manifest, Platform.TENSORRT)
    assert configs[2].platform == "tensorrt_plan"
    assert configs[2].accelerator is None


def test_onnx_check_catches_disagreements(repo: Path) -> None:
    version = ModelRepository(repo).load("sentiment")
    manifest = version.manifest
    onnx_config = ensemble_configs("sentiment", manifest, Platform.ONNXRUNTIME)[2]
    graph = version.file(manifest.engines["fp32"].file)  # what the GPU form serves
    check_onnx(onnx_config, graph)  # agrees
    three = dataclasses.replace(onnx_config, outputs=(Tensor("logits", DataType.FP32, (3,)),))
    with pytest.raises(ConfigError, match=r"logits: config dims \[-1, 3\]"):
        check_onnx(three, graph)
    fp16 = dataclasses.replace(onnx_config, outputs=(Tensor("logits", DataType.FP16, (2,)),))
    with pytest.raises(ConfigError, match="TYPE_FP16"):
        check_onnx(fp16, graph)
    renamed = dataclasses.replace(onnx_config, outputs=(Tensor("scores", DataType.FP32, (2,)),))
    with pytest.raises(ConfigError, match="config outputs"):
        check_onnx(renamed, graph)
    unbatched = dataclasses.replace(onnx_config, max_batch_size=0, dynamic_batching=None)
    with pytest.raises(ConfigError, match="disagree"):
        check_onnx(unbatched, graph)


def test_ensemble_check_catches_wiring_mistakes(repo: Path) -> None:
    manifest = ModelRepository(repo).load("sentiment").manifest
    ensemble, tokenizer, onnx, post = ensemble_configs("sentiment", manifest, Platform.ONNXRUNTIME)
    with pytest.raises(ConfigError, match="no member model sentiment_onnx"):
        check_ensemble(ensemble, [tokenizer, post])
    small = dataclasses.replace(onnx, max_batch_size=8, dynamic_batching=None)
    with pytest.raises(ConfigError, match="max_batch_size 8 < 64"):
        check_ensemble(ensemble, [tokenizer, small, post])
    int32 = dataclasses.replace(
        onnx, inputs=tuple(Tensor(t.name, DataType.INT32, t.dims) for t in onnx.inputs)
    )
    with pytest.raises(ConfigError, match="TYPE_INT64, sentiment_onnx.input_ids takes TYPE_INT32"):
        check_ensemble(ensemble, [tokenizer, int32, post])
    no_probs = dataclasses.replace(post, outputs=post.outputs[:1])
    with pytest.raises(ConfigError, match="has no output PROBABILITIES"):
        check_ensemble(ensemble, [tokenizer, onnx, no_probs])
    skipped = dataclasses.replace(ensemble, ensemble_steps=ensemble.ensemble_steps[1:])
    with pytest.raises(ConfigError, match="reads 'input_ids', which no earlier step produces"):
        check_ensemble(skipped, [tokenizer, onnx, post])


def test_python_form_is_refused_for_a_missing_model(repo: Path) -> None:
    from sentiserve.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="no model 'other'"):
        write_python_form(repo, "other")
    with pytest.raises(ConfigError, match="python form is one model"):
        ensemble_configs("x", ModelRepository(repo).load("sentiment").manifest, Platform.PYTHON)


def test_the_gpu_member_warms_up_every_first_batch_shape_before_ready(repo: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    manifest = ModelRepository(repo).load("sentiment").manifest
    batching = TritonBatching(max_batch_size=16, preferred_batch_sizes=(4, 8, 32))
    write_form(repo, "sentiment", Platform.ONNXRUNTIME, batching)
    # Parsed by Triton's own message: the field names and enum values are Triton's.
    onnx = text_format.Parse((repo / "sentiment_onnx" / CONFIG).read_text(), mc.ModelConfig())
    assert [(w.name, w.batch_size) for w in onnx.model_warmup] == [
        ("batch_1", 1),
        ("batch_4", 4),
        ("batch_8", 8),
        ("batch_16", 16),
    ]
    for sample in onnx.model_warmup:
        assert set(sample.inputs) == set(manifest.inputs)
        for tensor in sample.inputs.values():
            # The tokenizer member pads every text to max_length: the one shape served.
            assert list(tensor.dims) == [manifest.max_length]
            assert tensor.data_type == mc.TYPE_INT64
            assert tensor.zero_data
    # One TensorRT engine for every batch size at that length, built by the warm-up.
    (accelerator,) = onnx.optimization.execution_accelerators.gpu_execution_accelerator
    shapes = {k: v for k, v in accelerator.parameters.items() if k.startswith("trt_profile")}
    length = manifest.max_length
    assert shapes == {
        f"trt_profile_{bound}_shapes": ",".join(f"{i}:{n}x{length}" for i in manifest.inputs)
        for bound, n in (("min", 1), ("opt", 8), ("max", 16))
    }
    # The members on the CPU need none; the ensemble cannot have one.
    for name in ("sentiment", "sentiment_tokenizer", "sentiment_postprocess"):
        config = text_format.Parse((repo / name / CONFIG).read_text(), mc.ModelConfig())
        assert not config.model_warmup
