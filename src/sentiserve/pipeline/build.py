"""The whole default pipeline: data -> fine-tune -> export -> optimize -> model repository,
as a table of stages (``STAGES``) and one loop. With a checkpoint fine-tuned elsewhere,
the first stage imports it instead (``IMPORT_STAGES``) and the checks run on the user's
labelled file, their texts or a built-in sample (``pipeline.checkpoint``).

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

from sentiserve import DEFAULT_MODEL
from sentiserve.data import load_corpus
from sentiserve.data.types import Corpus
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import ConfigError, SentiserveError
from sentiserve.optimize.variants import RECIPE_VERSION, OptimizeSettings
from sentiserve.pipeline.checkpoint import Checkpoint
from sentiserve.repository.from_build import write_from_build
from sentiserve.repository.layout import DEFAULT_ROOT, ModelRepository, ModelVersion
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
        checkpoint: A fine-tuned classifier (folder or hub name) to import instead of
            fine-tuning ``train.base_model`` on ``data``.
        labels, task, max_length: Override what the checkpoint's config says.
        eval_data: Labelled file the imported model is gated on (accuracy).
        calibration_data: Texts without labels for int8 calibration, and for the gate
            (agreement with fp32) when there is no ``eval_data``.
    """

    data: str = "rt"
    work_dir: Path = Path("build")
    repository: Path = DEFAULT_ROOT
    model_name: str = DEFAULT_MODEL
    train: TrainConfig = field(default_factory=TrainConfig)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    truncation: Truncation = Truncation.HEAD_TAIL
    force: bool = False
    cache_dir: Path | None = None
    """Where downloaded data is cached (the settings' ``cache_dir``)."""
    checkpoint: str | None = None
    labels: tuple[str, ...] | None = None
    task: str | None = None
    max_length: int | None = None
    eval_data: Path | None = None
    calibration_data: Path | None = None


@dataclass
class BuildReport:
    version: ModelVersion
    stages: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Context:
    """What the stages share during one build."""

    config: BuildConfig
    corpus: Corpus
    progress: Progress
    checkpoint: Checkpoint | None = None

    @property
    def max_length(self) -> int:
        if self.checkpoint is not None:
            return self.checkpoint.max_length
        return self.config.train.max_length

    @property
    def model_dir(self) -> Path:
        return self.config.work_dir / "model"

    @property
    def onnx_dir(self) -> Path:
        return self.config.work_dir / "onnx"

    @property
    def opt_dir(self) -> Path:
        return self.config.work_dir / "optimized"


@dataclass(frozen=True)
class Stage:
    """One step of the build: its folder under the work folder, what its fingerprint covers
    (besides the previous stage's fingerprint), and how it runs. ``run`` gets the context,
    the folder and whether to resume, and returns a summary line and what to record."""

    name: str
    folder: str
    message: str
    inputs: Callable[[_Context], tuple[Any, ...]]
    run: Callable[[_Context, Path, bool], tuple[str, dict[str, Any]]]
    resumable: bool = False


def _train(ctx: _Context, folder: Path, resume: bool) -> tuple[str, dict[str, Any]]:
    from sentiserve.train.trainer import train

    limit = ctx.config.optimize.held_out_limit  # the PyTorch score is on the engines' texts
    result = train(ctx.corpus, folder, ctx.config.train, resume=resume, held_out_limit=limit)
    return f"built in {result.seconds:.0f}s", {"steps": result.steps}


def _import(ctx: _Context, folder: Path, _resume: bool) -> tuple[str, dict[str, Any]]:
    from sentiserve.pipeline.checkpoint import import_checkpoint

    assert ctx.checkpoint is not None
    info = import_checkpoint(ctx.checkpoint, folder, ctx.corpus)
    return f"{info['model_type']}, {len(ctx.checkpoint.labels)} labels", {}


def _train_inputs(ctx: _Context) -> tuple[Any, ...]:
    inputs = (asdict(ctx.config.train), ctx.corpus.name, ctx.corpus.provenance)
    limit = ctx.config.optimize.held_out_limit
    # A limit changes the held-out score the stage records. Without one the inputs stay what
    # earlier builds recorded, so their fine-tunes are reused.
    return inputs if limit is None else (*inputs, limit)


