"""A model repository version from a build folder (``model/``, ``optimized/``): the labels,
engines, evaluation and provenance the pipeline left there, written with
:func:`~sentiserve.repository.builder.write_version`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentiserve.data.types import Corpus
from sentiserve.engine.base import Task
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import RepositoryError
from sentiserve.optimize.variants import SHIPPED
from sentiserve.repository.builder import read_json, write_version
from sentiserve.repository.layout import ModelVersion
from sentiserve.repository.served import TORCH


def write_from_build(
    work: Path,
    repository: Path,
    name: str,
    corpus: Corpus | None = None,
    *,
    truncation: Truncation = Truncation.HEAD_TAIL,
    build_fingerprint: str = "",
) -> ModelVersion:
    """Write a repository version from a build folder (``model/``, ``optimized/``)."""
    model_dir, opt_dir = work / "model", work / "optimized"
    opt = read_json(opt_dir / "optimize.json")
    model_config = read_json(model_dir / "config.json")
    train_config = read_json(model_dir / "train_config.json")
    metrics = read_json(model_dir / "metrics.json")
    labels = [model_config["id2label"][str(i)] for i in range(len(model_config["id2label"]))]
    task = Task(model_config.get("problem_type") or Task.SINGLE_LABEL)
    onnx_inputs = _onnx_inputs(opt_dir / opt["files"]["fp32"])
    engine_files = {v: opt_dir / f for v, f in opt["files"].items() if v in SHIPPED}
    engine_files[TORCH] = model_dir / "model.safetensors"
    defaults = dict(opt["defaults"])
    if "tensorrt" not in engine_files:  # a GPU without a TensorRT plan serves PyTorch fp16
        defaults["cuda"] = TORCH
    evaluation: dict[str, dict[str, Any]] = dict(opt["reports"])
    if metrics.get("test"):  # an imported checkpoint was not scored in PyTorch
        evaluation["pytorch"] = {
            "accuracy": metrics["test"]["accuracy"],
            "f1": metrics["test"]["f1"],
            "confusion": metrics["test"]["confusion"],
            "n": metrics["test"]["n"],
        }
    for variant, why in opt.get("skipped", {}).items():
        evaluation.setdefault(variant, {"note": why})
    provenance = {
        "base_model": train_config["base_model"],
        "dataset": metrics["corpus"],
        "dataset_provenance": metrics["provenance"],
        "split_seed": metrics["provenance"].get("split_seed"),
        "train_config": train_config,
        "train_steps": metrics["steps"],
        "fusions": opt.get("fusions", {}),
        "build_fingerprint": build_fingerprint,
    }
    if train_config.get("imported"):
        provenance["imported"] = True
        provenance["gate"] = metrics["provenance"].get("gate", "accuracy")
    if corpus is not None and corpus.name != metrics["corpus"]:
        raise RepositoryError(f"build was trained on {metrics['corpus']}, not {corpus.name}")
    return write_version(
        repository,
        name,
        labels=labels,
        max_length=int(train_config["max_length"]),
        pad_id=int(model_config.get("pad_token_id") or 0),
        inputs=onnx_inputs,
        tokenizer_file=model_dir / "tokenizer.json",
        engine_files=engine_files,
        default_engine=defaults,
        calibration=opt.get("calibration", {}),
        reference=opt.get("reference", {}),
        evaluation=evaluation,
        provenance=provenance,
        truncation=truncation,
        task=task,
        thresholds=[0.5] * len(labels) if task == Task.MULTI_LABEL else None,
    )


def _onnx_inputs(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
