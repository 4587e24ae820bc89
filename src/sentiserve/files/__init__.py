"""Files on disk: digests (the data cache, the model repository, the S3 store) and atomic
text writes."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a dot-file renamed over it: readers see the old text or the new."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
