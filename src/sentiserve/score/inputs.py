"""Reading texts to score in chunks, whatever the format: CSV, TSV, JSONL or Parquet files, or
a folder of them (files in name order). Memory stays flat: Parquet is read a record batch at
a time, CSV and TSV through pyarrow's streaming reader, JSONL a line at a time.

Each chunk is a list of rows ``(id, text)`` in input order; ``text`` is whatever the column
held (a row with a missing or non-string text is scored as an error, not dropped), or with
a pair column the tuple ``(text, text_pair)``. Chunk
boundaries depend only on the input and the chunk size, so a resumed run cuts the same
chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve.data.files import SUFFIXES
from sentiserve.errors import DataError

FORMATS = SUFFIXES
"""File suffix -> format: the same table the training data reader uses."""

Row = tuple[Any, Any]
"""(id, text) of one input row; text is (text, text_pair) when the spec has a pair column."""


@dataclass(frozen=True)
class InputSpec:
    """Which columns hold the text, the id (None: the row number, from 0) and, for models
    that compare two texts, the second text of each pair (None: single texts)."""

    text_column: str = "text"
    id_column: str | None = None
    pair_column: str | None = None

    def columns(self) -> list[str]:
        """The text columns: the text, then the pair's second text if any."""
        return [self.text_column, *([self.pair_column] if self.pair_column else [])]


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the data files in a folder (sorted by name).

    Raises:
        DataError: Nothing to read, or a file of a format not read here.
    """
    if path.is_file():
        if path.suffix.lower() not in FORMATS:
            raise DataError(f"{path}: not a CSV, TSV, JSONL or Parquet file")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise DataError(f"{path}: no CSV, TSV, JSONL or Parquet files in this folder")
        return files
    raise DataError(f"{path} does not exist")


def count_rows(files: list[Path]) -> int | None:
    """Rows in ``files`` when cheap to know (Parquet metadata); None otherwise."""
    import pyarrow.parquet as pq

    if any(FORMATS[f.suffix.lower()] != "parquet" for f in files):
        return None
    return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in files)


def read_chunks(files: list[Path], spec: InputSpec, chunk_rows: int) -> Iterator[list[Row]]:
    """Rows of every file, in order, ``chunk_rows`` at a time (the last chunk shorter)."""
    if chunk_rows < 1:
        raise DataError("chunk size must be >= 1")
    chunk: list[Row] = []
    number = 0
    for path in files:
        for ids, texts in _batches(path, spec):
            for identifier, text in zip(ids, texts, strict=True):
                chunk.append((number if identifier is None else identifier, text))
                number += 1
                if len(chunk) == chunk_rows:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


def _batches(path: Path, spec: InputSpec) -> Iterator[tuple[list[Any], list[Any]]]:
    """(ids or Nones, texts) in the file's order, a block at a time."""
    kind = FORMATS[path.suffix.lower()]
    if kind == "jsonl":
        yield from _jsonl(path, spec)
        return
    for table in _arrow_batches(path, kind, spec.columns()):
        names = table.schema.names
        if spec.text_column not in names:
            raise DataError(
                f"{path}: no column {spec.text_column!r} (columns: {', '.join(names)}); "
                "choose one with --text-column"
            )
        if spec.id_column is not None and spec.id_column not in names:
            raise DataError(f"{path}: no id column {spec.id_column!r} (--id-column)")
        if spec.pair_column is not None and spec.pair_column not in names:
            raise DataError(f"{path}: no pair column {spec.pair_column!r} (--pair-column)")
        texts = table.column(spec.text_column).to_pylist()
        if spec.pair_column is not None:
            pairs = table.column(spec.pair_column).to_pylist()
            texts = list(zip(texts, pairs, strict=True))
        ids = (
            table.column(spec.id_column).to_pylist()
            if spec.id_column is not None
            else [None] * len(texts)
        )
        yield ids, texts


def _arrow_batches(path: Path, kind: str, text_columns: list[str]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
                yield pa.Table.from_batches([batch])
            return
        delimiter = "\t" if kind == "tsv" else ","
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=4 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            # The text column is text even when every value looks like a number; empty
            # fields are nulls (scored as errors, not as empty strings).
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(text_columns, pa.string()), strings_can_be_null=True
            ),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot read it as {kind}: {exc}") from exc


def _jsonl(path: Path, spec: InputSpec) -> Iterator[tuple[list[Any], list[Any]]]:
    ids: list[Any] = []
    texts: list[Any] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: invalid JSON") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            text = row.get(spec.text_column)
            texts.append(text if spec.pair_column is None else (text, row.get(spec.pair_column)))
            ids.append(row.get(spec.id_column) if spec.id_column is not None else None)
            if len(texts) == 8192:
                yield ids, texts
                ids, texts = [], []
    if texts:
        yield ids, texts
