"""The Triton model configs of a model version, typed and checked: the python form's one
model, and the GPU form's ensemble and its three members, each checked against the ONNX
graph or the ensemble it belongs to. :mod:`sentiserve.repository.triton` describes the forms
and writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sentiserve.engine.base import Task
from sentiserve.errors import ConfigError, RepositoryError
from sentiserve.repository.config import (
    DataType,
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    InstanceKind,
    ModelConfig,
    Tensor,
    TensorRTAccelerator,
    Warmup,
)
from sentiserve.repository.manifest import Manifest

LABELS = "sentiserve_labels"
"""Label names in class order, on the models a client calls (the gateway reads them)."""
THRESHOLDS = "sentiserve_thresholds"
"""Multi-label models: each label's threshold (JSON), for the gateway's ``labels``."""
REFERENCE = "sentiserve_reference"
"""The version and its label shares on the validation split (JSON, from the manifest's
``reference``): the gateway exports them as the label drift alert's baseline."""
TOKENIZER_MEMBER, ONNX_MEMBER, POSTPROCESS_MEMBER = "_tokenizer", "_onnx", "_postprocess"
ONNX_TYPES = {1: DataType.FP32, 10: DataType.FP16, 6: DataType.INT32, 7: DataType.INT64}


class Platform(StrEnum):
    PYTHON = "python"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class TritonBatching:
    """Triton's batching for the generated models.

    Attributes:
        max_batch_size: Most texts per request and per model execution.
        preferred_batch_sizes: Sizes the GPU model's batcher waits for (at most ``delay_us``).
        delay_us: ``max_queue_delay_microseconds`` of the GPU model (the python models
            run as soon as an instance is free; requests queue while it is busy).
        instances: Instances per model (CPU python models, GPU models).
        trt_fp16: On ``onnxruntime``, run ONNX Runtime's TensorRT accelerator in fp16.
    """

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (16, 32, 64)
    delay_us: int = 500
    instances: int = 1
    trt_fp16: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.instances < 1 or self.delay_us < 0:
            raise ConfigError("max_batch_size and instances must be >= 1, delay_us >= 0")


def _text_io(num_labels: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    inputs = (Tensor("TEXT", DataType.STRING, (1,)),)
    outputs = (
        Tensor("LABEL", DataType.STRING, (1,)),
        Tensor("PROBABILITIES", DataType.FP32, (num_labels,)),
    )
    return inputs, outputs


def classify_config(
    name: str,
    labels: list[str],
    batching: TritonBatching | None = None,
    thresholds: list[float] | None = None,
    reference: dict[str, str] | None = None,
) -> ModelConfig:
    """The python form: TEXT (and optionally TEXT_PAIR, the second text of each pair) ->
    LABEL, PROBABILITIES, batched by Triton, run on CPU. ``reference``: see
    :func:`reference_parameter`."""
    if not labels:
        raise ConfigError("a model needs at least one output label")
    b = batching or TritonBatching()
    inputs, outputs = _text_io(len(labels))
    inputs = (*inputs, Tensor("TEXT_PAIR", DataType.STRING, (1,), optional=True))
    return ModelConfig(
        name=name,
        backend="python",
        max_batch_size=b.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=0),
        instance_groups=(InstanceGroup(InstanceKind.CPU, b.instances),),
        parameters={
            "sentiserve_role": "classify",
            LABELS: json.dumps(labels),
            **({THRESHOLDS: json.dumps(thresholds)} if thresholds is not None else {}),
            **(reference or {}),
        },
    )


def reference_parameter(manifest: Manifest) -> dict[str, str]:
    """The :data:`REFERENCE` parameter of the models a client calls (none when the version
    has no label shares recorded)."""
    shares = manifest.reference.get("label_shares")
    if not shares:
        return {}
    return {REFERENCE: json.dumps({"version": manifest.version, "label_shares": shares})}


