"""Typed Triton model configuration, rendered to ``config.pbtxt``.

``config.pbtxt`` files are generated from these values and never edited by hand; invalid
combinations are refused when the value is built, not when Triton reads the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sentiserve.errors import ConfigError


class DataType(StrEnum):
    """Triton tensor data types (``TYPE_*`` in config.pbtxt) we use."""

    STRING = "TYPE_STRING"
    FP32 = "TYPE_FP32"
    FP16 = "TYPE_FP16"
    INT64 = "TYPE_INT64"
    INT32 = "TYPE_INT32"

    @property
    def v2(self) -> str:
        """The KServe v2 protocol's name for this type."""
        return "BYTES" if self is DataType.STRING else self.value.removeprefix("TYPE_")


class InstanceKind(StrEnum):
    CPU = "KIND_CPU"
    GPU = "KIND_GPU"
    MODEL = "KIND_MODEL"


@dataclass(frozen=True)
class Tensor:
    """One model input or output. ``dims`` exclude the batch dimension when batching."""

    name: str
    data_type: DataType
    dims: tuple[int, ...]
    optional: bool = False
    """An input a request may leave out (``optional: true``)."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ConfigError(f"invalid tensor name {self.name!r}")
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise ConfigError(f"tensor {self.name}: dims must be positive or -1, got {self.dims}")


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher: preferred sizes and how long a request may wait for them."""

    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0

    def __post_init__(self) -> None:
        if self.max_queue_delay_microseconds < 0:
            raise ConfigError("max_queue_delay_microseconds must be >= 0")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ConfigError("preferred batch sizes must be >= 1")


@dataclass(frozen=True)
class InstanceGroup:
    kind: InstanceKind = InstanceKind.CPU
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError("instance_group count must be >= 1")


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble. The maps go from the step model's tensor names to the
    ensemble's tensor names."""

    model_name: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]
    model_version: int = -1


TRT_ENGINE_CACHE = "/trt-cache"
"""Where Triton pods keep TensorRT engines (a volume in the Helm chart)."""


@dataclass(frozen=True)
class TensorRTAccelerator:
    """ONNX Runtime's TensorRT execution accelerator on GPU (``optimization`` block).

    Building the engines takes minutes on a T4, so they are cached in ``engine_cache_path``
    (empty: no cache, every start and every new shape rebuilds).
    """

    precision_mode: str = "FP16"
    max_workspace_size_bytes: int = 1 << 30
    engine_cache_path: str = TRT_ENGINE_CACHE
    profile: tuple[dict[str, tuple[int, ...]], ...] = ()
    """Optional (min, opt, max) input shapes, each ``{input: shape}``: one engine built for
    the whole range, instead of one per new input shape as requests bring them."""

    def __post_init__(self) -> None:
        if self.precision_mode not in ("FP32", "FP16"):
            raise ConfigError(
                f"TensorRT precision_mode must be FP32 or FP16, not {self.precision_mode}"
            )
        if self.profile and len(self.profile) != 3:
            raise ConfigError("a TensorRT profile is three shape sets: min, opt and max")


