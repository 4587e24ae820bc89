"""Publish a model repository folder to S3 and pull it back, verified.

Layout in the bucket: the folder's files under the prefix, exactly as on disk (so Triton's
own ``--model-repository=s3://bucket/prefix`` reads the same objects), plus
``SHA256SUMS.json`` at the prefix: every file's size and sha256. Publish writes the
manifest last, so a half-published tree has none and cannot be pulled. Pull downloads into
a temporary folder beside the destination, verifies every file against the manifest, and
only then renames it into place: a missing or corrupted object leaves nothing behind.

Credentials, region and endpoint come from the standard AWS sources (environment, shared
config, instance or IRSA roles); ``AWS_ENDPOINT_URL`` or ``--endpoint-url`` points at an
S3-compatible server. Throttling and 5xx answers are retried with backoff by botocore's
adaptive retry mode (``AWS_MAX_ATTEMPTS`` attempts, default 8).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve.errors import RepositoryError, SentiserveError
from sentiserve.repository.manifest import FileEntry

logger = logging.getLogger(__name__)

MANIFEST = "SHA256SUMS.json"
MULTIPART_THRESHOLD = 8 * 1024 * 1024
MAX_ATTEMPTS = 8

Progress = Callable[[str, int], None]
"""Called with a file's relative path and the bytes just transferred for it."""


