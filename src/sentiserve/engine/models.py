"""The classifier architectures sentiserve trains, exports and serves.

Hugging Face's ``BertForSequenceClassification`` classifies from the pooler: the [CLS]
token through a dense + tanh layer. The default base model (all-MiniLM-L6-v2) was trained as
a sentence encoder with *mean pooling*, so its pooler is untrained noise and its [CLS] token
carries little; mean pooling over the real tokens is what the encoder learned to produce.
``MeanPooledClassifier`` is that head. A model config with ``sentiserve_pooling: "mean"``
loads as it; anything else loads with Hugging Face's auto class, as before.

Mean pooling keeps results independent of padding: padded positions are zeroed by the mask
and the sum is divided by the real token count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

POOLING_KEY = "sentiserve_pooling"
POOLINGS = ("cls", "mean")


def classifier_class(pooling: str) -> Any:
    """The model class for ``pooling`` (``cls``: Hugging Face's own)."""
    from transformers import AutoModelForSequenceClassification

    if pooling == "mean":
        return _mean_pooled_class()
    return AutoModelForSequenceClassification


def load_classifier(path: str | Path, **kwargs: Any) -> Any:
    """A fine-tuned classifier from a folder, in the class its config names."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path))
    pooling = getattr(config, POOLING_KEY, "cls")
    return classifier_class(pooling).from_pretrained(str(path), **kwargs)


_CLASS: Any = None


def _mean_pooled_class() -> Any:
    """Built on first use, so importing this module does not import torch."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import torch
    from transformers import BertForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPooledClassifier(BertForSequenceClassification):  # type: ignore[no-untyped-call]
        """A BERT encoder, mean pooling over real tokens, dropout, a linear classifier."""

        def __init__(self, config: Any) -> None:
            setattr(config, POOLING_KEY, "mean")
            super().__init__(config)
            self.bert.pooler = None  # unused: the head reads every token, not the pooler

        def forward(
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            token_type_ids: Any = None,
            labels: Any = None,
            **kwargs: Any,
        ) -> Any:
            kwargs.pop("return_dict", None)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                **kwargs,
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            logits = self.classifier(self.dropout(pooled))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(
                    logits.float(), labels.view(-1), label_smoothing=0.0
                )
            return SequenceClassifierOutput(loss=loss, logits=logits)

    _CLASS = MeanPooledClassifier
    return _CLASS
