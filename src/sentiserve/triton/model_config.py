"""A model's configuration as Triton reports it (``GET /v2/models/{m}/config``, gRPC
``ModelConfig``): the repository's ``config.pbtxt`` completed the way Triton completes it, so
tools written for Triton (``perf_analyzer``, Model Analyzer, any ``get_model_config()``) read
the same answer from sentiserve's embedded server.

Triton fills in, for a model it loaded: the version policy (the latest version), pinned
memory for inputs and outputs, the preferred batch size (``max_batch_size``) of a dynamic
batcher that names none, each instance group's name (``<model>_<i>``), count (1) and kind
(CPU here: these servers run models on the CPU unless a GPU form says otherwise), the backend
of a platform, and the default model file of a backend. Over HTTP it prints every field,
defaults included, with 64-bit integers as JSON numbers; over gRPC it sends the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as mc

from sentiserve.errors import ModelLoadError

DEFAULT_FILENAMES = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
}
PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
}
INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def read_config(path: Path) -> Any:
    """``config.pbtxt`` as Triton completes it (a ``ModelConfig`` message).

    Raises:
        ModelLoadError: The file is missing or not a model configuration.
    """
    try:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ModelLoadError(f"cannot read the model configuration {path}: {exc}") from exc
    if not config.name:
        config.name = path.parent.name
    return complete(config)


def complete(config: Any) -> Any:
    """``config`` with the fields Triton fills in (see the module docstring)."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if not config.backend and config.platform in PLATFORM_BACKENDS:
        config.backend = PLATFORM_BACKENDS[config.platform]
    if config.platform == "ensemble":
        config.model_transaction_policy.SetInParent()
        return config
    optimization = config.optimization
    for pinned in (optimization.input_pinned_memory, optimization.output_pinned_memory):
        if not pinned.ListFields():
            pinned.enable = True
    batcher = config.dynamic_batching
    batching = config.HasField("dynamic_batching") and config.max_batch_size > 0
    if batching and not batcher.preferred_batch_size:
        batcher.preferred_batch_size.append(config.max_batch_size)
    if not config.instance_group:
        config.instance_group.add()
    for index, group in enumerate(config.instance_group):
        group.name = group.name or f"{config.name}_{index}"
        group.count = group.count or 1
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = (
                mc.ModelInstanceGroup.KIND_GPU if group.gpus else mc.ModelInstanceGroup.KIND_CPU
            )
    if not config.default_model_filename and config.backend in DEFAULT_FILENAMES:
        config.default_model_filename = DEFAULT_FILENAMES[config.backend]
    return config


def raw_engine_config(name: str, labels: int, max_batch_size: int) -> Any:
    """The configuration of the embedded server's raw engine model ``<model>_onnx``: token
    ids in, logits out, as Triton would report an ONNX Runtime model."""
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    for tensor in ("input_ids", "attention_mask", "token_type_ids"):
        config.input.add(name=tensor, data_type=mc.TYPE_INT64, dims=[-1])
    config.output.add(name="logits", data_type=mc.TYPE_FP32, dims=[labels])
    config.dynamic_batching.SetInParent()
    return complete(config)


def to_json(config: Message) -> dict[str, Any]:
    """Triton's HTTP answer for ``config``: every field, defaults included, enums by name,
    64-bit integers as numbers (protobuf's JSON writes them as strings)."""
    doc = json_format.MessageToDict(
        config, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return _numbers(config, doc)


def _numbers(message: Message, doc: dict[str, Any]) -> dict[str, Any]:
    for field in message.DESCRIPTOR.fields:
        if field.name not in doc:
            continue
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if entry.message_type is not None:
                    _numbers(item, doc[field.name][str(key)])
                elif entry.type in INT64:
                    doc[field.name][str(key)] = int(item)
        elif field.message_type is not None:
            items = list(value) if _repeated(field) else [value]
            docs = doc[field.name] if _repeated(field) else [doc[field.name]]
            for item, sub in zip(items, docs, strict=True):
                _numbers(item, sub)
        elif field.type in INT64:
            doc[field.name] = [int(v) for v in value] if _repeated(field) else int(value)
    return doc


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
