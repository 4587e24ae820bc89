"""``sentiserve score`` on the tiny model: every input format, ids, bad rows, the server's
own answers, kill -9 and resume, S3 in and out (moto server), and the Ray path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiserve.local.ready import wait_until
from sentiserve.score.run import score
from tests.conftest import toy_texts
from tests.integration.serving import start_server, stop

BAD = {3: "", 7: "   ", 11: None}
"""Row numbers with no usable text, and what they hold."""


def rows(n: int = 60) -> list[dict[str, object]]:
    texts: list[object] = [text for text, _ in toy_texts(n, seed=5)]
    for index, value in BAD.items():
        texts[index] = value
    return [{"review_id": f"r{i:04d}", "text": t, "stars": i % 5} for i, t in enumerate(texts)]


def write(path: Path, data: list[dict[str, object]]) -> Path:
    table = pa.Table.from_pylist(data)
    kind = path.suffix
    if kind == ".parquet":
        pq.write_table(table, path)
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        import pyarrow.csv as pacsv

        delimiter = "\t" if kind == ".tsv" else ","
        pacsv.write_csv(table, path, pacsv.WriteOptions(delimiter=delimiter))
    return path


@pytest.fixture(scope="module")
def repo(tiny_build: Path) -> Path:
    return tiny_build / "model_repository"


def run(repo: Path, source: Path | str, output: Path | str, tmp: Path, **kw: object) -> object:
    return score(str(source), str(output), repository=str(repo), cache_dir=tmp / "cache", **kw)  # type: ignore[arg-type]


def read(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_rows(repo: Path, tmp_path: Path, suffix: str) -> None:
    source = write(tmp_path / f"in{suffix}", rows())
    out = tmp_path / "out.parquet"
    summary = run(repo, source, out, tmp_path, chunk_rows=16)
    got = read(out)
    assert len(got) == 60, "one output row per input row, bad ones included"
    assert [r["id"] for r in got] == [str(i) for i in range(60)], "ids default to row numbers"
    assert summary.rows == 60  # type: ignore[attr-defined]
    assert summary.errors == 3  # type: ignore[attr-defined]
    for index in BAD:
        assert got[index]["label"] is None
        assert got[index]["score"] is None
        assert "text" in str(got[index]["error"])
    good = [r for r in got if r["error"] is None]
    assert all(r["label"] in ("negative", "positive") for r in good)
    assert all(abs(r["p_negative"] + r["p_positive"] - 1) < 1e-5 for r in good)
    assert {r["model"] for r in got} == {"sentiment"}
    assert not (tmp_path / "out.parquet.parts").exists(), "the work folder is removed"


def test_a_folder_an_id_column_and_jsonl_output(repo: Path, tmp_path: Path) -> None:
    data = rows()
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.parquet", data[:25])
    write(folder / "b.csv", data[25:])
    out = tmp_path / "out.jsonl"
    run(repo, folder, out, tmp_path, spec=_spec(id_column="review_id"), chunk_rows=7)
    got = read(out)
    assert [r["id"] for r in got] == [r["review_id"] for r in data]
    single = tmp_path / "single.parquet"
    run(
        repo,
        write(tmp_path / "all.parquet", data),
        single,
        tmp_path,
        spec=_spec(id_column="review_id"),
    )
    assert got == read(single), "the folder scores like one file"


def _spec(**kw: object) -> object:
    from sentiserve.score.inputs import InputSpec

    return InputSpec(**kw)  # type: ignore[arg-type]


def test_results_equal_the_servers(repo: Path, tmp_path: Path) -> None:
    data = [r for r in rows() if isinstance(r["text"], str) and str(r["text"]).strip()]
    out = tmp_path / "out.parquet"
    run(repo, write(tmp_path / "in.parquet", data), out, tmp_path)
    scored = read(out)
    server = start_server(repo)
    try:
        answer = httpx.post(
            f"{server.url}/v1/sentiment", json={"texts": [r["text"] for r in data]}, timeout=30
        ).json()
    finally:
        stop(server)
    for mine, theirs in zip(scored, answer["results"], strict=True):
        assert mine["label"] == theirs["label"]
        assert abs(mine["p_positive"] - theirs["scores"]["positive"]) <= 1e-6


def test_bad_columns_and_outputs_are_clear_errors(repo: Path, tmp_path: Path) -> None:
    from sentiserve.errors import SentiserveError

    source = write(tmp_path / "in.parquet", rows())
    with pytest.raises(SentiserveError, match="no column 'body'"):
        run(repo, source, tmp_path / "o.parquet", tmp_path, spec=_spec(text_column="body"))
    with pytest.raises(SentiserveError, match=r"\.parquet or \.jsonl"):
        run(repo, source, tmp_path / "o.csv", tmp_path)
    with pytest.raises(SentiserveError, match="does not exist"):
        run(repo, tmp_path / "missing.csv", tmp_path / "o.parquet", tmp_path)
    assert not (tmp_path / "o.parquet").exists()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sentiserve", "score", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_kill_9_then_resume_gives_the_uninterrupted_output(repo: Path, tmp_path: Path) -> None:
    data = [{"text": t} for t, _ in toy_texts(3000, seed=9)]
    source = write(tmp_path / "in.parquet", data)
    whole = tmp_path / "whole.parquet"
    common = ["--model-repository", str(repo), "--chunk-rows", "100", "--instances", "1"]
    done = cli(str(source), str(whole), *common)
    assert done.wait(300) == 0, done.stderr.read() if done.stderr else ""
    out = tmp_path / "resumed.parquet"
    state = tmp_path / "resumed.parquet.parts" / "state.json"
    victim = cli(str(source), str(out), *common)

    def some_parts_done() -> bool:
        try:
            return len(json.loads(state.read_text())["done"]) >= 3
        except (OSError, ValueError):
            return False

    assert wait_until(some_parts_done, 120), "no parts were written"
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert not out.exists(), "a killed run must not leave an output"
    finished = len(json.loads(state.read_text())["done"])
    assert finished < 30, "the run finished before it was killed; nothing was tested"
    again = cli(str(source), str(out), *common, "--json")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["resumed_parts"] >= 3
    assert last["rows"] == 3000
    assert pq.read_table(out).equals(pq.read_table(whole)), "resumed output differs"
    ids = pq.read_table(out).column("id").to_pylist()
    assert ids == [str(i) for i in range(3000)], "a row was lost or doubled"


def test_a_changed_input_starts_over(repo: Path, tmp_path: Path) -> None:
    source = write(tmp_path / "in.parquet", rows())
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    parts.mkdir()
    (parts / "state.json").write_text(json.dumps({"job": "another run", "done": {"0": {}}}))
    (parts / "part-00000.parquet").write_bytes(b"stale")
    summary = run(repo, source, out, tmp_path, chunk_rows=16)
    assert summary.resumed_parts == 0  # type: ignore[attr-defined]
    assert len(read(out)) == 60


@pytest.fixture(scope="module")
def moto() -> Iterator[object]:
    from tests.integration.test_s3 import Moto

    server = Moto()
    yield server
    server.stop()


def test_s3_in_and_out(
    repo: Path, tmp_path: Path, moto: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tests.integration.test_s3 import CREDENTIALS, _keys

    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto.url}.items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=moto.url, **_keys())  # type: ignore[attr-defined]
    s3.create_bucket(Bucket="reviews")
    data = rows()
    s3.upload_file(str(write(tmp_path / "a.parquet", data[:30])), "reviews", "in/a.parquet")
    s3.upload_file(str(write(tmp_path / "b.jsonl", data[30:])), "reviews", "in/b.jsonl")
    summary = run(repo, "s3://reviews/in/", "s3://reviews/out/scores.parquet", tmp_path)
    assert summary.rows == 60  # type: ignore[attr-defined]
    s3.download_file("reviews", "out/scores.parquet", str(tmp_path / "back.parquet"))
    local = tmp_path / "local.parquet"
    folder = tmp_path / "both"
    folder.mkdir()
    write(folder / "a.parquet", data[:30])
    write(folder / "b.jsonl", data[30:])
    run(repo, folder, local, tmp_path)
    assert pq.read_table(tmp_path / "back.parquet").equals(pq.read_table(local))


def test_ray_with_two_local_workers_matches_one_process(repo: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from sentiserve.score.ray_data import score_with_ray

    data = rows(400)
    source = write(tmp_path / "in.parquet", data)
    single = tmp_path / "single.parquet"
    run(repo, source, single, tmp_path)
    on_ray = tmp_path / "ray.parquet"
    summary = score_with_ray(
        str(source),
        str(on_ray),
        repository=str(repo),
        cache_dir=tmp_path / "cache",
        workers=2,
        block_rows=64,
    )
    assert summary.rows == 400
    a, b = pq.read_table(single), pq.read_table(on_ray)
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column("label").to_pylist() == b.column("label").to_pylist()
    assert np.allclose(
        np.array(a.column("p_positive").to_pylist(), dtype=float),
        np.array(b.column("p_positive").to_pylist(), dtype=float),
        atol=1e-6,
        equal_nan=True,
    )
    assert not (tmp_path / "ray.parquet.parts").exists()
