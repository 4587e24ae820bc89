"""Layer-wise learning-rate decay: each parameter in one AdamW group, the head at the peak
rate, each layer below at the decay times the one above, no weight decay on biases and norms."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiserve.errors import ConfigError
from sentiserve.train.trainer import TrainConfig, parameter_groups


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_groups_cover_every_parameter_once_with_decayed_rates(
    tiny_bert: Path, pooling: str
) -> None:
    from sentiserve.engine.models import classifier_class

    model = classifier_class(pooling).from_pretrained(str(tiny_bert), num_labels=2)
    layers = model.config.num_hidden_layers
    config = TrainConfig(learning_rate=1e-3, layer_decay=0.5, weight_decay=0.01, pooling=pooling)
    groups = parameter_groups(model, config)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)
    assert len(seen) == len(set(seen))
    rate = {
        name: g["lr"]
        for g in groups
        for name, p in model.named_parameters()
        if any(p is q for q in g["params"])
    }
    decay = {
        name: g["weight_decay"]
        for g in groups
        for name, p in model.named_parameters()
        if any(p is q for q in g["params"])
    }
    assert rate["classifier.weight"] == pytest.approx(1e-3)
    top = f"bert.encoder.layer.{layers - 1}.attention.self.query.weight"
    assert rate[top] == pytest.approx(1e-3 * 0.5)
    assert rate["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(
        1e-3 * 0.5**layers
    )
    assert rate["bert.embeddings.word_embeddings.weight"] == pytest.approx(
        1e-3 * 0.5 ** (layers + 1)
    )
    assert decay["classifier.weight"] == 0.01
    assert decay["classifier.bias"] == 0.0
    assert decay["bert.embeddings.LayerNorm.weight"] == 0.0


def test_no_decay_is_one_rate(tiny_bert: Path) -> None:
    from sentiserve.engine.models import classifier_class

    model = classifier_class("cls").from_pretrained(str(tiny_bert), num_labels=2)
    groups = parameter_groups(model, TrainConfig(learning_rate=2e-5))
    assert {g["lr"] for g in groups} == {2e-5}


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_layer_decay_out_of_range_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="layer_decay"):
        TrainConfig(layer_decay=bad)
