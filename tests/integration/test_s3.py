"""The S3 model store against a real S3-compatible server (moto's, over HTTP), faults
included: missing bucket, missing manifest or object, corrupted object, server down in the
middle of a pull, wrong credentials. A failed pull leaves nothing half-written."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from sentiserve.local.ready import wait_until
from sentiserve.repository.stores import s3
from sentiserve.repository.stores.s3 import MANIFEST, StoreError
from tests.integration.serving import free_port, start_server, stop

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "2",
}


class Moto:
    def __init__(self, host: str = "127.0.0.1", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        assert binary, "moto_server missing (dev extras: moto[server])"
        self.proc = subprocess.Popen(
            [binary, "-H", host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **env},
        )

        poller = httpx.Client(timeout=1)  # one client for the polls (one each: 40 ms of CPU)

        def answers() -> bool:
            try:
                poller.get(self.url)
            except httpx.HTTPError:
                return False
            return True

        with poller:
            if not wait_until(answers, 30, interval_s=0.1):
                raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    server = Moto()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto: Moto, request: pytest.FixtureRequest) -> str:
    name = "models-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3", endpoint_url=moto.url, **_keys()).create_bucket(Bucket=name)
    return name


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


def tree(files: dict[str, bytes], root: Path) -> Path:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_publish_and_pull_round_trip_with_multipart(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    big = os.urandom(9 * 1024 * 1024 + 17)  # over the 8 MB multipart threshold
    published = {
        "sentiment/config.pbtxt": b"name: 'sentiment'\n",
        "sentiment/1/model.onnx": big,
        "sentiment/1/manifest.json": b"{}",
    }
    source = tree({**published, ".partial-x/skip": b"half"}, tmp_path / "src")
    manifest = s3.publish(source, f"s3://{bucket}/repo", endpoint_url=moto.url)
    assert set(manifest["files"]) == set(published), "dot-folders stay local"
    head = boto3.client("s3", endpoint_url=moto.url, **_keys()).head_object(
        Bucket=bucket, Key="repo/sentiment/1/model.onnx"
    )
    assert "-" in head["ETag"], "a multipart upload has a composite ETag"
    seen: dict[str, int] = {}
    dest = tmp_path / "copy"
    s3.pull(
        f"s3://{bucket}/repo",
        dest,
        endpoint_url=moto.url,
        progress=lambda f, n: seen.__setitem__(f, seen.get(f, 0) + n),
    )
    assert (dest / "sentiment/1/model.onnx").read_bytes() == big
    assert (dest / MANIFEST).exists()
    assert seen["sentiment/1/model.onnx"] == len(big)
    assert leftovers(tmp_path) == []


def test_missing_bucket_manifest_and_object(moto: Moto, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        s3.pull("s3://no-such-bucket/repo", dest, endpoint_url=moto.url)
    with pytest.raises(StoreError, match="has no SHA256SUMS.json"):
        s3.pull(f"s3://{bucket}/empty", dest, endpoint_url=moto.url)
    source = tree({"m/a.txt": b"a", "m/b.txt": b"b"}, tmp_path / "src")
    s3.publish(source, f"s3://{bucket}/repo", endpoint_url=moto.url)
    boto3.client("s3", endpoint_url=moto.url, **_keys()).delete_object(
        Bucket=bucket, Key="repo/m/b.txt"
    )
    with pytest.raises(StoreError, match="m/b.txt is listed in the manifest but missing"):
        s3.pull(f"s3://{bucket}/repo", dest, endpoint_url=moto.url)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_corrupted_object_is_refused_and_the_old_copy_kept(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    source = tree({"m/1/model.onnx": b"weights" * 1000, "m/config.pbtxt": b"cfg"}, tmp_path / "src")
    s3.publish(source, f"s3://{bucket}/repo", endpoint_url=moto.url)
    dest = tree({"old.txt": b"still here"}, tmp_path / "copy")
    boto3.client("s3", endpoint_url=moto.url, **_keys()).put_object(
        Bucket=bucket, Key="repo/m/1/model.onnx", Body=b"weightz" * 1000
    )  # same size
    with pytest.raises(StoreError, match="m/1/model.onnx is corrupted"):
        s3.pull(f"s3://{bucket}/repo", dest, endpoint_url=moto.url)
    assert (dest / "old.txt").read_bytes() == b"still here"
    assert leftovers(tmp_path) == []


def test_server_down_mid_pull_leaves_nothing(tmp_path: Path) -> None:
    server = Moto()
    try:
        boto3.client("s3", endpoint_url=server.url, **_keys()).create_bucket(Bucket="crash-test")
        source = tree({f"m/{i}.bin": os.urandom(200_000) for i in range(5)}, tmp_path / "src")
        s3.publish(source, "s3://crash-test/repo", endpoint_url=server.url)

        def crash(_file: str, _n: int) -> None:
            if server.proc.poll() is None:
                server.stop()  # the real server goes away while the pull is running

        with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
            s3.pull(
                "s3://crash-test/repo", tmp_path / "copy", endpoint_url=server.url, progress=crash
            )
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert not (tmp_path / "copy").exists()
    assert leftovers(tmp_path) == []


def test_wrong_credentials_are_one_clear_error(tmp_path: Path) -> None:
    server = Moto(INITIAL_NO_AUTH_ACTION_COUNT="0")  # moto then checks every request's keys
    try:
        with pytest.raises(StoreError, match="access denied"):
            s3.pull("s3://any/repo", tmp_path / "copy", endpoint_url=server.url)
    finally:
        server.stop()
    assert not (tmp_path / "copy").exists()


def test_cli_and_serving_from_s3(moto: Moto, bucket: str, tiny_build: Path, tmp_path: Path) -> None:
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": moto.url}
    url = f"s3://{bucket}/model_repository"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "repository",
            "publish",
            str(tiny_build / "model_repository"),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "repository",
            "pull",
            "s3://nope/x",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == 1
    assert "bucket 'nope' does not exist" in missing.stderr
    cache = tmp_path / "cache"
    running = start_server(
        url, env={**CREDENTIALS, "AWS_ENDPOINT_URL": moto.url, "SENTISERVE_CACHE_DIR": str(cache)}
    )
    try:
        r = httpx.post(f"{running.url}/v1/sentiment", json={"text": "great"}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        stop(running)
    assert (cache / "s3" / bucket / "model_repository" / MANIFEST).exists()


# ---- kill -9 and a full disk (issue 14, finding 3) ----------------------------------------

KILL_SEED = 20261130


def cli_env(moto: Moto) -> dict[str, str]:
    return {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": moto.url}


def sentiserve(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sentiserve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_when(proc: subprocess.Popen[str], started: Callable[[], bool], delay_s: float) -> bool:
    """SIGKILL ``proc`` ``delay_s`` after ``started()`` first holds, unless it ended first; True
    when it was killed while still running.

    ``started()`` is asked while ``proc`` is stopped (SIGSTOP), and ``proc`` runs 20 ms between
    two questions: however slow an answer is on a busy machine, a window that lasts longer
    than that in ``proc``'s own time (the uploads and downloads watched here take hundreds of
    ms) cannot pass unseen."""
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                err = proc.communicate()[1]
                raise AssertionError(f"exited {proc.returncode} before it began: {err[-2000:]}")
            assert time.monotonic() < deadline, "never started"
            proc.send_signal(signal.SIGSTOP)
            try:
                began = started()
            finally:
                proc.send_signal(signal.SIGCONT)
            if began:
                break
            time.sleep(0.02)
        time.sleep(delay_s)
        if proc.poll() is not None:
            return False
        proc.kill()
        proc.wait(timeout=30)
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def contents(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def versions(tmp_path: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Two trees with the same names and different bytes; one file large enough to be sent
    in parts, so a publish or pull takes long enough to be killed midway."""
    names = ["sentiment/config.pbtxt", "sentiment/1/model.onnx", "sentiment/1/tokenizer.json"]
    old = {n: os.urandom(300_000) for n in names} | {"sentiment/1/big.bin": os.urandom(32 << 20)}
    new = {n: os.urandom(300_000) for n in names} | {"sentiment/1/big.bin": os.urandom(32 << 20)}
    return old, new


