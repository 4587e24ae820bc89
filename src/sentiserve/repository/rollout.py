"""Which versions of a model serve, and how its unversioned route shares traffic among them.

Both live in the model's ``config.pbtxt``, so Triton and sentiserve read one file:

- ``version_policy``, Triton's own field: ``latest { num_versions: N }`` (the default, N=1),
  ``specific { versions: [..] }`` or ``all { }``. Triton loads exactly these versions, and so
  does the embedded server; each is addressable (``/v2/models/m/versions/N/...``).
- the parameter ``sentiserve_rollout`` (JSON), which Triton ignores and reports back:
  ``{"split": {"3": 90, "4": 10}, "shadow": 4}``. Requests that name no version are shared by
  the split's weights (none: the newest loaded version takes them all); the shadow version
  gets a copy of each of them, and its answers are compared, never returned.

``sentiserve rollout`` writes both (see :func:`write_rollout`); a reload of the model applies
them at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sentiserve.errors import ConfigError, ModelNotFoundError
from sentiserve.files import write_text_atomic

ROLLOUT = "sentiserve_rollout"
"""The ``config.pbtxt`` parameter holding the split and the shadow (JSON)."""


@dataclass(frozen=True)
class VersionPolicy:
    """Triton's ``version_policy``: the newest ``latest`` versions, the ``specific`` ones,
    or all of them."""

    kind: str = "latest"
    latest: int = 1
    specific: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "specific", "all"):
            raise ConfigError(f"a version policy is latest, specific or all; got {self.kind!r}")
        if self.kind == "latest" and self.latest < 1:
            raise ConfigError("latest:N needs N >= 1")
        if self.kind == "specific" and not self.specific:
            raise ConfigError("a specific version policy needs at least one version")
        if any(v < 1 for v in self.specific):
            raise ConfigError("version numbers are positive integers")

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``specific:1,3`` or ``all`` (case does not matter).

        Raises:
            ConfigError: Anything else.
        """
        kind, _, value = text.strip().lower().partition(":")
        try:
            if kind == "all" and not value:
                return cls("all")
            if kind == "latest":
                return cls("latest", int(value) if value else 1)
            if kind == "specific" and value:
                return cls("specific", specific=tuple(sorted({int(v) for v in value.split(",")})))
        except ValueError:
            pass
        raise ConfigError(f"version policy must be latest[:N], specific:A,B or all; got {text!r}")

    def select(self, available: Sequence[int]) -> list[int]:
        """The versions this policy loads out of ``available``, ascending.

        Raises:
            ModelNotFoundError: A ``specific`` version is not in the repository.
        """
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            missing = sorted(set(self.specific) - set(ordered))
            if missing:
                raise ModelNotFoundError(
                    f"the version policy names versions {missing} that the repository does not "
                    f"have (versions: {', '.join(map(str, ordered)) or 'none'})"
                )
            return list(self.specific)
        return ordered[-self.latest :]

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.specific))
        return f"latest:{self.latest}"


