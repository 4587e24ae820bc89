"""Writing a model version into a repository, atomically.

A version is assembled in a dot-folder next to its final place and renamed into place only
when every file and the manifest are written, so a reader sees a whole version or none.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sentiserve import __version__
from sentiserve.engine.base import Task
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import RepositoryError
from sentiserve.files import write_text_atomic
from sentiserve.repository.layout import CONFIG, ModelRepository, ModelVersion
from sentiserve.repository.manifest import MANIFEST, EngineEntry, FileEntry, Manifest
from sentiserve.repository.triton import is_gpu_form, write_model_py
from sentiserve.repository.triton_configs import classify_config, reference_parameter, thresholds_of

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
PRECISION = {"fp32": "fp32", "int8": "int8", "fp16": "fp16", "tensorrt": "fp16", "torch": "fp32"}
FORMATS = {".onnx": "onnx", ".plan": "plan", ".safetensors": "torch"}
"""Engine file suffix -> format. The torch engine's weights stay fp32 on disk: the CPU runs
them as they are (and is tested against the ONNX engine), a GPU casts them to fp16 when it
loads them (milliseconds), so one file serves both."""


def code_version() -> str:
    """sentiserve's version plus the git commit of the working tree, when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def clean_partials(folder: Path) -> None:
    """Remove half-written versions left by a writer that died."""
    if folder.is_dir():
        for stale in folder.glob(f"{PARTIAL_PREFIX}*"):
            logger.warning("removing half-written version %s", stale)
            shutil.rmtree(stale, ignore_errors=True)


def write_version(
    root: Path,
    name: str,
    *,
    labels: list[str],
    max_length: int,
    pad_id: int,
    inputs: list[str],
    tokenizer_file: Path,
    engine_files: Mapping[str, Path],
    default_engine: Mapping[str, str],
    evaluation: Mapping[str, Mapping[str, Any]] | None = None,
    provenance: Mapping[str, Any] | None = None,
    truncation: Truncation = Truncation.HEAD_TAIL,
    version: int | None = None,
    calibration: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
    task: Task = Task.SINGLE_LABEL,
    thresholds: list[float] | None = None,
) -> ModelVersion:
    """Write one version of ``name`` under ``root`` and (re)generate its python-form
    ``config.pbtxt`` (see :mod:`sentiserve.repository.triton`).

    Raises:
        RepositoryError: The version exists already, or a source file is missing.
    """
    repo = ModelRepository(root)
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_partials(model_dir)
    number = version if version is not None else repo.next_version(name)
    final = model_dir / str(number)
    if final.exists():
        raise RepositoryError(f"{final} exists already; versions are immutable")
    needed = [*engine_files.values()]
    needed += [
        s.parent / "config.json" for s in engine_files.values() if s.suffix == ".safetensors"
    ]
    for source in (tokenizer_file, *needed):
        if not source.is_file():
            raise RepositoryError(f"cannot build {name} v{number}: {source} is missing")
    missing = [e for e in default_engine.values() if e not in engine_files]
    if missing:
        raise RepositoryError(f"default engine(s) {missing} have no engine file")
    partial = model_dir / f"{PARTIAL_PREFIX}{number}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        shutil.copyfile(tokenizer_file, partial / "tokenizer.json")
        engines: dict[str, EngineEntry] = {}
        for variant, source in engine_files.items():
            data = model_config = None
            if source.suffix == ".onnx":
                data = FileEntry.of(partial, write_onnx_with_weights_file(source, partial))
            else:
                shutil.copyfile(source, partial / source.name)
            if source.suffix == ".safetensors":  # the torch engine: weights + model config
                shutil.copyfile(source.parent / "config.json", partial / "config.json")
                model_config = FileEntry.of(partial, "config.json")
            entry = FileEntry.of(partial, source.name)
            engines[variant] = EngineEntry(
                **entry.model_dump(),
                format=FORMATS.get(source.suffix, "onnx"),
                precision=PRECISION.get(variant, "fp32"),
                data=data,
                config=model_config,
            )
        manifest = Manifest(
            model=name,
            version=number,
            labels=list(labels),
            task=task,
            thresholds=thresholds,
            max_length=max_length,
            truncation=truncation,
            pad_id=pad_id,
            inputs=list(inputs),
            tokenizer=FileEntry.of(partial, "tokenizer.json"),
            engines=engines,
            default_engine=dict(default_engine),
            calibration=dict(calibration or {}),
            reference=dict(reference or {}),
            evaluation={k: dict(v) for k, v in (evaluation or {}).items()},
            provenance={
                "code_version": code_version(),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **(provenance or {}),
            },
        )
        config = classify_config(
            name,
            manifest.labels,
            thresholds=thresholds_of(manifest),
            reference=reference_parameter(manifest),
        )
        write_model_py(partial)  # the python backend's entry point (Triton's python form)
        (partial / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        with open(partial / MANIFEST, "rb") as fh:
            os.fsync(fh.fileno())
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    current = model_dir / CONFIG
    if not current.is_file() or not is_gpu_form(current.read_text()):
        write_text_atomic(current, config.to_pbtxt())  # a GPU form is rewritten by its own command
    logger.info("wrote %s", final)
    return repo.load(name, number)


WEIGHTS_SUFFIX = ".data"


def write_onnx_with_weights_file(source: Path, folder: Path) -> str:
    """Write ``source`` into ``folder`` as a graph file (same name) and one weights file
    (``<name>.data``, ONNX external data); returns the weights file's name.

    ONNX Runtime maps external weights into memory instead of copying them into each
    session: measured with three sessions of the int8 MiniLM (68 MB), 452 MB resident
    from one file, 191 MB from graph + weights (with the shared arena). Deterministic:
    the same source gives the same two files.
    """
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    weights = source.name + WEIGHTS_SUFFIX
    model = onnx.load(str(source))
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=weights, size_threshold=1024
    )
    onnx.save_model(model, str(folder / source.name))
    (folder / weights).chmod(0o644)  # onnx writes it 0600; servers may run as another user
    return weights


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"cannot read {path}: {exc}") from exc
    return data