def s3_has_manifest(moto: Moto, bucket: str) -> bool:
    listed = boto3.client("s3", endpoint_url=moto.url, **_keys()).list_objects_v2(
        Bucket=bucket, Prefix=f"repo/{MANIFEST}"
    )
    return bool(listed.get("KeyCount"))


def test_publish_killed_midway_never_vouches_for_a_mix(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    old, new = versions(tmp_path)
    old_dir, new_dir = tree(old, tmp_path / "old"), tree(new, tmp_path / "new")
    url = f"s3://{bucket}/repo"
    rng = random.Random(KILL_SEED)
    for attempt in range(3):
        s3.publish(old_dir, url, endpoint_url=moto.url)
        delay = rng.uniform(0.0, 0.15)
        publish = sentiserve("repository", "publish", str(new_dir), url, env=cli_env(moto))
        # Killed a random moment after it began (its first act removes the old manifest).
        killed = kill_when(publish, lambda: not s3_has_manifest(moto, bucket), delay)
        assert killed, f"the publish finished within {delay:.2f} s: make the tree larger"
        copy = tmp_path / f"copy-{attempt}"
        if s3_has_manifest(moto, bucket):
            # What a manifest vouches for is one whole version, never a mix.
            s3.pull(url, copy, endpoint_url=moto.url)
            assert contents(copy) in (old, new), f"killed after {delay:.2f} s: a mix"
        else:
            with pytest.raises(StoreError, match=f"no {MANIFEST}"):
                s3.pull(url, copy, endpoint_url=moto.url)
    done = sentiserve("repository", "publish", str(new_dir), url, env=cli_env(moto))
    assert done.wait(timeout=120) == 0, done.communicate()[1]
    done.communicate()
    s3.pull(url, tmp_path / "final", endpoint_url=moto.url)
    assert contents(tmp_path / "final") == new


def test_pull_killed_midway_leaves_the_old_copy_and_the_next_pull_finishes(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    old, new = versions(tmp_path)
    s3.publish(tree(old, tmp_path / "old"), f"s3://{bucket}/old", endpoint_url=moto.url)
    s3.publish(tree(new, tmp_path / "new"), f"s3://{bucket}/new", endpoint_url=moto.url)
    work = tmp_path / "cache"
    work.mkdir()
    dest = work / "repo"
    rng = random.Random(KILL_SEED)
    for _ in range(3):
        shutil.rmtree(dest, ignore_errors=True)
        s3.pull(f"s3://{bucket}/old", dest, endpoint_url=moto.url)
        pull = sentiserve("repository", "pull", f"s3://{bucket}/new", str(dest), env=cli_env(moto))
        # Killed a random moment after its download began (its staging folder appeared).
        delay = rng.uniform(0.0, 0.15)
        killed = kill_when(pull, lambda: bool(list(work.glob(".repo.pulling-*"))), delay)
        assert killed, f"the pull finished within {delay:.2f} s: make the tree larger"
        # The destination is still the old whole, verified version; the staging stays hidden.
        assert contents(dest) == old
    done = sentiserve("repository", "pull", f"s3://{bucket}/new", str(dest), env=cli_env(moto))
    assert done.wait(timeout=120) == 0, done.communicate()[1]
    done.communicate()
    assert contents(dest) == new
    assert leftovers(work) == []


def test_pull_killed_between_its_renames_gets_the_old_copy_back(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    old, _ = versions(tmp_path)
    s3.publish(tree(old, tmp_path / "old"), f"s3://{bucket}/old", endpoint_url=moto.url)
    dest = tmp_path / "cache" / "repo"
    s3.pull(f"s3://{bucket}/old", dest, endpoint_url=moto.url)
    # The state a kill leaves between "old copy aside" and "new copy in" (too short a window
    # to hit with a signal): only the hidden old copy and a staging folder.
    dest.rename(dest.parent / ".repo.old-deadbeef")
    (dest.parent / ".repo.pulling-cafef00d").mkdir()
    with pytest.raises(StoreError, match="no SHA256SUMS.json"):
        s3.pull(f"s3://{bucket}/missing", dest, endpoint_url=moto.url)
    assert contents(dest) == old
    assert leftovers(dest.parent) == []


def test_full_disk_during_pull_is_one_clear_error_and_keeps_the_old_copy(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    """The full disk is a file-size limit (RLIMIT_FSIZE, 4 MB) on the pulling process: its
    writes past the limit fail with EFBIG as they would with ENOSPC on a full filesystem
    (mounting a small filesystem needs privileges a test should not)."""
    import resource

    old, new = versions(tmp_path)
    s3.publish(tree(old, tmp_path / "old"), f"s3://{bucket}/old", endpoint_url=moto.url)
    s3.publish(tree(new, tmp_path / "new"), f"s3://{bucket}/new", endpoint_url=moto.url)
    dest = tmp_path / "cache" / "repo"
    s3.pull(f"s3://{bucket}/old", dest, endpoint_url=moto.url)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    done = subprocess.run(
        [sys.executable, "-m", "sentiserve", "repository", "pull", f"s3://{bucket}/new", str(dest)],
        capture_output=True,
        text=True,
        env=cli_env(moto),
        preexec_fn=limit,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot write" in done.stderr
    assert "left as it was" in done.stderr
    assert "Traceback" not in done.stderr
    assert contents(dest) == old
    assert leftovers(dest.parent) == []


def test_a_destination_that_cannot_be_made_is_one_clear_error(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    """Where the copy's folder cannot be made (here a file stands in its way; in a container,
    a volume the user cannot write), the CLI says so in one line, not with a traceback."""
    old, _ = versions(tmp_path)
    s3.publish(tree(old, tmp_path / "old"), f"s3://{bucket}/old", endpoint_url=moto.url)
    (tmp_path / "cache").write_text("not a folder")
    dest = tmp_path / "cache" / "repo"
    done = subprocess.run(
        [sys.executable, "-m", "sentiserve", "repository", "pull", f"s3://{bucket}/old", str(dest)],
        capture_output=True,
        text=True,
        env=cli_env(moto),
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot write the copy" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "cache").read_text() == "not a folder"
