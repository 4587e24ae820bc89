"""Build every engine variant from the exported graph, measure each, pick the defaults."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve.data.types import Corpus, Examples
from sentiserve.engine.base import Task
from sentiserve.engine.onnxruntime import OnnxRuntimeEngine, device, providers_for
from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.errors import OptimizeError
from sentiserve.optimize import fusion, quantize, tensorrt
from sentiserve.optimize.checks import VariantReport, check_variant

logger = logging.getLogger(__name__)

FILES = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "int8_dynamic": "model.int8-dynamic.onnx",
    "fp16": "model.fp16.onnx",
    "tensorrt": "model.plan",
}
"""Engine variant -> file name inside a model version folder."""
SHIPPED = ("fp32", "int8", "fp16", "tensorrt")
"""Variants copied into the model repository (dynamic int8 is measured, never served)."""
REPORT_FILE = "optimize.json"
RECIPE_VERSION = 3
"""Bumped whenever how a variant is built or checked changes, so builds redo the stage."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class OptimizeSettings:
    """How much of the held-out split the checks read.

    Attributes:
        invariance_texts: Texts each run alone and inside a batch of 33.
        throughput_texts: Texts timed in batches of 8.
        calibration_texts: Training texts for static int8 ranges.
        held_out_limit: Score on at most this many held-out texts (None: all).
        threads: ONNX Runtime intra-op threads (None: one per core).
    """

    invariance_texts: int = 300
    throughput_texts: int = 512
    calibration_texts: int = quantize.CALIBRATION_TEXTS
    held_out_limit: int | None = None
    threads: int | None = None
    variants: tuple[str, ...] = ("fp32", "int8", "int8_dynamic", "fp16", "tensorrt")


@dataclass
class OptimizeResult:
    """Variant files in ``folder``, their reports, and the default engine per device."""

    folder: Path
    files: dict[str, str] = field(default_factory=dict)
    reports: dict[str, VariantReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fusions: dict[str, int] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "reports": {k: v.to_dict() for k, v in self.reports.items()},
            "skipped": self.skipped,
            "fusions": self.fusions,
            "defaults": self.defaults,
            "calibration": self.calibration,
            "reference": self.reference,
        }


def choose_defaults(reports: dict[str, VariantReport]) -> dict[str, str]:
    """On the CPU static int8 if eligible, else fp32; on CUDA, fp16 if eligible, else fp32.

    A fixed order, not the measured throughput: a default that follows a timing makes two
    builds of the same inputs differ whenever the variants' speeds are within the noise (CI
    caught it with the tiny test model). int8 is the faster one at the sizes we ship
    (MiniLM, batch 8: 716 against 492 seq/s, benchmarks/RESULTS.md), and the throughput is
    still measured and reported. fp32 is the fallback everywhere: it is the reference the
    others are measured against.
    """
    eligible = [v for v in ("int8", "fp32") if v in reports and reports[v].eligible]
    best_cpu = eligible[0] if eligible else "fp32"
    cuda = "fp16" if "fp16" in reports and reports["fp16"].eligible else "fp32"
    return {"cpu": best_cpu, "cuda": cuda}


