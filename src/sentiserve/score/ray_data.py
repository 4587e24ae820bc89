"""``sentiserve score --ray``: the same scoring as a Ray Data pipeline, for when one machine
is not enough.

``read_parquet``/``read_csv``/``read_json`` -> ``map_batches`` with a scoring actor (the model
loaded once per actor, one engine session each, the same ``score_chunk`` as the single
process) -> the driver streams the scored blocks, in input order (Ray Data's
``preserve_order``), into one output file exactly as the single-process run writes it.

``--ray-address`` joins an existing cluster (KubeRay on EKS: ``deploy/ray/rayjob.yaml``);
without it a local Ray is started for the run and stopped after. The model repository is
opened by each actor through the same stores as the server (a folder all nodes see, or
``s3://``), and inputs are read by the driver's Ray Data readers (local files here; on a
cluster, a shared file system or object store path).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sentiserve import DEFAULT_MODEL
from sentiserve.errors import ConfigError, SentiserveError
from sentiserve.score.inputs import FORMATS, InputSpec, input_files
from sentiserve.score.run import (
    Summary,
    accumulate,
    check_output,
    finish,
    local_work_folder,
    output_schema,
    tally,
)

logger = logging.getLogger(__name__)

BATCH_ROWS = 2048
"""Rows per map_batches call: enough sorted batches per call to keep an actor busy."""


class ScoringActor:
    """Loads the model once; scores blocks of rows. Runs inside a Ray worker."""

    def __init__(
        self,
        repository: str,
        cache_dir: str,
        model: str,
        version: int | None,
        engine: str | None,
        spec: InputSpec,
    ) -> None:
        from sentiserve.repository.layout import ModelRepository
        from sentiserve.repository.served import open_model
        from sentiserve.repository.stores import open_repository

        folder = open_repository(repository, Path(cache_dir)).local()
        loaded = ModelRepository(folder).load(model, version)
        self.model = open_model(loaded, engine=engine, threads=1)
        self.spec = spec

    def __call__(self, batch: Any) -> Any:
        from sentiserve.score.run import score_chunk

        texts = batch.column(self.spec.text_column).to_pylist()
        if self.spec.pair_column is not None:
            pairs = batch.column(self.spec.pair_column).to_pylist()
            texts = list(zip(texts, pairs, strict=True))
        if self.spec.id_column is not None:
            ids = batch.column(self.spec.id_column).to_pylist()
        else:
            ids = [None] * len(texts)
        return score_chunk(self.model, [self.model.engine], list(zip(ids, texts, strict=True)))


def score_with_ray(
    source: str,
    output: str,
    *,
    repository: str,
    cache_dir: Path,
    model: str = DEFAULT_MODEL,
    version: int | None = None,
    spec: InputSpec | None = None,
    workers: int = 2,
    address: str | None = None,
    engine: str | None = None,
    block_rows: int = BATCH_ROWS,
) -> Summary:
    """Score ``source`` into ``output`` on Ray (see the module docstring).

    The input is cut into blocks of at most ``block_rows`` rows (a streaming repartition,
    order kept), so every actor gets work even when the input is one file Ray reads as one
    block.

    Raises:
        ConfigError: Ray is not installed, or the input mixes formats.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--ray needs Ray: pip install 'sentiserve[ray]'") from exc
    import pyarrow.parquet as pq

    spec = spec or InputSpec()
    check_output(output)
    if source.startswith("s3://"):
        from sentiserve.score.s3 import fetch_input

        files, _ = fetch_input(source, cache_dir)
    else:
        files = input_files(Path(source))
    kinds = {FORMATS[f.suffix.lower()] for f in files}
    if len(kinds) != 1:
        raise ConfigError(f"{source}: --ray reads one format at a time, found {sorted(kinds)}")
    started = ray.is_initialized()
    if not started:
        # A local Ray gets one scheduling slot per actor plus one for the readers: with only
        # os.cpu_count() slots, two actors on a 2-core machine take both and the read task
        # waits for a CPU forever.
        slots = None if address else max(os.cpu_count() or 1, workers + 1)
        ray.init(
            address=address,
            num_cpus=slots,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        dataset = _read(ray, kinds.pop(), files, spec)
        dataset = dataset.repartition(target_num_rows_per_block=block_rows)
        scored = dataset.map_batches(
            ScoringActor,
            fn_constructor_args=(repository, str(cache_dir), model, version, engine, spec),
            batch_size=block_rows,
            batch_format="pyarrow",
            concurrency=workers,
            num_cpus=1,
        )
        summary = Summary(output=output)
        begin = time.monotonic()
        work = local_work_folder(output, cache_dir)
        work.mkdir(parents=True, exist_ok=True)
        partial = work / "ray.parquet"
        row = 0
        writer = None
        try:
            for block in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                if spec.id_column is None:
                    import pyarrow as pa

                    ids = pa.array([str(i) for i in range(row, row + block.num_rows)])
                    block = block.set_column(0, "id", ids)
                row += block.num_rows
                if writer is None:
                    labels = [n[2:] for n in block.schema.names if n.startswith("p_")]
                    writer = pq.ParquetWriter(
                        partial, output_schema(labels, "labels" in block.schema.names)
                    )
                writer.write_table(block.cast(writer.schema))
                accumulate(summary, tally(block))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise SentiserveError(f"{source}: no rows to score")
        summary.seconds = time.monotonic() - begin
        finish([partial], output, _labels_of(partial), work)  # removes the work folder
        return summary
    finally:
        if not started:
            ray.shutdown()


def _read(ray: Any, kind: str, files: list[Path], spec: InputSpec) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    paths = [str(f) for f in files]
    if kind == "parquet":
        return ray.data.read_parquet(paths)
    if kind in ("csv", "tsv"):
        return ray.data.read_csv(
            paths,
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if kind == "tsv" else ",", newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(spec.columns(), pa.string()),
                strings_can_be_null=True,
            ),
        )
    return ray.data.read_json(paths, lines=True)


def _labels_of(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [n[2:] for n in pq.read_schema(path).names if n.startswith("p_")]