def _export(ctx: _Context, folder: Path, _resume: bool) -> tuple[str, dict[str, Any]]:
    from sentiserve.export.onnx import export

    res = export(
        ctx.model_dir,
        folder / "model.onnx",
        texts=ctx.corpus.validation.texts[:64],
        max_length=ctx.max_length,
    )
    return f"max |Δlogit| {res.max_abs_diff:.1e}", {"max_abs_diff": res.max_abs_diff}


def _optimize(ctx: _Context, folder: Path, _resume: bool) -> tuple[str, dict[str, Any]]:
    from sentiserve.optimize.variants import optimize

    opt = optimize(
        ctx.onnx_dir / "model.onnx",
        ctx.model_dir,
        folder,
        ctx.corpus,
        max_length=ctx.max_length,
        settings=ctx.config.optimize,
        progress=ctx.progress,
    )
    return "defaults " + ", ".join(f"{k}={v}" for k, v in opt.defaults.items()), {}


STAGES = (
    Stage(
        "train",
        "model",
        "fine-tuning",
        _train_inputs,
        _train,
        resumable=True,
    ),
    Stage("export", "onnx", "exporting to ONNX and checking parity", lambda ctx: (), _export),
    Stage(
        "optimize",
        "optimized",
        "optimizing",
        lambda ctx: (asdict(ctx.config.optimize), RECIPE_VERSION),
        _optimize,
    ),
)
"""The stages before the model repository, in order; each depends on the one before."""


def _import_inputs(ctx: _Context) -> tuple[Any, ...]:
    from sentiserve.pipeline.checkpoint import fingerprint_files

    assert ctx.checkpoint is not None
    return (
        ctx.checkpoint.to_dict(),
        fingerprint_files(ctx.checkpoint.source),
        ctx.corpus.name,
        ctx.corpus.provenance,
    )


IMPORT_STAGES = (
    Stage("import", "model", "importing the checkpoint", _import_inputs, _import),
    *STAGES[1:],
)
"""The stages for a checkpoint fine-tuned elsewhere: import in place of fine-tuning."""


def build(config: BuildConfig, progress: Progress = lambda _m: None) -> BuildReport:
    """Run every stage that is not already built; return the repository version."""
    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    stages: dict[str, str] = {}
    seconds: dict[str, float] = {}
    skipped: set[str] = set()

    checkpoint = None
    if config.checkpoint is not None:
        from sentiserve.pipeline.checkpoint import inspect_checkpoint
        from sentiserve.pipeline.eval_data import import_corpus

        progress(f"reading the checkpoint: {config.checkpoint}")
        checkpoint = inspect_checkpoint(
            config.checkpoint,
            labels=config.labels,
            task=config.task,
            max_length=config.max_length,
        )
        if checkpoint.task == "regression" and config.eval_data is not None:
            raise ConfigError(
                "--eval-data holds labels; a regression model is checked on texts "
                "(--calibration-data, or the built-in sample) against fp32"
            )
        corpus = import_corpus(
            checkpoint.labels,
            config.eval_data,
            config.calibration_data,
            multi_label=checkpoint.task == "multi_label_classification",
        )
        progress(f"checking engines on {corpus.description} (gate: {corpus.provenance['gate']})")
    else:
        progress(f"loading data: {config.data}")
        corpus = load_corpus(config.data, config.train.label_names, cache_dir=config.cache_dir)
    ctx = _Context(config, corpus, progress, checkpoint)
    print_ = ""
    for stage in IMPORT_STAGES if checkpoint is not None else STAGES:
        previous = (print_,) if print_ else ()
        print_ = fingerprint(stage.name, *previous, *stage.inputs(ctx))
        folder = work / stage.folder
        start = time.perf_counter()
        if not config.force and _stage_done(folder, print_):
            stages[stage.name] = "up to date"
            skipped.add(stage.name)
        else:
            resume = stage.resumable and not config.force and _can_resume(folder, print_)
            if not resume and folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / PENDING_FILE).write_text(json.dumps({"fingerprint": print_}))
            progress(stage.message + (" (resuming from checkpoint)" if resume else ""))
            summary, info = stage.run(ctx, folder, resume)
            _mark_done(folder, print_, **info)
            stages[stage.name] = summary
        seconds[stage.name] = time.perf_counter() - start

    repo = ModelRepository(config.repository)
    start = time.perf_counter()
    current = None if config.force else _current_version(repo, config.model_name, print_)
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
            ctx.corpus,
            truncation=config.truncation,
            build_fingerprint=print_,
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