@dataclass(frozen=True)
class Warmup:
    """A ``model_warmup`` sample: Triton runs it (zero-filled inputs of these shapes, per
    batch item) before it reports the model ready, so engines built lazily (ONNX Runtime's
    TensorRT accelerator builds one per new input shape) are built before the first
    request, not during it."""

    name: str
    batch_size: int
    inputs: tuple[tuple[str, DataType, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"warm-up {self.name}: batch_size must be >= 1")
        if any(d < 1 for _, _, dims in self.inputs for d in dims):
            raise ConfigError(f"warm-up {self.name}: its input shapes must be concrete")


@dataclass(frozen=True)
class ModelConfig:
    """A Triton model configuration: exactly one of ``backend`` or ``platform``.

    ``platform: "ensemble"`` needs ``ensemble_steps``; see :func:`check_ensemble` for the
    checks that need the member models' configs too.
    """

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    backend: str = ""
    platform: str = ""
    max_batch_size: int = 0
    dynamic_batching: DynamicBatching | None = None
    instance_groups: tuple[InstanceGroup, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    accelerator: TensorRTAccelerator | None = None
    warmup: tuple[Warmup, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.backend) == bool(self.platform):
            raise ConfigError(f"model {self.name}: set exactly one of backend and platform")
        if (self.platform == "ensemble") != bool(self.ensemble_steps):
            raise ConfigError(f"model {self.name}: ensemble steps go with platform ensemble only")
        if self.platform == "ensemble" and (self.dynamic_batching or self.instance_groups):
            raise ConfigError(f"model {self.name}: an ensemble has no batcher or instances")
        if self.max_batch_size < 0:
            raise ConfigError(f"model {self.name}: max_batch_size must be >= 0")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(names) != len(set(names)):
            raise ConfigError(f"model {self.name}: duplicate tensor names in {names}")
        if not self.inputs or not self.outputs:
            raise ConfigError(f"model {self.name}: needs at least one input and one output")
        batching = self.dynamic_batching
        if batching is not None:
            if self.max_batch_size == 0:
                raise ConfigError(f"model {self.name}: dynamic batching needs max_batch_size > 0")
            too_big = [s for s in batching.preferred_batch_sizes if s > self.max_batch_size]
            if too_big:
                raise ConfigError(
                    f"model {self.name}: preferred batch sizes {too_big} exceed "
                    f"max_batch_size {self.max_batch_size}"
                )

    def to_pbtxt(self) -> str:
        """Render in protobuf text format, as Triton reads it."""
        lines = [f'name: "{self.name}"']
        if self.backend:
            lines.append(f'backend: "{self.backend}"')
        else:
            lines.append(f'platform: "{self.platform}"')
        lines.append(f"max_batch_size: {self.max_batch_size}")
        lines += _tensors("input", self.inputs)
        lines += _tensors("output", self.outputs)
        if self.dynamic_batching is not None:
            b = self.dynamic_batching
            lines.append("dynamic_batching {")
            if b.preferred_batch_sizes:
                sizes = ", ".join(str(s) for s in b.preferred_batch_sizes)
                lines.append(f"  preferred_batch_size: [ {sizes} ]")
            lines.append(f"  max_queue_delay_microseconds: {b.max_queue_delay_microseconds}")
            lines.append("}")
        for group in self.instance_groups:
            lines.append(f"instance_group {{ kind: {group.kind.value} count: {group.count} }}")
        if self.ensemble_steps:
            lines += ["ensemble_scheduling {", "  step ["]
            for i, step in enumerate(self.ensemble_steps):
                lines.append(
                    f'    {{ model_name: "{step.model_name}" model_version: {step.model_version}'
                )
                for key, value in step.input_map.items():
                    lines.append(f'      input_map {{ key: "{key}" value: "{value}" }}')
                for key, value in step.output_map.items():
                    lines.append(f'      output_map {{ key: "{key}" value: "{value}" }}')
                lines.append("    }" + ("," if i < len(self.ensemble_steps) - 1 else ""))
            lines += ["  ]", "}"]
        if self.accelerator is not None:
            a = self.accelerator
            lines += [
                "optimization { execution_accelerators { gpu_execution_accelerator: [ {",
                '  name: "tensorrt"',
                f'  parameters {{ key: "precision_mode" value: "{a.precision_mode}" }}',
                f'  parameters {{ key: "max_workspace_size_bytes" '
                f'value: "{a.max_workspace_size_bytes}" }}',
            ]
            for bound, shapes in zip(("min", "opt", "max"), a.profile, strict=False):
                text = ",".join(f"{k}:{'x'.join(str(d) for d in v)}" for k, v in shapes.items())
                key = f"trt_profile_{bound}_shapes"
                lines.append(f'  parameters {{ key: "{key}" value: "{text}" }}')
            if a.engine_cache_path:
                lines += [
                    '  parameters { key: "trt_engine_cache_enable" value: "1" }',
                    '  parameters { key: "trt_engine_cache_path" '
                    f'value: "{a.engine_cache_path}" }}',
                ]
            lines.append("} ] } }")
        if self.warmup:
            lines.append("model_warmup [")
            for i, sample in enumerate(self.warmup):
                lines.append(f'  {{ name: "{sample.name}" batch_size: {sample.batch_size}')
                for name, data_type, dims in sample.inputs:
                    shape = ", ".join(str(d) for d in dims)
                    lines.append(
                        f'    inputs {{ key: "{name}" value: {{ data_type: {data_type.value} '
                        f"dims: [ {shape} ] zero_data: true }} }}"
                    )
                lines.append("  }" + ("," if i < len(self.warmup) - 1 else ""))
            lines.append("]")
        for key, value in sorted(self.parameters.items()):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}')
        return "\n".join(lines) + "\n"


def _tensors(kind: str, tensors: Sequence[Tensor]) -> list[str]:
    out = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dims = ", ".join(str(d) for d in t.dims)
        comma = "," if i < len(tensors) - 1 else ""
        optional = " optional: true" if t.optional else ""
        out.append(
            f'  {{ name: "{t.name}" data_type: {t.data_type.value} dims: [ {dims} ]{optional} }}'
            f"{comma}"
        )
    out.append("]")
    return out
