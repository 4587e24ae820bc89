"""``manifest.json``: everything needed to serve one model version, and proof of its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sentiserve.engine.base import Task
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import RepositoryError, validation_problem
from sentiserve.files import sha256_file

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class FileEntry(BaseModel):
    """A file in the version folder with its size and sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @classmethod
    def of(cls, folder: Path, name: str) -> FileEntry:
        path = folder / name
        return cls(file=name, sha256=sha256_file(path), bytes=path.stat().st_size)


class EngineEntry(FileEntry):
    """An engine file: its format and numeric precision, and for ONNX its weights file
    (ONNX external data), which ONNX Runtime maps into memory instead of copying into each
    session, so engine instances share one copy of the weights."""

    format: str = "onnx"
    precision: str = "fp32"
    data: FileEntry | None = None
    config: FileEntry | None = None
    """A torch engine's model config (``config.json``, beside ``model.safetensors``)."""


class Manifest(BaseModel):
    """One model version. Written by the repository builder, read by every server.

    Attributes:
        labels: Label names in class-index order.
        task: Softmax over the labels, one sigmoid per label (multi-label), or one raw
            score (regression; ``labels`` then holds the score's one name).
        thresholds: Multi-label only: a label is given when its score reaches its threshold
            (0.5 each by default).
        max_length: Most tokens per text, special tokens included.
        truncation: What the server does with longer texts.
        pad_id: Padding token id.
        inputs: Graph inputs the engines take.
        tokenizer: The fast tokenizer's ``tokenizer.json``.
        engines: Engine variant name -> file.
        default_engine: Device (``cpu``, ``cuda``) -> engine variant.
        calibration: The temperature every serving path divides logits by, and the
            expected calibration error before and after (``evaluate.calibration``).
        evaluation: Variant -> held-out metrics (accuracy, f1, agreement, batch invariance,
            throughput), plus ``pytorch`` for the fine-tuned model itself.
        provenance: Base model, dataset, split seed, code version, date.
        reference: What the served engine answered on the validation split, the baseline
            prediction monitoring compares production with (``monitoring.drift``): each
            label's share, input length quantiles and length-bucket shares, the share cut.
            Empty for a version built before references were recorded.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT_VERSION
    model: str
    version: int = Field(ge=1)
    task: Task = Task.SINGLE_LABEL
    labels: list[str] = Field(min_length=1)
    thresholds: list[float] | None = None
    max_length: int = Field(ge=8, le=8192)
    truncation: Truncation = Truncation.HEAD_TAIL
    pad_id: int = 0
    inputs: list[str]
    tokenizer: FileEntry
    engines: dict[str, EngineEntry] = Field(min_length=1)
    default_engine: dict[str, str]
    evaluation: dict[str, dict[str, Any]] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    calibration: dict[str, Any] = Field(default_factory=dict)
    reference: dict[str, Any] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels_fit_the_task(cls, labels: list[str], info: ValidationInfo) -> list[str]:
        task = info.data.get("task", Task.SINGLE_LABEL)
        if task == Task.REGRESSION and len(labels) != 1:
            raise ValueError(f"a regression model has one output, not {len(labels)}")
        if task != Task.REGRESSION and len(labels) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        return labels

    @model_validator(mode="after")
    def _thresholds_per_label(self) -> Manifest:
        if self.thresholds is not None and len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        return self

    def thresholds_or_default(self) -> list[float]:
        """Each label's threshold (multi-label), 0.5 where none was recorded."""
        return list(self.thresholds or [0.5] * len(self.labels))

    @property
    def divisor(self) -> float | list[float]:
        """What the servers divide logits by: the temperatures per label when the version
        has them (a calibrated multi-label model), else the one temperature."""
        per_label = self.calibration.get("temperatures")
        return [float(t) for t in per_label] if per_label else self.temperature

    @property
    def temperature(self) -> float:
        """Logits are divided by this before the softmax (fitted on the validation split;
        1.0 when the version was built without calibration)."""
        return float(self.calibration.get("temperature", 1.0))

    def engine_for(self, device: str) -> str:
        name = self.default_engine.get(device) or self.default_engine.get("cpu")
        if name is None or name not in self.engines:
            raise RepositoryError(f"{self.model} v{self.version}: no default engine for {device}")
        return name

    def files(self) -> list[FileEntry]:
        engines = list(self.engines.values())
        extra = [f for e in engines for f in (e.data, e.config) if f is not None]
        return [self.tokenizer, *engines, *extra]

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise RepositoryError(f"{folder}: incomplete version (no {MANIFEST})") from exc
        except OSError as exc:
            raise RepositoryError(f"{path}: cannot read: {exc}") from exc
        try:
            manifest = cls.model_validate_json(text)
        except ValidationError as exc:
            where, what = validation_problem(exc)
            where = where or "(root)"
            raise RepositoryError(f"{path}: invalid manifest at {where}: {what}") from exc
        missing = [d for d, e in manifest.default_engine.items() if e not in manifest.engines]
        if missing:
            raise RepositoryError(f"{path}: default engine for {missing} is not in engines")
        return manifest

    def verify(self, folder: Path) -> None:
        """Check every listed file exists with the recorded size and sha256.

        Raises:
            RepositoryError: naming the first missing or corrupt file.
        """
        for entry in self.files():
            path = folder / entry.file
            if not path.is_file():
                raise RepositoryError(f"{folder}: incomplete version: {entry.file} is missing")
            size = path.stat().st_size
            if size != entry.bytes:
                raise RepositoryError(f"{path}: corrupt: {size} bytes, manifest says {entry.bytes}")
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise RepositoryError(
                    f"{path}: corrupt: sha256 {digest[:12]}..., "
                    f"manifest says {entry.sha256[:12]}..."
                )
