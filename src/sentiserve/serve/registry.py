"""Loaded models and their versions, with atomic hot reload.

Each model serves the versions its version policy selects (Triton's ``version_policy`` in
its ``config.pbtxt``; the newest alone by default), each addressable by number; requests
that name none are shared by the rollout's split, and a shadow version may get a copy of
them (:mod:`sentiserve.repository.rollout`, :mod:`sentiserve.serve.rollouts`).

A (re)load builds every selected version completely (verify checksums, open the engine,
warm it up, start its batcher) and checks the rollout against them before the new set
replaces the old one in one step; a failed load leaves the old set serving and records the
error. The old batchers drain before they stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve.engine.instances import InstanceConfig, ResolvedInstances
from sentiserve.engine.predict import predict_probabilities
from sentiserve.errors import ModelNotFoundError, SentiserveError
from sentiserve.repository.layout import CONFIG, ModelRepository
from sentiserve.repository.rollout import Rollout, read_rollout
from sentiserve.repository.served import ServedModel, detect_device, open_model
from sentiserve.serve.batcher import Batcher, BatchingConfig, BatchStats
from sentiserve.serve.plane import ModelStatus
from sentiserve.serve.rollouts import Split

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


@dataclass
class ServingModel:
    """The loaded versions of one model and how requests that name no version share them."""

    versions: dict[int, LoadedModel]
    rollout: Rollout
    split: Split

    @property
    def primary(self) -> LoadedModel:
        return self.versions[self.split.primary]

    @property
    def shadow(self) -> LoadedModel | None:
        shadow = self.rollout.shadow
        return None if shadow is None else self.versions[shadow]


class Registry:
    """The models a server serves, by name.

    Args:
        root: The model repository.
        batching: Batching limits for every model.
        instances: Engine instances (and threads) per model version.
        engine: Engine variant to serve (None: the manifest's default for this device).
        on_batch: Metrics hook, given the model name and version.
        on_reference: Metrics hook, given a model's name, primary version and drift
            reference (the manifest's) when it loads, and an empty one when it is unloaded.
        rollouts: Per model, its rollout given the repository's (settings that override
            the file; applied at every load).
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
        rollouts: Mapping[str, Callable[[Rollout], Rollout]] | None = None,
    ) -> None:
        self.repository = ModelRepository(root)
        self.batching = batching
        self.instances = instances or InstanceConfig()
        self.engine = engine
        self._on_batch = on_batch
        self._on_reference = on_reference
        self._rollouts = dict(rollouts or {})
        self._models: dict[str, ServingModel] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._models)

    def serving(self, name: str) -> ServingModel:
        """Every loaded version of ``name``.

        Raises:
            ModelNotFoundError: Not loaded.
        """
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return model

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """Version ``version`` of ``name``, or its primary (the split's largest share).

        Raises:
            ModelNotFoundError: Not loaded, or that version is not.
        """
        model = self.serving(name)
        if version is None:
            return model.primary
        loaded = model.versions.get(version)
        if loaded is None:
            serving = ", ".join(map(str, sorted(model.versions)))
            raise ModelNotFoundError(
                f"model {name!r} has no ready version {version} (serving {serving})"
            )
        return loaded

    def route(self, name: str, version: int | None = None) -> LoadedModel:
        """The version that answers an inference: ``version``, or the split's pick."""
        if version is not None:
            return self.get(name, version)
        model = self.serving(name)
        return model.versions[model.split.pick()]

    def load(self, name: str) -> ServingModel:
        """Load (or reload) ``name``'s versions atomically; on failure the old set serves."""
        built: list[LoadedModel] = []
        try:
            rollout = read_rollout(self.repository.root / name / CONFIG)
            override = self._rollouts.get(name)
            if override is not None:
                rollout = override(rollout)
            numbers = rollout.policy.select(self.repository.versions(name))
            if not numbers:
                raise ModelNotFoundError(f"model {name!r} has no versions")
            for number in numbers:
                built.append(self._build(name, number))
            versions = {m.version: m for m in built}
            split = Split(rollout.weights(list(versions)))
        except SentiserveError as exc:
            for model in built:
                model.batcher.stop()
            self._errors[name] = str(exc)
            logger.error("loading %s failed: %s", name, exc)
            raise
        serving = ServingModel(versions, rollout, split)
        with self._lock:
            old = self._models.get(name)
            self._models[name] = serving
            self._errors.pop(name, None)
        primary = serving.primary
        self._on_reference(name, primary.version, primary.served.version.manifest.reference)
        if old is not None:
            for model in old.versions.values():
                threading.Thread(target=model.batcher.stop, daemon=True).start()
        shares = ", ".join(f"v{v}: {w}" for v, w in split.weights.items())
        shadow = f", shadow v{rollout.shadow}" if rollout.shadow is not None else ""
        logger.info("serving %s versions %s (split %s%s)", name, numbers, shares, shadow)
        return serving

    def _build(self, name: str, number: int) -> LoadedModel:
        """One version, verified, opened, warmed up, its batcher started."""
        loaded = self.repository.load(name, number)
        dev = detect_device()
        plan = self.instances.resolve(dev)
        served = open_model(loaded, engine=self.engine, threads=plan.threads, device=dev)
        engines = served.instances(plan.count, plan.threads)
        solo = served.open_engine(plan.solo_threads) if plan.solo_threads else None
        sessions = {id(e): e for e in [*engines, *([solo] if solo else [])]}
        for engine in sessions.values():
            # Ready only after every session ran once (first runs allocate).
            predict_probabilities(engine, served.tokenizer, WARMUP_TEXTS)

        def on_batch(stats: BatchStats) -> None:
            self._on_batch(name, number, stats)

        batcher = Batcher(
            engines,
            served.tokenizer,
            self.batching,
            on_batch=on_batch,
            name=f"batcher-{name}-{number}",
            solo=solo,
        )
        batcher.start()
        logger.info(
            "loaded %s v%d (%s, %d instances x %d threads on %d session(s), solo %d)",
            name,
            number,
            served.variant,
            plan.count,
            plan.threads,
            len({id(e) for e in engines}),
            plan.solo_threads,
        )
        return LoadedModel(served, batcher, plan)

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
        self._on_reference(name, model.primary.version, {})
        for loaded in model.versions.values():
            loaded.batcher.stop()

    def index(self) -> list[ModelStatus]:
        """Every model in the repository with its state (READY, UNAVAILABLE): one entry per
        loaded version, as Triton lists them."""
        out = []
        for name in sorted(set(self.repository.servable()) | set(self._models)):
            model = self._models.get(name)
            if model is not None:
                out += [ModelStatus(name, v, "READY") for v in sorted(model.versions)]
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
            for loaded in model.versions.values():
                loaded.batcher.stop()