def optimize(
    raw_onnx: Path,
    model_dir: Path,
    out: Path,
    corpus: Corpus,
    *,
    max_length: int,
    settings: OptimizeSettings | None = None,
    progress: Progress = lambda _msg: None,
) -> OptimizeResult:
    """Fuse, quantize and convert ``raw_onnx``; measure every variant on ``corpus.test``.

    ``model_dir`` is the fine-tuned model folder (its ``tokenizer.json`` and ``config.json``).
    """
    settings = settings or OptimizeSettings()
    unknown = set(settings.variants) - set(FILES)
    if unknown:
        raise OptimizeError(f"unknown variant(s) {', '.join(sorted(unknown))}")
    out.mkdir(parents=True, exist_ok=True)
    heads, hidden, model_type = fusion.model_shape(model_dir)
    model_config = json.loads((model_dir / "config.json").read_text())
    pad_id = int(model_config.get("pad_token_id") or 0)
    task = Task(model_config.get("problem_type") or Task.SINGLE_LABEL)
    multi_labelled = task == Task.MULTI_LABEL and corpus.test.label_sets is not None
    if task != Task.SINGLE_LABEL and corpus.labelled and not multi_labelled:
        raise OptimizeError(
            f"a {task} model is checked on texts without labels (against fp32), or for "
            "multi-label on label sets; these labels are neither"
        )
    tokenizer = Tokenizer(model_dir / "tokenizer.json", max_length=max_length, pad_id=pad_id)
    result = OptimizeResult(folder=out)

    progress("fusing fp32 graph")
    result.fusions = fusion.fuse(
        raw_onnx, out / FILES["fp32"], num_heads=heads, hidden_size=hidden, model_type=model_type
    )
    result.files["fp32"] = FILES["fp32"]
    fused = out / FILES["fp32"]
    wanted = settings.variants
    if "int8" in wanted:
        progress("static int8 quantization (calibrating)")
        calibration = corpus.train.take(settings.calibration_texts)
        quantize.static_int8(
            fused,
            out / FILES["int8"],
            tokenizer,
            calibration.texts,
            calibration_pairs=calibration.pairs,
        )
        result.files["int8"] = FILES["int8"]
    if "int8_dynamic" in wanted:
        progress("dynamic int8 quantization (for comparison)")
        quantize.dynamic_int8(fused, out / FILES["int8_dynamic"])
        result.files["int8_dynamic"] = FILES["int8_dynamic"]
    if "fp16" in wanted:
        progress("fp16 conversion")
        fusion.fuse(
            raw_onnx,
            out / FILES["fp16"],
            num_heads=heads,
            hidden_size=hidden,
            model_type=model_type,
            float16=True,
        )
        result.files["fp16"] = FILES["fp16"]
    if "tensorrt" in wanted:
        ok, why = tensorrt.available()
        if ok:
            progress("TensorRT engine")
            tensorrt.build_plan(
                raw_onnx, out / FILES["tensorrt"], max_batch=64, max_length=max_length
            )
            result.files["tensorrt"] = FILES["tensorrt"]
            result.skipped["tensorrt"] = "built; measured by benchmarks/gpu.py, not here"
        else:
            result.skipped["tensorrt"] = f"skipped: {why}"
            logger.info("TensorRT engine skipped: %s", why)

    held_out = corpus.test.take(settings.held_out_limit)
    invariance = held_out.take(settings.invariance_texts)
    timed = held_out.take(settings.throughput_texts)
    ref_pred: npt.NDArray[Any] | None = None
    ref_acc: float | None = None
    dev = device()
    for name in ("fp32", "int8", "int8_dynamic", "fp16"):
        if name not in result.files:
            continue
        if name == "fp16" and dev != "cuda":
            # ONNX Runtime's CPU fp16 kernels are ~50x slower than fp32 and are not what a
            # GPU computes, so measuring here would cost minutes and prove nothing.
            result.skipped[name] = "built for GPUs; not measured here (no CUDA device)"
            continue
        gate = "accuracy" if corpus.labelled else "agreement with fp32"
        gate = "macro F1" if corpus.labelled and task == Task.MULTI_LABEL else gate
        progress(f"checking {name}: {gate}, batch invariance, throughput")
        engine = OnnxRuntimeEngine(
            out / result.files[name],
            threads=settings.threads,
            providers=providers_for(dev),
            sep_id=tokenizer.sep_id,
        )
        report, predictions = check_variant(
            engine,
            tokenizer,
            held_out,
            reference_predictions=ref_pred,
            reference_accuracy=ref_acc,
            invariance_texts=invariance.texts,
            throughput_texts=timed.texts,
            invariance_pairs=invariance.pairs,
            throughput_pairs=timed.pairs,
            device=dev,
            labelled=corpus.labelled,
            task=task,
        )
        result.reports[name] = report
        if name == "fp32":
            # The gate's measure: macro F1 for label sets, accuracy otherwise.
            ref_acc = report.f1 if task == Task.MULTI_LABEL else report.accuracy
            ref_pred = predictions
        logger.info("%s: %s", name, json.dumps(report.to_dict()))
    result.defaults = choose_defaults(result.reports)
    from sentiserve.engine.predict import predict_logits

    # The temperature and the drift reference read the served engine's answers: one session,
    # opened when first needed (an unlabelled regression needs none), and each split's
    # logits computed once.
    @functools.cache
    def served() -> OnnxRuntimeEngine:
        return OnnxRuntimeEngine(
            out / result.files[result.defaults["cpu"]],
            threads=settings.threads,
            providers=providers_for(dev),
            sep_id=tokenizer.sep_id,
        )

    computed: dict[str, npt.NDArray[np.float32]] = {}

    def served_logits(name: str, examples: Examples) -> npt.NDArray[np.float32]:
        if name not in computed:
            computed[name] = predict_logits(
                served(), tokenizer, examples.texts, pairs=examples.pairs
            )
        return computed[name]

    fitters = {Task.SINGLE_LABEL: calibrate, Task.MULTI_LABEL: calibrate_labels}
    if corpus.labelled and task in fitters:
        per_label = " per label" if task == Task.MULTI_LABEL else ""
        progress(f"calibrating probabilities (temperature{per_label} on the validation split)")
        result.calibration = fitters[task](
            served_logits("validation", corpus.validation),
            corpus.validation,
            served_logits("held-out", held_out),
            held_out,
        )
    elif corpus.labelled:
        result.calibration = {"temperature": 1.0, "fitted_on": f"nothing: not fitted for {task}"}
    else:
        result.calibration = {"temperature": 1.0, "fitted_on": "nothing: no labelled data"}
    progress("recording the reference answers (label shares, input lengths) for drift")
    split = "validation" if len(corpus.validation.texts) else "test"
    id2label = model_config.get("id2label") or {}
    labels = [id2label[str(i)] for i in range(len(id2label))] or list(corpus.label_names)
    examples = corpus.split(split)
    answers = None if task == Task.REGRESSION else served_logits(split, examples)
    result.reference = reference_answers(answers, tokenizer, examples, split, task, labels)
    (out / REPORT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def reference_answers(
    logits: npt.NDArray[np.float32] | None,
    tokenizer: Tokenizer,
    examples: Examples,
    split: str,
    task: Task,
    labels: list[str],
) -> dict[str, Any]:
    """The served engine's answers (its ``logits`` on ``examples``; None for a regression) as
    a drift reference (:func:`sentiserve.monitoring.drift.reference`): label shares and
    input lengths."""
    from sentiserve.engine.base import activate
    from sentiserve.monitoring import drift

    texts, pairs = examples.texts, examples.pairs
    encoded = (
        tokenizer.encode_counted(texts)
        if pairs is None
        else tokenizer.encode_pairs_counted(texts, pairs)
    )
    given: list[int] | list[list[int]] | None = None
    if logits is not None and len(texts):
        probs = activate(logits, task, 1.0)
        if task == Task.MULTI_LABEL:
            given = [np.flatnonzero(row >= 0.5).tolist() for row in probs]
        else:
            given = probs.argmax(axis=1).tolist()
    return drift.reference(labels, given, encoded.lengths, sum(encoded.truncated), split)


def calibrate(
    val_logits: npt.NDArray[np.float32],
    validation: Examples,
    test_logits: npt.NDArray[np.float32],
    held_out: Examples,
) -> dict[str, Any]:
    """Fit the temperature on the served engine's ``validation`` logits; the expected
    calibration error before and after, on validation and on the held-out split."""
    from sentiserve.engine.base import softmax
    from sentiserve.evaluate.calibration import ece, fit_temperature

    temperature = fit_temperature(val_logits, validation.labels)
    return {
        "temperature": temperature,
        "fitted_on": "validation",
        "validation_ece_before": ece(softmax(val_logits), validation.labels),
        "validation_ece_after": ece(softmax(val_logits, temperature), validation.labels),
        "test_ece_before": ece(softmax(test_logits), held_out.labels),
        "test_ece_after": ece(softmax(test_logits, temperature), held_out.labels),
    }


def calibrate_labels(
    val_logits: npt.NDArray[np.float32],
    validation: Examples,
    test_logits: npt.NDArray[np.float32],
    held_out: Examples,
) -> dict[str, Any]:
    """A multi-label model's temperatures, one per label, fitted on the served engine's
    ``validation`` logits and label sets; the ECE of every (text, label) probability before
    and after, on both splits."""
    from sentiserve.engine.base import sigmoid
    from sentiserve.evaluate.calibration import fit_label_temperatures, label_ece

    assert validation.label_sets is not None
    assert held_out.label_sets is not None
    temperatures = fit_label_temperatures(val_logits, validation.label_sets)
    scale = np.asarray(temperatures)
    return {
        "temperature": 1.0,
        "temperatures": temperatures,
        "fitted_on": "validation (one temperature per label)",
        "validation_ece_before": label_ece(sigmoid(val_logits), validation.label_sets),
        "validation_ece_after": label_ece(sigmoid(val_logits, scale), validation.label_sets),
        "test_ece_before": label_ece(sigmoid(test_logits), held_out.label_sets),
        "test_ece_after": label_ece(sigmoid(test_logits, scale), held_out.label_sets),
    }
