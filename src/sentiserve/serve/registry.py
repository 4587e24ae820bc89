"""Loaded models and their versions, with atomic hot reload.

A (re)load builds the new version completely (verify checksums, open the engine, warm it
up, start its batcher) before it replaces the old one; a failed load leaves the old
version serving and records the error. The old batcher drains before it stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve.engine.instances import InstanceConfig, ResolvedInstances
from sentiserve.engine.predict import predict_probabilities
from sentiserve.errors import ModelNotFoundError, SentiserveError
from sentiserve.repository.layout import ModelRepository
from sentiserve.repository.served import ServedModel, detect_device, open_model
from sentiserve.serve.batcher import Batcher, BatchingConfig, BatchStats
from sentiserve.serve.plane import ModelStatus

logger = logging.getLogger(__name__)

WARMUP_TEXTS = ("a warm-up review", "another, slightly longer warm-up review for the engine")


@dataclass
class LoadedModel:
    """A serving model version with its batcher (and the instances it runs on)."""

    served: ServedModel
    batcher: Batcher
    instances: ResolvedInstances

    @property
    def name(self) -> str:
        return self.served.version.name

    @property
    def version(self) -> int:
        return self.served.version.version


class Registry:
    """The models a server serves, by name.

    Args:
        root: The model repository.
        batching: Batching limits for every model.
        instances: Engine instances (and threads) per model.
        engine: Engine variant to serve (None: the manifest's default for this device).
        on_batch: Metrics hook, given the model name and version.
        on_reference: Metrics hook, given a model's name, version and drift reference
            (the manifest's) when it loads, and an empty one when it is unloaded.
    """

    def __init__(
        self,
        root: Path,
        batching: BatchingConfig,
        *,
        instances: InstanceConfig | None = None,
        engine: str | None = None,
        on_batch: Callable[[str, int, BatchStats], None] = lambda _n, _v, _s: None,
        on_reference: Callable[[str, int, dict[str, Any]], None] = lambda _n, _v, _r: None,
    ) -> None:
        self.repository = ModelRepository(root)
        self.batching = batching
        self.instances = instances or InstanceConfig()
        self.engine = engine
        self._on_batch = on_batch
        self._on_reference = on_reference
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The serving model ``name``; ``version`` must match it when given.

        Raises:
            ModelNotFoundError: Not loaded, or another version is loaded.
        """
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        if version is not None and version != model.version:
            raise ModelNotFoundError(
                f"model {name!r} has no ready version {version} (serving {model.version})"
            )
        return model

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        """Load (or reload) ``name`` atomically; on failure the old version keeps serving."""
        try:
            loaded = self.repository.load(name, version)
            dev = detect_device()
            plan = self.instances.resolve(dev)
            served = open_model(loaded, engine=self.engine, threads=plan.threads, device=dev)
            engines = [served.engine]
            engines += [served.open_engine(plan.threads) for _ in range(plan.count - 1)]
            solo = served.open_engine(plan.solo_threads) if plan.solo_threads else None
            for engine in [*engines, *([solo] if solo else [])]:
                # Ready only after every session ran once (first runs allocate).
                predict_probabilities(engine, served.tokenizer, WARMUP_TEXTS)
            number = loaded.version

            def on_batch(stats: BatchStats) -> None:
                self._on_batch(name, number, stats)

            batcher = Batcher(
                engines,
                served.tokenizer,
                self.batching,
                on_batch=on_batch,
                name=f"batcher-{name}",
                solo=solo,
            )
            batcher.start()
        except SentiserveError as exc:
            self._errors[name] = str(exc)
            logger.error("loading %s failed: %s", name, exc)
            raise
        with self._lock:
            old = self._models.get(name)
            self._models[name] = LoadedModel(served, batcher, plan)
            self._errors.pop(name, None)
        self._on_reference(name, loaded.version, loaded.manifest.reference)
        if old is not None:
            threading.Thread(target=old.batcher.stop, daemon=True).start()
        logger.info(
            "serving %s v%d (%s, %d instances x %d threads, solo %d)",
            name,
            loaded.version,
            served.variant,
            plan.count,
            plan.threads,
            plan.solo_threads,
        )
        return self._models[name]

    def load_all(self) -> None:
        """Load every model in the repository; at least one must load."""
        names = self.repository.servable()
        if not names:
            raise ModelNotFoundError(f"no models in {self.repository.root}")
        for name in names:
            self.load(name)

    def unload(self, name: str) -> None:
        with self._lock:
            model = self._models.pop(name, None)
        if model is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        self._on_reference(name, model.version, {})
        model.batcher.stop()

    def index(self) -> list[ModelStatus]:
        """Every model in the repository with its state (READY, UNAVAILABLE)."""
        out = []
        for name in sorted(set(self.repository.servable()) | set(self._models)):
            model = self._models.get(name)
            if model is not None:
                out.append(ModelStatus(name, model.version, "READY"))
            else:
                versions = self.repository.versions(name)
                out.append(
                    ModelStatus(
                        name,
                        versions[-1] if versions else None,
                        "UNAVAILABLE",
                        self._errors.get(name, "not loaded"),
                    )
                )
        return out

    def stop(self) -> None:
        for model in list(self._models.values()):
            model.batcher.stop()