def ensemble_configs(
    name: str, manifest: Manifest, platform: Platform, batching: TritonBatching | None = None
) -> list[ModelConfig]:
    """The GPU form: the ensemble ``name`` first, then its three members."""
    if platform is Platform.PYTHON:
        raise ConfigError("the python form is one model; see classify_config")
    b = batching or TritonBatching()
    preferred = tuple(s for s in b.preferred_batch_sizes if s <= b.max_batch_size)
    num_labels = len(manifest.labels)
    thresholds = thresholds_of(manifest)
    text_in, text_out = _text_io(num_labels)
    ids = tuple(Tensor(n, DataType.INT64, (-1,)) for n in manifest.inputs)
    logits = (Tensor("logits", DataType.FP32, (num_labels,)),)
    cpu = (InstanceGroup(InstanceKind.CPU, b.instances),)
    now = DynamicBatching(max_queue_delay_microseconds=0)
    tokenizer = ModelConfig(
        name=name + TOKENIZER_MEMBER,
        backend="python",
        max_batch_size=b.max_batch_size,
        inputs=text_in,
        outputs=ids,
        dynamic_batching=now,
        instance_groups=cpu,
        parameters={
            "sentiserve_role": "tokenize",
            "sentiserve_max_length": str(manifest.max_length),
            "sentiserve_truncation": manifest.truncation.value,
            "sentiserve_pad_id": str(manifest.pad_id),
            # A fixed length, so that Triton's batcher can join any two requests on the GPU.
            "sentiserve_pad_to": str(manifest.max_length),
        },
    )
    tensorrt = platform is Platform.TENSORRT
    # Every batch size the batcher forms first (1, the preferred ones, the largest) at the
    # one padded length the tokenizer member sends: the engines for them exist at Ready.
    warm_sizes = sorted({1, *preferred, b.max_batch_size})
    warmup = tuple(
        Warmup(
            f"batch_{n}",
            n,
            tuple((t.name, t.data_type, (manifest.max_length,)) for t in ids),
        )
        for n in warm_sizes
    )
    # One TensorRT engine for every batch size at that length (the opt shape: the largest
    # preferred batch), built during the warm-up, not one per batch size as traffic brings it.
    length = manifest.max_length
    profile: tuple[dict[str, tuple[int, ...]], ...] = tuple(
        {t.name: (n, length) for t in ids}
        for n in (1, max(preferred or (b.max_batch_size,)), b.max_batch_size)
    )
    model = ModelConfig(
        name=name + ONNX_MEMBER,
        platform="tensorrt_plan" if tensorrt else "onnxruntime_onnx",
        max_batch_size=b.max_batch_size,
        inputs=ids,
        outputs=logits,
        dynamic_batching=DynamicBatching(preferred, b.delay_us),
        instance_groups=(InstanceGroup(InstanceKind.GPU, b.instances),),
        accelerator=TensorRTAccelerator("FP16", profile=profile)
        if b.trt_fp16 and not tensorrt
        else None,
        warmup=warmup,
    )
    post = ModelConfig(
        name=name + POSTPROCESS_MEMBER,
        backend="python",
        max_batch_size=b.max_batch_size,
        inputs=logits,
        outputs=text_out,
        dynamic_batching=now,
        instance_groups=cpu,
        parameters={
            "sentiserve_role": "postprocess",
            LABELS: json.dumps(manifest.labels),
            "sentiserve_temperature": json.dumps(manifest.divisor),
            "sentiserve_task": str(manifest.task),
        },
    )
    same = {n: n for n in manifest.inputs}
    ensemble = ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=b.max_batch_size,
        inputs=text_in,
        outputs=text_out,
        parameters={
            LABELS: json.dumps(manifest.labels),
            **({THRESHOLDS: json.dumps(thresholds)} if thresholds is not None else {}),
            **reference_parameter(manifest),
        },
        ensemble_steps=(
            EnsembleStep(tokenizer.name, {"TEXT": "TEXT"}, same),
            EnsembleStep(model.name, same, {"logits": "logits"}),
            EnsembleStep(
                post.name,
                {"logits": "logits"},
                {"LABEL": "LABEL", "PROBABILITIES": "PROBABILITIES"},
            ),
        ),
    )
    members = [tokenizer, model, post]
    check_ensemble(ensemble, members)
    return [ensemble, *members]


