"""The whole default pipeline: data -> fine-tune -> export -> optimize -> model repository.

Each stage records a fingerprint of everything it was built from. A stage whose outputs
exist with a matching fingerprint is skipped, so a second ``sentiserve build`` does nothing
and an interrupted one continues (training resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentiserve.data import load_corpus
from sentiserve.data.types import Corpus
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import RepositoryError, SentiserveError
from sentiserve.optimize.variants import RECIPE_VERSION, SHIPPED, OptimizeSettings
from sentiserve.repository.layout import DEFAULT_MODEL, DEFAULT_ROOT, ModelRepository, ModelVersion
from sentiserve.train.trainer import TrainConfig

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
PENDING_FILE = "stage.pending.json"
REPORT_FILE = "build_report.json"
"""Stage timings of the last build that built anything (read by benchmarks/engines.py)."""
Progress = Callable[[str], None]


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _stage_done(folder: Path, print_: str) -> bool:
    try:
        return bool(json.loads((folder / STAGE_FILE).read_text())["fingerprint"] == print_)
    except (OSError, ValueError, KeyError):
        return False


def _mark_done(folder: Path, print_: str, **info: Any) -> None:
    (folder / STAGE_FILE).write_text(json.dumps({"fingerprint": print_, **info}, indent=2) + "\n")
    (folder / PENDING_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``sentiserve build`` needs.

    Attributes:
        data: Data source: ``rt``, ``imdb`` or a local path.
        work_dir: Intermediate outputs (fine-tuned model, raw ONNX, variants).
        repository: Where the model repository is written.
        model_name: The model's name in the repository.
        truncation: Long-text policy recorded in the manifest.
        force: Rebuild every stage and write a new version.
    """

    data: str = "rt"
    work_dir: Path = Path("build")
    repository: Path = DEFAULT_ROOT
    model_name: str = DEFAULT_MODEL
    train: TrainConfig = field(default_factory=TrainConfig)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    truncation: Truncation = Truncation.HEAD_TAIL
    force: bool = False


@dataclass
class BuildReport:
    version: ModelVersion
    stages: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def build(config: BuildConfig, progress: Progress = lambda _m: None) -> BuildReport:
    """Run every stage that is not already built; return the repository version."""
    from sentiserve.export.onnx import export
    from sentiserve.optimize.variants import optimize
    from sentiserve.train.trainer import train

    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    stages: dict[str, str] = {}
    seconds: dict[str, float] = {}
    skipped: set[str] = set()

    progress(f"loading data: {config.data}")
    corpus = load_corpus(config.data, config.train.label_names)

    model_dir = work / "model"
    train_print = fingerprint("train", asdict(config.train), corpus.name, corpus.provenance)
    start = time.perf_counter()
    if not config.force and _stage_done(model_dir, train_print):
        stages["train"] = "up to date"
        skipped.add("train")
    else:
        resume = _can_resume(model_dir, train_print) and not config.force
        if not resume and model_dir.exists():
            shutil.rmtree(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / PENDING_FILE).write_text(json.dumps({"fingerprint": train_print}))
        progress("fine-tuning" + (" (resuming from checkpoint)" if resume else ""))
        result = train(corpus, model_dir, config.train, resume=resume)
        _mark_done(model_dir, train_print, steps=result.steps)
        stages["train"] = f"built in {result.seconds:.0f}s"
    seconds["train"] = time.perf_counter() - start

    onnx_dir = work / "onnx"
    export_print = fingerprint("export", train_print)
    start = time.perf_counter()
    if not config.force and _stage_done(onnx_dir, export_print):
        stages["export"] = "up to date"
        skipped.add("export")
    else:
        progress("exporting to ONNX and checking parity")
        onnx_dir.mkdir(parents=True, exist_ok=True)
        res = export(
            model_dir,
            onnx_dir / "model.onnx",
            texts=corpus.validation.texts[:64],
            max_length=config.train.max_length,
        )
        _mark_done(onnx_dir, export_print, max_abs_diff=res.max_abs_diff)
        stages["export"] = f"max |Δlogit| {res.max_abs_diff:.1e}"
    seconds["export"] = time.perf_counter() - start

    opt_dir = work / "optimized"
    opt_print = fingerprint("optimize", export_print, asdict(config.optimize), RECIPE_VERSION)
    start = time.perf_counter()
    if not config.force and _stage_done(opt_dir, opt_print):
        stages["optimize"] = "up to date"
        skipped.add("optimize")
    else:
        if opt_dir.exists():
            shutil.rmtree(opt_dir)
        opt = optimize(
            onnx_dir / "model.onnx",
            model_dir,
            opt_dir,
            corpus,
            max_length=config.train.max_length,
            settings=config.optimize,
            progress=progress,
        )
        _mark_done(opt_dir, opt_print)
        stages["optimize"] = "defaults " + ", ".join(f"{k}={v}" for k, v in opt.defaults.items())
    seconds["optimize"] = time.perf_counter() - start

    repo = ModelRepository(config.repository)
    start = time.perf_counter()
    current = None if config.force else _current_version(repo, config.model_name, opt_print)
    if current is not None:
        stages["repository"] = f"up to date ({config.model_name} v{current.version})"
        skipped.add("repository")
        version = current
    else:
        progress("writing the model repository")
        version = write_from_build(
            work,
            config.repository,
            config.model_name,
            corpus,
            truncation=config.truncation,
            build_fingerprint=opt_print,
        )
        stages["repository"] = f"wrote {config.model_name} v{version.version}"
    seconds["repository"] = time.perf_counter() - start
    if skipped != set(stages):
        write_report(work / REPORT_FILE, stages, seconds, version.version, skipped)
    return BuildReport(version, stages, seconds)


