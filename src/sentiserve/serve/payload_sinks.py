"""Where payload log events go, and how the files are read back: an http(s) receiver
(KServe's logger format, or CloudEvents' batched mode), JSON Lines or Parquet objects under an
S3 prefix, or the same files in a folder (see :mod:`sentiserve.serve.payloads` for the log
itself)."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sentiserve.errors import ConfigError

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


class Sink(Protocol):
    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver a batch of structured CloudEvents; raise when it could not."""
        ...

    def close(self) -> None: ...


class HttpSink:
    """KServe's logger format: one POST per event, binary content mode (or with ``batch``,
    one POST per batch, batched content mode), over one kept-alive connection (the standard
    library's client: the least Python per event, which matters because this thread shares
    the interpreter with the server's event loop)."""

    def __init__(self, url: str, timeout_s: float = 5.0, batch: bool = False) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(f"payload log target {url!r} has no host")
        self.url = url
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._batch = batch
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(*self._address, timeout=self._timeout_s)
        return self._connection

    def _post(self, event: dict[str, Any]) -> None:
        headers = {
            f"ce-{k}": str(v)
            for k, v in event.items()
            if k not in ("data", "datacontenttype") and v is not None
        }
        headers["content-type"] = event["datacontenttype"]
        self._request(json.dumps(event["data"], separators=(",", ":")).encode(), headers)

    def _request(self, body: bytes, headers: dict[str, str]) -> None:
        connection = self._connect()
        try:
            connection.request("POST", self._path, body, headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._connection = None
            raise
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")

    def send(self, events: list[dict[str, Any]]) -> None:
        if self._batch:
            body = json.dumps(
                [{k: v for k, v in e.items() if v is not None} for e in events],
                separators=(",", ":"),
            ).encode()
            try:
                self._request(body, {"content-type": BATCH_CONTENT_TYPE})
            except (OSError, http.client.HTTPException) as exc:
                raise SinkError(len(events), f"{self.url} refused a batch: {exc}") from exc
            return
        failed = 0
        for event in events:
            try:
                self._post(event)
            except (OSError, http.client.HTTPException):
                failed += 1
        if failed:
            raise SinkError(failed, f"{self.url} refused {failed} of {len(events)} events")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


class FolderSink:
    """JSON Lines files of structured CloudEvents, each written whole."""

    def __init__(self, folder: Path, format: str = "jsonl") -> None:  # noqa: A002
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot make the payload log folder {folder}: {exc}") from exc
        self._names = _file_names(format)
        self._encode = FORMATS[format]

    def send(self, events: list[dict[str, Any]]) -> None:
        name = next(self._names)
        partial = self.folder / f".{name}.partial"
        partial.write_bytes(self._encode(events))
        os.replace(partial, self.folder / name)

    def close(self) -> None:
        pass


class S3Sink:
    """The same JSON Lines files as objects under an ``s3://`` prefix."""

    def __init__(self, url: str, format: str = "jsonl") -> None:  # noqa: A002
        from sentiserve.repository.stores.s3 import S3Url, client

        self.url = S3Url.parse(url)
        self._s3 = client(os.environ.get("AWS_ENDPOINT_URL") or None)
        self._names = _file_names(format)
        self._encode = FORMATS[format]

    def send(self, events: list[dict[str, Any]]) -> None:
        body = self._encode(events)
        self._s3.put_object(Bucket=self.url.bucket, Key=self.url.key(next(self._names)), Body=body)

    def close(self) -> None:
        pass


class SinkError(Exception):
    """Some events of a batch were not delivered (``lost`` of them)."""

    def __init__(self, lost: int, message: str) -> None:
        super().__init__(message)
        self.lost = lost


def _file_names(format: str = "jsonl") -> Iterator[str]:  # noqa: A002
    """payloads-<UTC time>-<host>-<pid>-<n>.<format>: sortable by time, unique per process."""
    host = socket.gethostname().replace("/", "_")
    n = 0
    while True:
        n += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        yield f"payloads-{stamp}-{host}-{os.getpid()}-{n:06d}.{format}"


def _jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def _parquet(events: list[dict[str, Any]]) -> bytes:
    """One row per event: each attribute a string column, ``data`` its JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted({k for e in events for k in e})
    columns = {
        name: [
            None if name not in e else json.dumps(e[name]) if name == "data" else str(e[name])
            for e in events
        ]
        for name in names
    }
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


FORMATS = {"jsonl": _jsonl, "parquet": _parquet}
"""How a batch of events becomes a file (or an S3 object)."""


def open_sink(target: str, format: str = "jsonl", batch: bool = False) -> Sink:  # noqa: A002
    """The sink for ``target`` (see the module docstring)."""
    if target.startswith(("http://", "https://")):
        return HttpSink(target, batch=batch)
    if target.startswith("s3://"):
        return S3Sink(target, format)
    if "://" in target:
        raise ConfigError(
            f"payload log target {target!r}: expected http(s)://, s3://bucket/prefix or a folder"
        )
    return FolderSink(Path(target), format)


def read_events(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """The events of payload log files (JSON Lines of structured CloudEvents, or Parquet); a
    folder means every ``*.jsonl`` and ``*.parquet`` file in it, in name (time) order.

    Raises:
        ConfigError: A file cannot be read or holds a line that is not a JSON object.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted([*path.glob("*.jsonl"), *path.glob("*.parquet")], key=lambda p: p.name)
        else:
            files.append(path)
    for file in files:
        if file.suffix == ".parquet":
            yield from _parquet_events(file)
            continue
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the payload log {file}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file}:{number}: not a JSON event: {exc.msg}") from exc
            if not isinstance(event, dict):
                raise ConfigError(f"{file}:{number}: not a JSON object")
            yield event


def _parquet_events(file: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(file).to_pylist()
    except ImportError as exc:
        raise ConfigError("reading parquet payload logs needs pyarrow") from exc
    except Exception as exc:  # pyarrow's errors: not a Parquet file, truncated, ...
        raise ConfigError(f"cannot read the payload log {file}: {exc}") from exc
    for row in rows:
        event = {k: v for k, v in row.items() if v is not None}
        if "data" in event:
            event["data"] = json.loads(event["data"])
        yield event
