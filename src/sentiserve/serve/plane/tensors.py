"""The embedded plane's tensors: what a text model's and the raw engine model's KServe v2
requests must hold, checked and turned into texts or token id rows, and the outputs a
request asked for."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sentiserve.errors import InvalidInputError, PayloadTooLargeError
from sentiserve.serve.plane import Limits, Tensor
from sentiserve.serve.registry import LoadedModel

RAW_SUFFIX = "_onnx"
"""``<model>_onnx`` is the raw engine of ``<model>``: token ids in, logits out."""
TEXT_INPUT = "TEXT"
TEXT_PAIR_INPUT = "TEXT_PAIR"
"""The optional second text of each pair (NLI, cross-encoders)."""
RAW_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Inputs of the raw engine model; ``token_type_ids`` is accepted and must be all zeros."""


def check_ids(
    input_ids: npt.NDArray[np.int64],
    attention_mask: npt.NDArray[np.int64] | None,
    model: LoadedModel,
    limits: Limits,
) -> list[list[int]]:
    """Validate right-padded token id rows and strip their padding."""
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise InvalidInputError("input_ids must have shape [batch, sequence], both > 0")
    if input_ids.shape[0] > limits.max_texts:
        raise PayloadTooLargeError(
            f"{input_ids.shape[0]} rows in one request; the limit is {limits.max_texts}"
        )
    tokenizer = model.served.tokenizer
    if input_ids.shape[1] > tokenizer.max_length:
        raise InvalidInputError(
            f"sequence length {input_ids.shape[1]} exceeds the model's {tokenizer.max_length}"
        )
    if input_ids.min() < 0 or input_ids.max() >= tokenizer.vocab_size:
        raise InvalidInputError(f"token ids must be within 0..{tokenizer.vocab_size - 1}")
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise InvalidInputError("attention_mask must have the shape of input_ids")
    if not np.isin(attention_mask, (0, 1)).all():
        raise InvalidInputError("attention_mask must hold only 0 and 1")
    lengths = attention_mask.sum(axis=1)
    # Right padding: each row's mask is ones, then zeros.
    prefix = np.arange(input_ids.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(prefix, attention_mask.astype(bool)) or (lengths == 0).any():
        raise InvalidInputError("attention_mask must be ones then zeros (right padding)")
    return [row[:n].tolist() for row, n in zip(input_ids, lengths, strict=True)]


def texts_of(
    tensors: dict[str, Tensor], model: str
) -> tuple[list[str], list[str] | None, list[int]]:
    """The texts of a text model's request (input ``TEXT``: BYTES of UTF-8, shape ``[n]`` or
    ``[n, 1]``), the second texts of pairs (optional input ``TEXT_PAIR``, the same shape), and
    that shape."""
    if TEXT_INPUT not in tensors or set(tensors) - {TEXT_INPUT, TEXT_PAIR_INPUT}:
        raise InvalidInputError(
            f"model {model} takes input {TEXT_INPUT} (BYTES) and optionally {TEXT_PAIR_INPUT}; "
            f"got {', '.join(sorted(tensors)) or 'none'}"
        )
    texts = _utf8_column(tensors[TEXT_INPUT])
    shape = tensors[TEXT_INPUT].shape
    if TEXT_PAIR_INPUT not in tensors:
        return texts, None, shape
    pairs = _utf8_column(tensors[TEXT_PAIR_INPUT])
    if tensors[TEXT_PAIR_INPUT].shape != shape:
        raise InvalidInputError(
            f"input {TEXT_PAIR_INPUT}: shape {tensors[TEXT_PAIR_INPUT].shape} differs from "
            f"{TEXT_INPUT}'s {shape}"
        )
    return texts, pairs, shape


def _utf8_column(tensor: Tensor) -> list[str]:
    name = tensor.name
    if tensor.datatype != "BYTES" or not isinstance(tensor.data, list):
        raise InvalidInputError(f"input {name}: expected datatype BYTES, got {tensor.datatype}")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidInputError(f"input {name}: shape must be [n] or [n, 1]")
    out = []
    for i, raw in enumerate(tensor.data):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"input {name}: element {i} is not valid UTF-8") from exc
    return out


def raw_arrays(
    tensors: dict[str, Tensor], model: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """``input_ids`` and ``attention_mask`` as int64 matrices, checked against their shapes."""
    unknown = set(tensors) - set(RAW_INPUTS)
    if unknown or "input_ids" not in tensors:
        raise InvalidInputError(
            f"model {model} takes input_ids and optionally attention_mask and token_type_ids "
            f"(INT64 or INT32); got {', '.join(sorted(tensors))}"
        )
    arrays: dict[str, npt.NDArray[np.int64]] = {}
    for name, tensor in tensors.items():
        if tensor.datatype not in ("INT64", "INT32") or isinstance(tensor.data, list):
            raise InvalidInputError(f"input {name}: expected INT64 or INT32, got {tensor.datatype}")
        if len(tensor.shape) != 2:
            raise InvalidInputError(f"input {name}: expected shape [batch, sequence]")
        arrays[name] = np.asarray(tensor.data, dtype=np.int64).reshape(tensor.shape)
    types = arrays.get("token_type_ids")
    if types is not None and types.any():
        raise InvalidInputError("token_type_ids must be all zeros (single-text classifier)")
    return arrays["input_ids"], arrays.get("attention_mask")


def select_outputs(requested: list[str], outputs: list[Tensor]) -> list[Tensor]:
    """The outputs a request asked for (all when it named none), in the model's order."""
    wanted = set(requested)
    unknown = wanted - {t.name for t in outputs}
    if unknown:
        raise InvalidInputError(f"unknown output(s) {', '.join(sorted(unknown))}")
    return [t for t in outputs if not wanted or t.name in wanted]
