"""Rollouts in config.pbtxt: version policies as Triton reads them, the split and shadow
parameter, their validation, and that rewriting a model's form keeps them; the split's
exact shares and the shadow comparison."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sentiserve.errors import ConfigError, ModelNotFoundError
from sentiserve.repository.config import DataType, ModelConfig, Tensor
from sentiserve.repository.rollout import (
    ROLLOUT,
    Rollout,
    VersionPolicy,
    parse_split,
    read_rollout,
    with_rollout,
    write_rollout,
)
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.plane import Classification
from sentiserve.serve.rollouts import Shadows, Split, compare

CONFIG = ModelConfig(
    name="m",
    backend="python",
    inputs=(Tensor("TEXT", DataType.STRING, (1,)),),
    outputs=(Tensor("PROBABILITIES", DataType.FP32, (2,)),),
    max_batch_size=8,
).to_pbtxt()


@pytest.mark.parametrize(
    ("text", "available", "chosen"),
    [
        ("latest", [1, 2, 3], [3]),
        ("latest:2", [3, 1, 2], [2, 3]),
        ("LATEST:5", [1, 2], [1, 2]),
        ("all", [2, 1, 3], [1, 2, 3]),
        ("specific:3,1", [1, 2, 3], [1, 3]),
    ],
)
def test_version_policies_select_like_triton(
    text: str, available: list[int], chosen: list[int]
) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(available) == chosen
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["", "newest", "latest:0", "latest:x", "specific", "all:2", "specific:-1"]
)
def test_bad_version_policies_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        VersionPolicy.parse(text)


def test_a_specific_version_the_repository_lacks_is_named() -> None:
    with pytest.raises(ModelNotFoundError, match=r"\[4\]"):
        VersionPolicy("specific", specific=(1, 4)).select([1, 2])


def test_splits_parse_and_check_against_the_loaded_versions() -> None:
    assert parse_split("3=90, 4=10") == {3: 90, 4: 10}
    assert parse_split("") == {}
    for bad in ("3", "3=x", "a=1", "3:90"):
        with pytest.raises(ConfigError, match="VERSION=WEIGHT"):
            parse_split(bad)
    with pytest.raises(ConfigError, match="above 0"):
        Rollout(split={1: 0})
    with pytest.raises(ConfigError, match=">= 0"):
        Rollout(split={1: -1, 2: 5})
    rollout = Rollout(VersionPolicy("all"), {1: 90, 2: 10, 3: 0}, shadow=3)
    assert rollout.weights([1, 2, 3]) == {1: 90, 2: 10}
    with pytest.raises(ConfigError, match=r"versions \[3\].*latest:1"):
        Rollout(split={2: 1}, shadow=3).weights([2])
    assert Rollout().weights([1, 4, 2]) == {4: 1}, "no split: the newest version takes all"


def test_rollouts_round_trip_through_config_pbtxt_as_triton_parses_it(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(CONFIG)
    assert read_rollout(path) == Rollout()
    rollout = Rollout(VersionPolicy("specific", specific=(2, 3)), {2: 90, 3: 10}, shadow=3)
    write_rollout(path, rollout)
    parsed = text_format.Parse(path.read_text(), mc.ModelConfig())  # what Triton reads
    assert list(parsed.version_policy.specific.versions) == [2, 3]
    assert parsed.parameters[ROLLOUT].string_value == '{"split":{"2":90,"3":10},"shadow":3}'
    assert parsed.max_batch_size == 8, "the rest stays"
    assert parsed.input[0].name == "TEXT"
    assert read_rollout(path) == rollout
    # Triton's JSON answer for the config (what the gateway reads) gives the same rollout.
    from sentiserve.triton.model_config import to_json

    assert Rollout.from_config(to_json(parsed)) == rollout
    write_rollout(path, Rollout(VersionPolicy("all")))
    parsed = text_format.Parse(path.read_text(), mc.ModelConfig())
    assert parsed.version_policy.HasField("all")
    assert ROLLOUT not in parsed.parameters
    assert with_rollout(CONFIG, Rollout()) == CONFIG
    bad = 'parameters { key: "sentiserve_rollout" value: { string_value: "[1]" } }\n'
    path.write_text(CONFIG + bad)
    with pytest.raises(ConfigError, match="not a valid rollout"):
        read_rollout(path)


def test_rewriting_the_python_form_keeps_the_rollout(tiny_build: Path, tmp_path: Path) -> None:
    import shutil

    from sentiserve.repository.triton import write_python_form

    root = tmp_path / "repo"
    shutil.copytree(tiny_build / "model_repository", root)
    rollout = Rollout(VersionPolicy("latest", 2), {1: 1}, shadow=None)
    write_rollout(root / "sentiment" / "config.pbtxt", rollout)
    write_python_form(root, "sentiment")
    assert read_rollout(root / "sentiment" / "config.pbtxt") == rollout


def test_the_split_gives_exact_interleaved_shares() -> None:
    split = Split({1: 90, 2: 10})
    picks = [split.pick() for _ in range(10_000)]
    assert Counter(picks) == {1: 9000, 2: 1000}
    # Interleaved: the canary's requests are spread out, never two in a row.
    assert all(not (a == b == 2) for a, b in zip(picks, picks[1:], strict=False))
    assert Split({1: 1, 3: 1}).primary == 3, "equal weights: the newest is the primary"
    assert Split({1: 90, 3: 10}).primary == 1
    three = Split({1: 1, 2: 2, 3: 3})
    assert Counter(three.pick() for _ in range(600)) == {1: 100, 2: 200, 3: 300}


def result(version: int, labels: list[str], rows: list[list[float]]) -> Classification:
    return Classification("m", version, labels, np.asarray(rows, dtype=np.float32))


def test_compare_matches_labels_by_name() -> None:
    mine = result(1, ["neg", "pos"], [[0.9, 0.1], [0.3, 0.7]])
    same_order = result(2, ["neg", "pos"], [[0.8, 0.2], [0.6, 0.4]])
    agree, deltas = compare(mine, same_order)
    assert agree == [True, False]
    assert deltas == pytest.approx([0.1, 0.3])
    swapped = result(2, ["pos", "neg"], [[0.2, 0.8], [0.4, 0.6]])
    assert compare(mine, swapped) == compare(mine, same_order)
    other = result(2, ["a", "b"], [[0.5, 0.5], [0.5, 0.5]])
    assert compare(mine, other) == ([False, False], [1.0, 1.0])


def test_shadows_record_agreement_and_skip_when_busy_or_failing() -> None:
    metrics = Metrics()
    mine = result(1, ["neg", "pos"], [[0.9, 0.1], [0.3, 0.7]])

    async def main() -> None:
        shadows = Shadows(metrics, limit=1)
        release = asyncio.Event()

        async def slow() -> Classification:
            await release.wait()
            return result(2, ["neg", "pos"], [[0.85, 0.15], [0.4, 0.6]])

        async def broken() -> Classification:
            raise RuntimeError("shadow engine fell over")

        shadows.submit(mine, 2, slow)
        shadows.submit(mine, 2, slow)  # the one slot is taken: skipped as busy
        release.set()
        await shadows.wait()
        shadows.submit(mine, 2, broken)
        await shadows.wait()

    asyncio.run(main())
    get = metrics.registry.get_sample_value
    key = {"model": "m", "version": "1", "shadow_version": "2"}
    assert get("sentiserve_shadow_predictions_total", {**key, "agreement": "true"}) == 2
    assert get("sentiserve_shadow_probability_delta_count", key) == 2
    assert get("sentiserve_shadow_probability_delta_sum", key) == pytest.approx(0.15)
    assert get("sentiserve_shadow_requests_skipped_total", {**key, "reason": "busy"}) == 1
    assert get("sentiserve_shadow_requests_skipped_total", {**key, "reason": "error"}) == 1
