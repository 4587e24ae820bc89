"""Where a model repository lives: a local folder, or an S3 prefix. One small protocol, one
module per backend, and ``open_repository(location)`` for every command that takes
``--model-repository``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sentiserve.errors import ConfigError


class Store(Protocol):
    """A model repository's home."""

    @property
    def location(self) -> str:
        """Where it is, as the user wrote it."""
        ...

    def local(self) -> Path:
        """A local folder holding the repository, verified (a remote one is pulled into
        the cache first, or reused from it when the cached copy is current)."""
        ...


def open_repository(location: str, cache_dir: Path) -> Store:
    """The store for ``location``: a folder path, or ``s3://bucket/prefix``.

    Raises:
        ConfigError: ``location`` is a URL of a scheme no store handles.
    """
    from sentiserve.repository.stores.local import LocalStore
    from sentiserve.repository.stores.s3 import S3Store

    schemes: dict[str, type[LocalStore] | type[S3Store]] = {"": LocalStore, "s3": S3Store}
    scheme = urlsplit(location).scheme if "://" in location else ""
    store = schemes.get(scheme)
    if store is None:
        raise ConfigError(
            f"{location!r}: repositories live in a folder or at s3://bucket/prefix, "
            f"not at {scheme}://"
        )
    return store(location, cache_dir)


__all__ = ["Store", "open_repository"]
