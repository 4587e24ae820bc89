"""Several versions of a model on the real server (built in process, real engines on the
tiny model): every version addressable on every API, the unversioned route shared by the
split (90/10 over 10,000 requests), a reload under traffic that changes the split in one
step, and a shadow version whose answers are compared and never returned."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentiserve.cli import build_app
from tests.integration.serving import in_process
from tests.integration.test_compat import grpc_infer

TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess", "fine"]


def add_version(root: Path, number: int, *, swap_labels: bool = False) -> None:
    """Version ``number``: version 1's files; ``swap_labels`` names its labels the other way
    round, so it disagrees with version 1 on every text."""
    folder = root / "sentiment" / str(number)
    shutil.copytree(root / "sentiment" / "1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = number
    if swap_labels:
        manifest["labels"] = manifest["labels"][::-1]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def rollout(root: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        build_app(), ["repository", "rollout", "--model-repository", str(root), "--json", *args]
    )
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@pytest.fixture
def repo(tiny_build: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_build / "model_repository", root)
    add_version(root, 2)
    add_version(root, 3, swap_labels=True)
    return root


def test_the_rollout_command_checks_before_it_writes(repo: Path) -> None:
    config = (repo / "sentiment" / "config.pbtxt").read_text()
    for args, message in [
        (["--split", "1=90,4=10", "--policy", "all"], "[4]"),
        (["--split", "1=90,2=10"], "latest:1"),  # the policy does not load version 1
        (["--policy", "specific:1,7"], "[7]"),
        (["--policy", "newest"], "latest[:N]"),
        (["--split", "1:90"], "VERSION=WEIGHT"),
        (["--shadow", "2", "--no-shadow"], "not both"),
    ]:
        result = CliRunner().invoke(
            build_app(), ["repository", "rollout", "--model-repository", str(repo), *args]
        )
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
    assert (repo / "sentiment" / "config.pbtxt").read_text() == config, "nothing written"
    doc = rollout(repo, "--policy", "latest:2")
    assert doc == {
        "model": "sentiment",
        "policy": "latest:2",
        "versions": [2, 3],
        "split": {"3": 1},
        "shadow": None,
    }


async def test_versions_split_reload_and_shadow(repo: Path) -> None:
    result = CliRunner().invoke(
        build_app(),
        ["repository", "rollout", "--model-repository", str(repo), "--policy", "all"],
    )
    assert result.exit_code == 0
    assert "name their labels differently" in result.stderr, "version 3 swaps them"
    assert rollout(repo, "--split", "1=90,2=10")["versions"] == [1, 2, 3]
    async with in_process(repo, model_control=True) as (server, http, stub):
        # Every loaded version is listed and addressable, on every API.
        index = (await http.post("/v2/repository/index", json={})).json()
        assert [(m["name"], m["version"], m["state"]) for m in index] == [
            ("sentiment", str(v), "READY") for v in (1, 2, 3)
        ]
        meta = (await http.get("/v2/models/sentiment")).json()
        assert meta["versions"] == ["1", "2", "3"]
        assert (await http.get("/v2/models/sentiment/versions/3")).json()["versions"] == ["3"]
        body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
        for number in (1, 2, 3):
            v2 = await http.post(f"/v2/models/sentiment/versions/{number}/infer", json=body)
            assert v2.json()["model_version"] == str(number)
            v1 = await http.post(f"/v1/sentiment?version={number}", json={"text": "x"})
            assert v1.json()["version"] == number
            header = await http.post(
                "/v1/classify", json={"input": "x"}, headers={"x-model-version": str(number)}
            )
            assert header.status_code == 200, header.text
            request = grpc_infer("x")
            request.model_version = str(number)
            assert (await stub.ModelInfer(request)).model_version == str(number)
        missing = await http.post("/v1/sentiment?version=9", json={"text": "x"})
        assert missing.status_code == 404
        assert "no ready version 9 (serving 1, 2, 3)" in missing.text
        bad = await http.post(
            "/v1/sentiment", json={"text": "x"}, headers={"x-model-version": "v2"}
        )
        assert bad.status_code == 404
        stats = (await http.get("/v2/models/sentiment/stats")).json()["model_stats"]
        assert [s["version"] for s in stats] == ["1", "2", "3"]
        classify_counts = [s["inference_count"] for s in stats]
        assert classify_counts == [4, 4, 4], "each version counted its own four texts"

        # The split: 90/10 over 10,000 requests that name no version; 3 gets none.
        limit = asyncio.Semaphore(32)

        async def one(i: int) -> int:
            async with limit:
                answer = await http.post("/v1/sentiment", json={"text": TEXTS[i % 4]})
            assert answer.status_code == 200, answer.text
            version: int = answer.json()["version"]
            return version

        counts = Counter(await asyncio.gather(*(one(i) for i in range(10_000))))
        assert set(counts) == {1, 2}
        assert abs(counts[2] / 10_000 - 0.10) <= 0.01, counts

        # A reload under traffic: 50/50 with version 3 as the shadow, in one step.
        rollout(repo, "--split", "1=1,2=1", "--shadow", "3")
        stop = asyncio.Event()

        async def traffic() -> list[int]:
            seen = []
            while not stop.is_set():
                seen.append(await one(0))
            return seen

        during = asyncio.gather(*(traffic() for _ in range(4)))
        loaded = await http.post("/v2/repository/models/sentiment/load", json={})
        assert loaded.status_code == 200, loaded.text
        stop.set()
        assert all(v in (1, 2) for v in sum(await during, [])), "every request answered"
        await server.plane.shadows.wait()
        before = shadow_counts(server)
        answers = [
            await http.post("/v1/sentiment", json={"text": TEXTS[i % 4]}) for i in range(200)
        ]
        after = Counter(a.json()["version"] for a in answers)
        assert after == {1: 100, 2: 100}, "the new split, exactly, and never the shadow"
        await server.plane.shadows.wait()
        counted = {k: v - before.get(k, 0) for k, v in shadow_counts(server).items()}
        # Version 3 names the labels the other way round: it disagrees on every text, and
        # |Δp| per text is |p(a) - p(b)| of the answer returned.
        assert counted == {"false": 200.0, "true": 0.0}
        deltas = [
            abs(r["scores"][a] - r["scores"][b])
            for r in (x.json()["results"][0] for x in answers)
            for a, b in [tuple(r["scores"])]
        ]
        get = server.metrics.registry.get_sample_value
        total = sum(
            get(
                "sentiserve_shadow_probability_delta_sum",
                {"model": "sentiment", "version": str(v), "shadow_version": "3"},
            )
            or 0
            for v in (1, 2)
        )
        assert total >= sum(deltas) - 1e-3  # the traffic during the reload adds to it
        # A versioned request is never copied to the shadow.
        await http.post("/v1/sentiment?version=1", json={"text": "x"})
        await server.plane.shadows.wait()
        assert shadow_counts(server)["false"] == 200 + before.get("false", 0)


def shadow_counts(server: Any) -> dict[str, float]:
    get = server.metrics.registry.get_sample_value
    out: dict[str, float] = {}
    for agreement in ("true", "false"):
        out[agreement] = sum(
            get(
                "sentiserve_shadow_predictions_total",
                {
                    "model": "sentiment",
                    "version": str(v),
                    "shadow_version": "3",
                    "agreement": agreement,
                },
            )
            or 0.0
            for v in (1, 2)
        )
    return out


async def test_a_rollout_in_the_settings_wins_over_the_repositorys(repo: Path) -> None:
    from sentiserve.serve.settings import RolloutSettings

    rollout(repo, "--policy", "all", "--split", "1=1")
    settings = RolloutSettings(policy="latest:2", split="")  # the newest of 2 and 3 alone
    async with in_process(repo, rollouts={"sentiment": settings.rollout}) as (_, http, _stub):
        index = (await http.post("/v2/repository/index", json={})).json()
        assert [m["version"] for m in index] == ["2", "3"]
        answer = await http.post("/v1/sentiment", json={"text": "x"})
        assert answer.json()["version"] == 3
