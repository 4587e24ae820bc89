"""Typed Triton config: rendering and refusal of invalid combinations."""

from __future__ import annotations

import pytest

from sentiserve.errors import ConfigError
from sentiserve.repository.config import (
    DataType,
    DynamicBatching,
    InstanceGroup,
    InstanceKind,
    ModelConfig,
    Tensor,
)
from sentiserve.repository.triton_configs import classify_config

IDS = Tensor("input_ids", DataType.INT64, (-1,))
LOGITS = Tensor("logits", DataType.FP32, (2,))


def test_classify_config_renders() -> None:
    text = classify_config("sentiment", ["neg", "neu", "pos"]).to_pbtxt()
    assert 'name: "sentiment"' in text
    assert 'backend: "python"' in text
    assert "max_batch_size: 64" in text
    assert '{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }' in text
    assert '{ name: "PROBABILITIES" data_type: TYPE_FP32 dims: [ 3 ] }' in text
    assert "dynamic_batching {" in text
    assert "instance_group { kind: KIND_CPU count: 1 }" in text
    assert '"sentiserve_labels" value: { string_value: "[\\"neg\\", ' in text


def test_batching_config_renders() -> None:
    config = ModelConfig(
        name="sentiment_onnx",
        platform="onnxruntime_onnx",
        max_batch_size=32,
        inputs=(IDS,),
        outputs=(LOGITS,),
        dynamic_batching=DynamicBatching((8, 32), 2000),
        instance_groups=(InstanceGroup(InstanceKind.GPU, 1),),
        parameters={"note": 'say "hi"'},
    )
    text = config.to_pbtxt()
    assert "preferred_batch_size: [ 8, 32 ]" in text
    assert "max_queue_delay_microseconds: 2000" in text
    assert "instance_group { kind: KIND_GPU count: 1 }" in text
    assert 'string_value: "say \\"hi\\""' in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_batch_size": 8, "dynamic_batching": DynamicBatching((16,))},
            "exceed max_batch_size",
        ),
        ({"dynamic_batching": DynamicBatching()}, "needs max_batch_size > 0"),
        ({"backend": "python"}, "exactly one of backend and platform"),
        ({"outputs": (Tensor("input_ids", DataType.FP32, (2,)),)}, "duplicate tensor names"),
    ],
)
def test_invalid_configs_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "name": "m",
        "platform": "onnxruntime_onnx",
        "inputs": (IDS,),
        "outputs": (LOGITS,),
    }
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_invalid_tensors_are_refused() -> None:
    with pytest.raises(ConfigError, match="dims"):
        Tensor("x", DataType.FP32, (0,))
    with pytest.raises(ConfigError, match="invalid tensor name"):
        Tensor("bad name", DataType.FP32, (1,))
    assert DataType.STRING.v2 == "BYTES"
    assert DataType.FP32.v2 == "FP32"
