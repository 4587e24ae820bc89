"""ONNX export: dynamic axes, inputs, and the parity check failing for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentiserve.errors import ExportError
from sentiserve.export import onnx as onnx_export


def test_export_has_dynamic_axes_and_passes_parity(tiny_bert: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    result = onnx_export.export(
        tiny_bert, out, texts=["good film", "bad bad film " * 20], max_length=64
    )
    assert result.max_abs_diff <= onnx_export.PARITY_TOLERANCE
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    assert onnx.load(str(out)).opset_import[0].version >= 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in ((1, 3), (5, 40)):
        feeds = {i.name: np.ones(shape, dtype=np.int64) for i in session.get_inputs()}
        assert session.run(["logits"], feeds)[0].shape == (shape[0], 2)


def test_parity_failure_names_the_number(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real mismatch: the classifier's bias changes between export and the parity check
    (the one fault this test injects, by wrapping ``parity``)."""
    import torch

    real_parity = onnx_export.parity

    def parity_after_change(wrapper, *args, **kwargs):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            wrapper.model.classifier.bias.add_(0.5)
        return real_parity(wrapper, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "parity", parity_after_change)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"max \|Δlogit\| = 0.5 > 0.0001"):
        onnx_export.export(tiny_bert, out, texts=["good film"], max_length=64)
    assert not out.exists()
    assert not list(tmp_path.glob("*.onnx")), "half-written export left behind"


def test_old_opset_and_long_max_length_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 13 is too old"):
        onnx_export.export(tiny_bert, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ExportError, match="max_length 256 exceeds the model's 128 position"):
        onnx_export.export(tiny_bert, tmp_path / "m.onnx", max_length=256)
