"""Reading a model repository in Triton's layout.

```
model_repository/
  <model>/config.pbtxt
  <model>/<version>/manifest.json, tokenizer.json, model*.onnx
```

Folders whose names start with a dot are work in progress of a writer and are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sentiserve.errors import ModelNotFoundError, RepositoryError
from sentiserve.repository.manifest import MANIFEST, Manifest

CONFIG = "config.pbtxt"
DEFAULT_ROOT = Path("model_repository")


@dataclass(frozen=True)
class ModelVersion:
    """A verified model version on disk."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.model

    @property
    def version(self) -> int:
        return self.manifest.version

    def file(self, name: str) -> Path:
        return self.path / name


class ModelRepository:
    """A folder of models, each a folder of numbered versions."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def models(self) -> list[str]:
        """Model names (folders with a config.pbtxt), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).is_file()
        )

    def servable(self) -> list[str]:
        """Models sentiserve itself serves: those with a manifest in a version folder. The
        members of Triton's GPU ensemble (tokenizer, ONNX model, postprocess) have none."""

        def has_manifest(model: str) -> bool:
            return any(
                (self.root / model / str(v) / MANIFEST).is_file() for v in self.versions(model)
            )

        return [m for m in self.models() if has_manifest(m)]

    def versions(self, model: str) -> list[int]:
        """Version numbers of ``model``, ascending."""
        folder = self.root / model
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in folder.iterdir()
            if p.is_dir() and p.name.isascii() and p.name.isdigit()
        )

    def next_version(self, model: str) -> int:
        versions = self.versions(model)
        return versions[-1] + 1 if versions else 1

    def load(self, model: str, version: int | None = None, *, verify: bool = True) -> ModelVersion:
        """Read (and by default verify) one version; the newest when ``version`` is None.

        Raises:
            ModelNotFoundError: No such model or version.
            RepositoryError: The version is incomplete or corrupt.
        """
        if not self.root.is_dir():
            raise ModelNotFoundError(f"model repository {self.root} does not exist")
        if model not in self.models():
            known = ", ".join(self.models()) or "none"
            raise ModelNotFoundError(f"no model {model!r} in {self.root} (models: {known})")
        versions = self.versions(model)
        if not versions:
            raise ModelNotFoundError(f"model {model!r} in {self.root} has no versions")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise ModelNotFoundError(
                f"model {model!r} has no version {chosen} (versions: "
                f"{', '.join(map(str, versions))})"
            )
        folder = self.root / model / str(chosen)
        manifest = Manifest.read(folder)
        if manifest.model != model or manifest.version != chosen:
            raise RepositoryError(
                f"{folder}: manifest says {manifest.model} v{manifest.version}, "
                f"folder says {model} v{chosen}"
            )
        if verify:
            manifest.verify(folder)
        return ModelVersion(folder, manifest)