def check_ensemble(ensemble: ModelConfig, members: list[ModelConfig]) -> None:
    """Check the ensemble's wiring: every step's model exists, each tensor a step reads is an
    ensemble input or an earlier step's output with the same type, every ensemble output is
    produced, and batch sizes fit.

    Raises:
        ConfigError: naming the first problem.
    """
    by_name = {m.name: m for m in members}
    known = {t.name: t for t in ensemble.inputs}
    for step in ensemble.ensemble_steps:
        member = by_name.get(step.model_name)
        if member is None:
            raise ConfigError(f"ensemble {ensemble.name}: no member model {step.model_name}")
        if member.max_batch_size < ensemble.max_batch_size:
            raise ConfigError(
                f"ensemble {ensemble.name}: {member.name} max_batch_size "
                f"{member.max_batch_size} < {ensemble.max_batch_size}"
            )
        own_in = {t.name: t for t in member.inputs}
        own_out = {t.name: t for t in member.outputs}
        if set(step.input_map) != set(own_in):
            raise ConfigError(
                f"ensemble {ensemble.name}: step {member.name} maps inputs "
                f"{sorted(step.input_map)}, it takes {sorted(own_in)}"
            )
        for own, outer in step.input_map.items():
            source = known.get(outer)
            if source is None:
                raise ConfigError(
                    f"ensemble {ensemble.name}: {member.name} reads {outer!r}, "
                    "which no earlier step produces"
                )
            if source.data_type is not own_in[own].data_type:
                raise ConfigError(
                    f"ensemble {ensemble.name}: {outer} is "
                    f"{source.data_type.value}, {member.name}.{own} takes "
                    f"{own_in[own].data_type.value}"
                )
        for own, outer in step.output_map.items():
            if own not in own_out:
                raise ConfigError(f"ensemble {ensemble.name}: {member.name} has no output {own}")
            known[outer] = own_out[own]
    for out in ensemble.outputs:
        made = known.get(out.name)
        if made is None or made.data_type is not out.data_type or made.dims != out.dims:
            raise ConfigError(
                f"ensemble {ensemble.name}: no step produces output {out.name} "
                f"as {out.data_type.value} {list(out.dims)}"
            )


def check_onnx(config: ModelConfig, onnx_path: Path) -> None:
    """Check that ``config``'s tensors agree with the ONNX graph: names, types, ranks and
    fixed dimensions (the batch dimension included when the config batches).

    Raises:
        ConfigError: naming the first disagreement.
    """
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:
        raise RepositoryError(f"cannot read ONNX graph {onnx_path}: {exc}") from exc
    batch = config.max_batch_size > 0
    for kind, tensors, values in (
        ("input", config.inputs, graph.input),
        ("output", config.outputs, graph.output),
    ):
        graph_tensors = {v.name: v.type.tensor_type for v in values}
        if set(graph_tensors) != {t.name for t in tensors}:
            ours = sorted(t.name for t in tensors)
            raise ConfigError(
                f"{config.name}: config {kind}s {ours} != graph {kind}s "
                f"{sorted(graph_tensors)} in {onnx_path.name}"
            )
        for t in tensors:
            graph_type = graph_tensors[t.name]
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in graph_type.shape.dim]
            expected = ([-1] if batch else []) + list(t.dims)
            dtype = ONNX_TYPES.get(graph_type.elem_type)
            if dtype is not t.data_type:
                raise ConfigError(
                    f"{config.name}.{t.name}: config says {t.data_type.value}, "
                    f"graph says elem_type {graph_type.elem_type}"
                )
            if len(dims) != len(expected) or any(
                e != -1 and d != e for d, e in zip(dims, expected, strict=True)
            ):
                raise ConfigError(
                    f"{config.name}.{t.name}: config dims {expected} "
                    f"(batch first) disagree with graph dims {dims}"
                )


def thresholds_of(manifest: Manifest) -> list[float] | None:
    """A multi-label model's thresholds, for its config's parameters; None otherwise."""
    multi = manifest.task == Task.MULTI_LABEL
    return manifest.thresholds_or_default() if multi else None
