"""A model repository in a local folder: served where it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalStore:
    location: str
    cache_dir: Path

    def local(self) -> Path:
        return Path(self.location)