def write_report(
    path: Path,
    stages: dict[str, str],
    seconds: dict[str, float],
    version: int,
    skipped: set[str],
) -> None:
    """Record how long each stage took when it was last built.

    A stage in ``skipped`` (up to date) keeps the time from the report of the run that built it,
    so ``total_seconds`` is what a build from scratch takes with the current recipe.
    """
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    merged = {
        stage: previous.get("seconds", {}).get(stage, seconds[stage])
        if stage in skipped
        else seconds[stage]
        for stage in stages
    }
    path.write_text(
        json.dumps(
            {
                "command": "sentiserve build",
                "stages": stages,
                "seconds": merged,
                "total_seconds": sum(merged.values()),
                "version": version,
            },
            indent=2,
        )
        + "\n"
    )


def _can_resume(model_dir: Path, print_: str) -> bool:
    try:
        pending = json.loads((model_dir / PENDING_FILE).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(pending == print_ and any((model_dir / "checkpoints").glob("checkpoint-*")))


def _current_version(repo: ModelRepository, name: str, print_: str) -> ModelVersion | None:
    versions = repo.versions(name)
    if not versions:
        return None
    try:
        latest = repo.load(name, versions[-1])
    except SentiserveError as exc:
        logger.warning("latest version is unusable (%s); writing a new one", exc)
        return None
    return latest if latest.manifest.provenance.get("build_fingerprint") == print_ else None


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
    from sentiserve.repository.builder import read_json, write_version

    model_dir, opt_dir = work / "model", work / "optimized"
    opt = read_json(opt_dir / "optimize.json")
    model_config = read_json(model_dir / "config.json")
    train_config = read_json(model_dir / "train_config.json")
    metrics = read_json(model_dir / "metrics.json")
    labels = [model_config["id2label"][str(i)] for i in range(len(model_config["id2label"]))]
    onnx_inputs = _onnx_inputs(opt_dir / opt["files"]["fp32"])
    engine_files = {v: opt_dir / f for v, f in opt["files"].items() if v in SHIPPED}
    evaluation: dict[str, dict[str, Any]] = dict(opt["reports"])
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
        default_engine=opt["defaults"],
        evaluation=evaluation,
        provenance=provenance,
        truncation=truncation,
    )


def _onnx_inputs(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