class StoreError(SentiserveError):
    """An S3 operation failed: unreachable endpoint, missing bucket, denied, corrupted."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise StoreError(f"{url!r} is not an s3:// URL")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise StoreError(f"{url!r} has no bucket")
        return cls(bucket, prefix.strip("/"))

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def client(endpoint_url: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", MAX_ATTEMPTS))
    config = Config(
        retries={"max_attempts": attempts, "mode": "adaptive"}, connect_timeout=5, read_timeout=60
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _explain(exc: Exception, url: S3Url) -> StoreError:
    """One clear line for the errors a user can cause or fix."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, EndpointConnectionError):
        return StoreError(f"cannot reach the S3 endpoint for {url}: {exc}")
    if isinstance(exc, NoCredentialsError):
        return StoreError("no AWS credentials found (AWS_ACCESS_KEY_ID, a profile or a role)")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return StoreError(f"bucket {url.bucket!r} does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StoreError(f"access denied to {url} ({code}): check the credentials")
        return StoreError(f"S3 error on {url}: {code or exc}")
    return StoreError(f"S3 error on {url}: {type(exc).__name__}: {exc}")


def _call(source: S3Url, action: Callable[[], Any], missing: str) -> Any:
    """Run one S3 call; a missing object becomes ``missing``, anything else one clear line."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return action()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
            raise StoreError(missing) from exc
        raise _explain(exc, source) from exc
    except (BotoCoreError, Boto3Error) as exc:
        # Boto3Error: the transfer manager's own (a download whose body kept arriving cut
        # short, after its retries), found with a fault-injecting proxy.
        raise _explain(exc, source) from exc


def files_to_publish(folder: Path) -> list[Path]:
    """Every file to publish: hidden files and folders (half-written versions) excluded."""
    out = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            out.append(path)
    return out


def publish(
    folder: Path,
    url: str,
    *,
    endpoint_url: str | None = None,
    progress: Progress = lambda _f, _n: None,
) -> dict[str, Any]:
    """Upload ``folder`` to ``url`` and write its manifest last; returns the manifest."""
    from boto3.s3.transfer import TransferConfig

    target = S3Url.parse(url)
    if not folder.is_dir():
        raise RepositoryError(f"{folder} is not a folder")
    files = files_to_publish(folder)
    if not files:
        raise RepositoryError(f"{folder} has no files to publish")
    s3 = client(endpoint_url)
    transfer = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
    )
    # A manifest left from an earlier publish would vouch for objects this one is about to
    # replace: remove it first, so that until the new one is written last, the prefix has none
    # (a pull then fails clearly) instead of one that mixes two versions.
    _call(
        target,
        lambda: s3.delete_object(Bucket=target.bucket, Key=target.key(MANIFEST)),
        f"{target}: removing the old {MANIFEST} failed",
    )
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        relative = path.relative_to(folder).as_posix()
        entries[relative] = FileEntry.of(folder, relative).model_dump(exclude={"file"})
        upload = functools.partial(
            s3.upload_file,
            str(path),
            target.bucket,
            target.key(relative),
            Config=transfer,
            Callback=functools.partial(progress, relative),
        )
        _call(target, upload, f"{target}: upload of {relative} failed")
    manifest = {"format": 1, "created": dt.datetime.now(dt.UTC).isoformat(), "files": entries}
    _call(
        target,
        lambda: s3.put_object(
            Bucket=target.bucket,
            Key=target.key(MANIFEST),
            Body=json.dumps(manifest, indent=1).encode(),
            ContentType="application/json",
        ),
        f"{target}: writing {MANIFEST} failed",
    )
    return manifest


def read_manifest(url: str, *, endpoint_url: str | None = None, s3: Any = None) -> dict[str, Any]:
    """The published manifest at ``url`` (``s3``: a client to reuse)."""
    source = S3Url.parse(url)
    s3 = s3 or client(endpoint_url)
    body = _call(
        source,
        lambda: s3.get_object(Bucket=source.bucket, Key=source.key(MANIFEST)),
        f"{source} has no {MANIFEST}: publish it with `sentiserve repository publish` "
        "(a half-published tree has none)",
    )
    try:
        manifest: dict[str, Any] = json.loads(body["Body"].read())
    except ValueError as exc:
        raise StoreError(f"{source}/{MANIFEST} is not valid JSON") from exc
    if not isinstance(manifest.get("files"), dict):
        raise StoreError(f"{source}/{MANIFEST} lists no files")
    return manifest


def _safe_relative(relative: str) -> Path:
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise StoreError(f"manifest names an unsafe path {relative!r}")
    return path


def pull(
    url: str,
    dest: Path,
    *,
    endpoint_url: str | None = None,
    progress: Progress = lambda _f, _n: None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Download ``url`` into ``dest`` (replacing it whole), verified against the manifest
    (``manifest``: one the caller has just read with ``read_manifest``).

    Raises:
        StoreError: the manifest or an object is missing, a digest or size differs, or S3
            cannot be reached; ``dest`` is then left as it was.
    """
    source = S3Url.parse(url)
    try:
        if dest.parent.is_dir():
            _recover(dest)
    except OSError as exc:
        raise _unwritable(source, dest, exc) from exc
    s3 = client(endpoint_url)
    manifest = manifest or read_manifest(url, s3=s3)
    if _same_files(dest / MANIFEST, manifest):
        logger.info("%s is already a copy of %s", dest, source)
        return manifest
    staging = dest.parent / f".{dest.name}.pulling-{uuid.uuid4().hex[:8]}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as exc:
        raise _unwritable(source, dest, exc) from exc
    try:
        for relative, entry in sorted(manifest["files"].items()):
            local = staging / _safe_relative(relative)
            local.parent.mkdir(parents=True, exist_ok=True)
            download = functools.partial(
                s3.download_file,
                source.bucket,
                source.key(relative),
                str(local),
                Callback=functools.partial(progress, relative),
            )
            missing = f"{source}: {relative} is listed in the manifest but missing from the bucket"
            _call(source, download, missing)
            got = FileEntry.of(staging, relative)
            if got.bytes != entry["bytes"] or got.sha256 != entry["sha256"]:
                raise StoreError(
                    f"{source}: {relative} is corrupted (sha256 {got.sha256[:12]}…, "
                    f"{got.bytes} bytes; the manifest says {entry['sha256'][:12]}…, "
                    f"{entry['bytes']} bytes)"
                )
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        # botocore turns network faults into its own errors: an OSError here is the local
        # disk (full, a file-size limit, permissions).
        shutil.rmtree(staging, ignore_errors=True)
        raise _unwritable(source, dest, exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _unwritable(source: S3Url, dest: Path, exc: OSError) -> StoreError:
    """The one-line error of a copy that cannot be written (or its folder read) locally."""
    return StoreError(
        f"cannot write the copy of {source} under {dest.parent}: {exc.strerror or exc} "
        f"({dest} is left as it was)"
    )


def _recover(dest: Path) -> None:
    """Undo what a pull killed midway left next to ``dest``: its staging folders go, and if
    it died between moving the old copy aside and moving the new one in, the old copy comes
    back. (One puller per destination: a pod's init container, or one command.)"""
    for stale in dest.parent.glob(f".{dest.name}.pulling-*"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not dest.exists():
        olds.pop().rename(dest)
    for stale in olds:
        shutil.rmtree(stale, ignore_errors=True)


def _same_files(local_manifest: Path, manifest: dict[str, Any]) -> bool:
    """``dest`` was pulled from this very manifest (its files are verified again at load)."""
    try:
        return bool(json.loads(local_manifest.read_text())["files"] == manifest["files"])
    except (OSError, ValueError, KeyError):
        return False


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where ``sentiserve serve --model-repository s3://...`` keeps its verified copy."""
    source = S3Url.parse(url)
    return cache_dir / "s3" / source.bucket / (source.prefix or "_root")


@dataclass(frozen=True)
class S3Store:
    """A model repository at an S3 prefix, served from a verified copy in the cache."""

    location: str
    cache_dir: Path
    progress: Progress = lambda _f, _n: None

    def local(self) -> Path:
        local = cache_path(self.location, self.cache_dir)
        logger.info("pulling %s into %s", self.location, local)
        pull(self.location, local, progress=self.progress)
        return local