@dataclass(frozen=True)
class Rollout:
    """A model's version policy, traffic split (version -> weight) and shadow version."""

    policy: VersionPolicy = field(default_factory=VersionPolicy)
    split: Mapping[int, int] = field(default_factory=dict)
    shadow: int | None = None

    def __post_init__(self) -> None:
        if any(w < 0 for w in self.split.values()):
            raise ConfigError("split weights must be >= 0")
        if self.split and not sum(self.split.values()):
            raise ConfigError("a split needs at least one version with a weight above 0")

    @property
    def is_default(self) -> bool:
        return self == Rollout()

    def weights(self, loaded: Sequence[int]) -> dict[int, int]:
        """Who answers requests that name no version: the split (its versions must be
        loaded), or the newest loaded version alone.

        Raises:
            ConfigError: The split or the shadow names a version that is not loaded.
        """
        if not loaded:
            raise ModelNotFoundError("no version is loaded")
        wanted = [*self.split, *([self.shadow] if self.shadow is not None else [])]
        missing = sorted(set(wanted) - set(loaded))
        if missing:
            raise ConfigError(
                f"the rollout names versions {missing}, which the version policy "
                f"({self.policy}) does not load (loaded: {', '.join(map(str, sorted(loaded)))})"
            )
        weights = {v: w for v, w in sorted(self.split.items()) if w > 0}
        return weights or {max(loaded): 1}

    def parameter(self) -> str:
        """The ``sentiserve_rollout`` parameter's JSON."""
        doc: dict[str, Any] = {"split": {str(v): w for v, w in sorted(self.split.items())}}
        if self.shadow is not None:
            doc["shadow"] = self.shadow
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_config(cls, config: Any) -> Rollout:
        """From a ``ModelConfig`` message (or Triton's JSON answer, as a dict).

        Raises:
            ConfigError: The parameter is not a valid rollout.
        """
        if isinstance(config, dict):
            return cls._from_json(config)
        policy = VersionPolicy()
        which = config.version_policy.WhichOneof("policy_choice")
        if which == "all":
            policy = VersionPolicy("all")
        elif which == "specific":
            versions = tuple(sorted(config.version_policy.specific.versions))
            policy = VersionPolicy("specific", specific=versions)
        elif which == "latest":
            policy = VersionPolicy("latest", config.version_policy.latest.num_versions or 1)
        raw = config.parameters[ROLLOUT].string_value if ROLLOUT in config.parameters else ""
        return cls._with(policy, raw)

    @classmethod
    def _from_json(cls, config: dict[str, Any]) -> Rollout:
        policy = VersionPolicy()
        doc = config.get("version_policy") or {}
        if "all" in doc:
            policy = VersionPolicy("all")
        elif "specific" in doc:
            versions = tuple(sorted(int(v) for v in doc["specific"].get("versions", [])))
            policy = VersionPolicy("specific", specific=versions)
        elif "latest" in doc:
            policy = VersionPolicy("latest", int(doc["latest"].get("num_versions") or 1))
        raw = (config.get("parameters") or {}).get(ROLLOUT, {}).get("string_value", "")
        return cls._with(policy, raw)

    @classmethod
    def _with(cls, policy: VersionPolicy, raw: str) -> Rollout:
        if not raw:
            return cls(policy)
        try:
            doc = json.loads(raw)
            split = {int(v): int(w) for v, w in (doc.get("split") or {}).items()}
            shadow = doc.get("shadow")
            return cls(policy, split, None if shadow is None else int(shadow))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"the {ROLLOUT} parameter is not a valid rollout: {raw!r}") from exc

    def apply(self, config: Any) -> None:
        """Set this rollout on a ``ModelConfig`` message (its version policy and parameter)."""
        config.ClearField("version_policy")
        if self.policy.kind == "all":
            config.version_policy.all.SetInParent()
        elif self.policy.kind == "specific":
            config.version_policy.specific.versions.extend(self.policy.specific)
        elif self.policy.latest != 1:
            config.version_policy.latest.num_versions = self.policy.latest
        if self.split or self.shadow is not None:
            config.parameters[ROLLOUT].string_value = self.parameter()
        elif ROLLOUT in config.parameters:
            del config.parameters[ROLLOUT]


def parse_split(text: str) -> dict[int, int]:
    """``3=90,4=10`` as {3: 90, 4: 10} (empty text: no split).

    Raises:
        ConfigError: Not ``VERSION=WEIGHT`` pairs of integers.
    """
    split: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        version, sep, weight = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            split[int(version)] = int(weight)
        except ValueError:
            raise ConfigError(
                f"a split is VERSION=WEIGHT pairs, such as 3=90,4=10; got {text!r}"
            ) from None
    return split


def _parse(path: Path) -> Any:
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ConfigError(f"cannot read the model configuration {path}: {exc}") from exc


def read_rollout(path: Path) -> Rollout:
    """The rollout in ``config.pbtxt`` at ``path`` (the default where it has none)."""
    return Rollout.from_config(_parse(path))


def with_rollout(text: str, rollout: Rollout) -> str:
    """A ``config.pbtxt`` text with ``rollout`` set in it (unchanged for the default)."""
    if rollout.is_default:
        return text
    config = text_format.Parse(text, mc.ModelConfig())
    rollout.apply(config)
    return str(text_format.MessageToString(config))


def write_rollout(path: Path, rollout: Rollout) -> None:
    """Set ``rollout`` in the ``config.pbtxt`` at ``path``, atomically."""
    config = _parse(path)
    rollout.apply(config)
    write_text_atomic(path, text_format.MessageToString(config))
