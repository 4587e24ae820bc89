"""Scoring input and output in S3, with the credentials and ``AWS_ENDPOINT_URL`` rules of
``sentiserve repository publish``/``pull`` (the same client).

An input URL names one object (``s3://bucket/reviews.parquet``) or a prefix of them
(``s3://bucket/reviews/``). Objects are copied into the cache once; a copy whose size and
ETag still match the bucket is reused, so a resumed run reads the same files. The output is
uploaded in one PUT when the run is complete, so it never appears half-written.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from sentiserve.repository.stores.s3 import S3Url, StoreError, _call, client
from sentiserve.score.inputs import FORMATS


def fetch_input(url: str, cache_dir: Path) -> tuple[list[Path], str]:
    """Local copies of the data objects at ``url`` (sorted by key) and a fingerprint of
    what was read (keys, sizes, ETags).

    Raises:
        StoreError: Nothing to read there, or S3 cannot be reached.
    """
    source = S3Url.parse(url)
    s3 = client()
    listed: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_objects_v2")

    def page_through() -> None:
        for page in paginator.paginate(Bucket=source.bucket, Prefix=source.prefix):
            listed.extend(page.get("Contents", []))

    _call(source, page_through, f"{source}: no such bucket or prefix")
    exact = [o for o in listed if o["Key"] == source.prefix]
    objects = exact or [
        o for o in listed if Path(o["Key"]).suffix.lower() in FORMATS and o["Size"] > 0
    ]
    if not objects:
        raise StoreError(f"{source}: no CSV, TSV, JSONL or Parquet objects there")
    objects.sort(key=lambda o: o["Key"])
    folder = cache_dir / "score-inputs" / hashlib.sha256(url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, obj in enumerate(objects):
        name = f"{number:05d}-{Path(obj['Key']).name}"
        local = folder / name
        stamp = folder / f".{name}.etag"
        if not (local.is_file() and stamp.is_file() and stamp.read_text() == obj["ETag"]):
            partial = folder / f".{name}.partial"
            download = functools.partial(s3.download_file, source.bucket, obj["Key"], str(partial))
            _call(source, download, f"{source}: {obj['Key']} vanished while reading")
            partial.replace(local)
            stamp.write_text(obj["ETag"])
        files.append(local)
    parts = [[o["Key"], o["Size"], o["ETag"]] for o in objects]
    return files, hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def upload(local: Path, url: str) -> None:
    """Put ``local`` at ``url`` (one object)."""
    target = S3Url.parse(url)
    if not target.prefix or target.prefix.endswith("/"):
        raise StoreError(f"{url}: name the output object (s3://bucket/path/scores.parquet)")
    s3 = client()
    _call(
        target,
        lambda: s3.upload_file(str(local), target.bucket, target.prefix),
        f"{target}: the bucket does not exist",
    )
