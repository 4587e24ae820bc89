"""The whole pipeline on a tiny random BERT and toy data: train, export, optimize,
repository, evaluate, through the real code paths and the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sentiserve.optimize.checks import INVARIANCE_TOLERANCE
from sentiserve.repository.layout import ModelRepository


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SENTISERVE_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "sentiserve", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def test_build_writes_a_verified_repository(tiny_build: Path) -> None:
    version = ModelRepository(tiny_build / "model_repository").load("sentiment")
    m = version.manifest
    assert m.labels == ["negative", "positive"]
    assert set(m.engines) == {"fp32", "int8", "torch"}, "dynamic int8 is measured, never shipped"
    assert m.engines["torch"].config, "the PyTorch engine ships its model config"
    # No TensorRT here, so the PyTorch engine is the GPU default; the CPU default is the
    # faster of the eligible ONNX variants.
    assert m.default_engine["cuda"] == "torch", m.default_engine
    assert m.default_engine["cpu"] in {"fp32", "int8"}
    assert m.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    ev = m.evaluation
    assert ev["fp32"]["agreement"] == 1.0
    for variant in ("fp32", "int8"):
        assert ev[variant]["max_batch_delta"] <= INVARIANCE_TOLERANCE
        assert ev[variant]["eligible"] is True
    assert ev["int8_dynamic"]["max_batch_delta"] > INVARIANCE_TOLERANCE
    assert ev["int8_dynamic"]["eligible"] is False
    assert m.default_engine["cpu"] in {"fp32", "int8"}
    # The toy task is learnable: the model beats the majority class.
    assert ev["fp32"]["accuracy"] > 0.8
    assert "pytorch" in ev
    assert m.provenance["dataset"] == "toy"
    assert m.provenance["split_seed"] == "1234"
    stage = json.loads((tiny_build / "build" / "onnx" / "stage.json").read_text())
    assert stage["max_abs_diff"] < 1e-4


def test_second_build_skips_every_stage(tiny_build: Path) -> None:
    from sentiserve.pipeline import BuildConfig, build
    from sentiserve.train.trainer import TrainConfig

    model = json.loads((tiny_build / "build/model/train_config.json").read_text())
    source = json.loads((tiny_build / "build/model/metrics.json").read_text())["provenance"]
    start = time.perf_counter()
    report = build(
        BuildConfig(
            data=source["source"],
            work_dir=tiny_build / "build",
            repository=tiny_build / "model_repository",
            train=TrainConfig(
                base_model=model["base_model"],
                epochs=3,
                batch_size=16,
                learning_rate=3e-3,
                max_length=64,
            ),
            optimize=_tiny_optimize(),
        )
    )
    assert all("up to date" in s for s in report.stages.values()), report.stages
    assert report.version.version == 1
    assert time.perf_counter() - start < 30


def _tiny_optimize() -> object:
    from sentiserve.optimize.variants import OptimizeSettings

    return OptimizeSettings(
        invariance_texts=40,
        throughput_texts=64,
        calibration_texts=60,
        threads=1,
        variants=("fp32", "int8", "int8_dynamic"),
    )


def test_static_int8_keeps_the_first_feed_forward_outputs_in_fp32(tiny_build: Path) -> None:
    """Every weight matmul is quantized except the feed-forward output projections of the
    first three layers (both of the tiny model's two), whose inputs have outlier ranges."""
    import onnx

    graph = onnx.load(
        str(tiny_build / "model_repository/sentiment/1/model.int8.onnx"), load_external_data=False
    ).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    matmuls = {n.name: n for n in graph.node if n.op_type == "MatMul" and "/dense/" in n.name}
    kept = {
        name
        for name, node in matmuls.items()
        if all(made_by.get(i) != "DequantizeLinear" for i in node.input)
    }
    assert {name.split("/encoder/")[-1] for name in kept} == {
        "layer.0/output/dense/MatMul",
        "layer.1/output/dense/MatMul",
    }, sorted(kept)
    assert len(matmuls) - len(kept) == 4, "attention-output and intermediate matmuls: int8"


def test_evaluate_json_reproduces_the_manifest(tiny_build: Path) -> None:
    repo = tiny_build / "model_repository"
    data = json.loads((tiny_build / "build/model/metrics.json").read_text())["provenance"]["source"]
    manifest = ModelRepository(repo).load("sentiment").manifest
    for engine in ("fp32", "int8"):
        proc = cli(
            "evaluate",
            "--model-repository",
            str(repo),
            "--data",
            data,
            "--engine",
            engine,
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1
        result = json.loads(lines[0])
        assert result["engine"] == engine
        assert result["n"] == 90
        assert result["accuracy"] == pytest.approx(
            manifest.evaluation[engine]["accuracy"], abs=1e-12
        )
        assert {"accuracy", "f1", "n", "confusion"} <= set(result)


def test_recorded_scores_are_the_saved_models_own(tiny_build: Path) -> None:
    """metrics.json's validation scores (kept from the best checkpoint's evaluation during
    training, not predicted again) and held-out scores are what the saved model predicts."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from sentiserve.data import load_corpus
    from sentiserve.engine.models import load_classifier
    from sentiserve.evaluate.scores import score

    folder = tiny_build / "build" / "model"
    metrics = json.loads((folder / "metrics.json").read_text())
    corpus = load_corpus(metrics["provenance"]["source"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = load_classifier(folder).eval()
    for split, examples in (("validation", corpus.validation), ("test", corpus.test)):
        batch = tokenizer(
            list(examples.texts), truncation=True, max_length=64, padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            logits = model(**batch).logits.numpy()
        predictions = [int(p) for p in np.argmax(logits, axis=-1)]
        mine = score(list(examples.labels), predictions, corpus.label_names).to_dict()
        assert metrics[split]["n"] == len(examples)
        assert metrics[split]["confusion"] == mine["confusion"], split
        assert metrics[split]["accuracy"] == pytest.approx(mine["accuracy"], abs=1e-12), split


def test_optimize_command_builds_the_variants_asked_for(tiny_build: Path, tmp_path: Path) -> None:
    from sentiserve.optimize.variants import REPORT_FILE

    data = json.loads((tiny_build / "build/model/metrics.json").read_text())["provenance"]["source"]
    common = (
        "optimize",
        "--checkpoint",
        str(tiny_build / "build/model"),
        "--onnx",
        str(tiny_build / "build/onnx/model.onnx"),
        "--data",
        data,
        "--max-length",
        "64",
        "--threads",
        "1",
        "--invariance-texts",
        "20",
        "--held-out-limit",
        "40",
    )
    proc = cli(*common, "--out", str(tmp_path / "opt"), "--variants", "fp32,int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "int8" in proc.stderr  # the report table (stdout is for --json)
    assert "int8_dynamic" not in proc.stderr
    report = json.loads((tmp_path / "opt" / REPORT_FILE).read_text())
    assert set(report["files"]) == {"fp32", "int8"}
    assert set(report["reports"]) == {"fp32", "int8"}
    assert all(r["accuracy"] is not None for r in report["reports"].values())

    bad = cli(*common, "--out", str(tmp_path / "bad"), "--variants", "fp32,int9")
    assert bad.returncode != 0
    assert "unknown variant(s) int9" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_corrupt_repository_is_refused_by_the_cli(tiny_build: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_build / "model_repository", repo)
    engine = repo / "sentiment" / "1" / "model.int8.onnx"
    engine.write_bytes(engine.read_bytes()[:-10])
    proc = cli("evaluate", "--model-repository", str(repo), "--data", "rt", "--limit", "5")
    assert proc.returncode == 1
    assert "model.int8.onnx: corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_data_is_one_clear_line(tmp_path: Path, tiny_bert: Path) -> None:
    bad = tmp_path / "reviews.csv"
    bad.write_text("text,label\ngreat,positive\nawful,sour\n")
    proc = cli(
        "train", "--base-model", str(tiny_bert), "--data", str(bad), "--out", str(tmp_path / "m")
    )
    assert proc.returncode == 1
    assert "reviews.csv, line 3: unknown label 'sour'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


def test_missing_base_model_is_a_clear_error(tmp_path: Path, toy_csv: Path) -> None:
    proc = cli(
        "train",
        "--base-model",
        str(tmp_path / "nope"),
        "--data",
        str(toy_csv),
        "--out",
        str(tmp_path / "m"),
    )
    assert proc.returncode == 1
    assert "cannot load base model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_command_reports_counts(toy_csv: Path) -> None:
    proc = cli("data", str(toy_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    splits = stats["splits"]
    assert sum(s["n"] for s in splits.values()) == 600
    assert splits["test"]["labels"]["negative"] + splits["test"]["labels"]["positive"] == 90
    assert "rt" in stats["sources"]


def test_interrupted_fine_tune_resumes_from_its_checkpoint(
    tiny_bert: Path, toy_csv: Path, tmp_path: Path
) -> None:
    from sentiserve.data import load_corpus
    from sentiserve.pipeline import PENDING_FILE, BuildConfig, build, fingerprint
    from sentiserve.train.trainer import TrainConfig, train

    config = TrainConfig(base_model=str(tiny_bert), max_steps=12, eval_steps=6, max_length=64)
    corpus = load_corpus(str(toy_csv))
    model_dir = tmp_path / "build" / "model"
    # A first run that "died" after its step-6 checkpoint: simulate it by training 6 steps
    # of the same schedule, then leaving only the pending marker and the checkpoint.
    first = TrainConfig(**{**config.__dict__, "max_steps": 6})
    train(corpus, model_dir, first, progress=False)
    print_ = fingerprint("train", config.__dict__, corpus.name, corpus.provenance)
    (model_dir / PENDING_FILE).write_text(json.dumps({"fingerprint": print_}))
    assert (model_dir / "checkpoints" / "checkpoint-6").is_dir()

    messages: list[str] = []
    build(
        BuildConfig(
            data=str(toy_csv),
            work_dir=tmp_path / "build",
            repository=tmp_path / "repo",
            train=config,
            optimize=_tiny_optimize(),
        ),
        progress=messages.append,
    )
    assert "fine-tuning (resuming from checkpoint)" in messages
    state = json.loads(
        (model_dir / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text()
    )
    assert state["global_step"] == 12


def test_two_builds_from_the_same_inputs_are_identical(
    tiny_build: Path, tiny_bert: Path, toy_csv: Path, tmp_path: Path
) -> None:
    """Issue 15: byte-identical engine files and identical metrics from a second build (a
    fresh process would do no better: the first build ran in this one, earlier)."""
    from sentiserve.files import sha256_file
    from sentiserve.pipeline import build
    from tests.conftest import tiny_build_config

    build(tiny_build_config(tmp_path, tiny_bert, toy_csv))
    first = ModelRepository(tiny_build / "model_repository").load("sentiment")
    second = ModelRepository(tmp_path / "model_repository").load("sentiment")
    files = sorted(p.name for p in first.path.iterdir() if p.is_file())
    assert any(name.endswith(".onnx.data") for name in files)
    assert files == sorted(p.name for p in second.path.iterdir() if p.is_file())
    for name in files:
        if name == "manifest.json":
            continue
        assert sha256_file(first.path / name) == sha256_file(second.path / name), name

    def measured(manifest: Any) -> dict[str, Any]:
        evaluation = json.loads(json.dumps(manifest.evaluation))
        for report in evaluation.values():
            report.pop("throughput", None)
        return evaluation

    assert measured(first.manifest) == measured(second.manifest)
    assert first.manifest.default_engine == second.manifest.default_engine
    assert first.manifest.calibration == second.manifest.calibration
    assert first.manifest.engines == second.manifest.engines


BUILD_SCRIPT = """
import sys
from pathlib import Path
from sentiserve.pipeline import build
from tests.conftest import tiny_build_config
build(tiny_build_config(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
"""


def listed_versions_are_whole(repository: Path) -> None:
    """Every version the repository lists loads, each file verified against its manifest."""
    if not repository.exists():
        return
    layout = ModelRepository(repository)
    for model in layout.servable():
        for version in layout.versions(model):
            layout.load(model, version, verify=True)


def test_build_killed_at_random_points_finishes_identically(
    tiny_build: Path, tiny_bert: Path, toy_csv: Path, tmp_path: Path
) -> None:
    """Issue 14, finding 3: ``kill -9`` during the build, twice, at seeded random moments;
    every listed version is whole meanwhile, and the run after finishes with the same bytes as
    an uninterrupted build."""
    import random

    from sentiserve.files import sha256_file

    rng = random.Random(20261130)
    command = [sys.executable, "-c", BUILD_SCRIPT, str(tmp_path), str(tiny_bert), str(toy_csv)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    for _ in range(2):
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            proc.wait(timeout=rng.uniform(3.0, 20.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        listed_versions_are_whole(tmp_path / "model_repository")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    first = ModelRepository(tiny_build / "model_repository").load("sentiment")
    second = ModelRepository(tmp_path / "model_repository").load("sentiment")
    assert ModelRepository(tmp_path / "model_repository").versions("sentiment") == [1]
    for name in sorted(p.name for p in first.path.iterdir() if p.is_file()):
        if name != "manifest.json":
            assert sha256_file(first.path / name) == sha256_file(second.path / name), name


def test_repository_form_killed_midway_leaves_whole_configs(
    tiny_build: Path, tmp_path: Path
) -> None:
    """``kill -9`` while ``repository form`` writes the GPU form: Triton's configs are each
    whole (old or new, parseable) and the next run writes exactly what an uninterrupted one
    does."""
    import random

    repository = tmp_path / "repo"
    shutil.copytree(tiny_build / "model_repository", repository)
    reference = tmp_path / "reference"
    shutil.copytree(tiny_build / "model_repository", reference)
    form = ("repository", "form", "--platform", "onnxruntime", "--model-repository")
    assert cli(*form, str(reference)).returncode == 0
    rng = random.Random(20261130)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentiserve", *form, str(repository)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=rng.uniform(0.5, 3.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        for config in repository.rglob("config.pbtxt"):
            text = config.read_text()
            assert text.strip().startswith("name:"), config
            assert text.count("{") == text.count("}"), config
        assert not [p for p in repository.rglob("*") if ".tmp" in p.name and p.is_file()]
    done = cli(*form, str(repository))
    assert done.returncode == 0, done.stderr

    def configs(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts
        }

    assert configs(repository) == configs(reference)


def test_a_mean_pooled_model_builds_and_every_engine_agrees(
    tiny_bert: Path, toy_csv: Path, tmp_path: Path
) -> None:
    """The default build's head (mean pooling over real tokens) through export, fusion, int8,
    the torch variant and serving: fp32 ONNX and torch agree, and the served head is mean."""
    import dataclasses

    from sentiserve.pipeline import build
    from sentiserve.repository.served import open_model
    from tests.conftest import tiny_build_config

    config = tiny_build_config(tmp_path, tiny_bert, toy_csv)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, pooling="mean"))
    build(config)
    version = ModelRepository(tmp_path / "model_repository").load("sentiment")
    assert set(version.manifest.engines) == {"fp32", "int8", "torch"}
    assert '"sentiserve_pooling": "mean"' in (version.path / "config.json").read_text()
    texts = ["a fine film", "dull and far too long " * 20, "good"]
    onnx = open_model(version, engine="fp32").probabilities(texts)
    torch_ = open_model(version, engine="torch").probabilities(texts)
    assert float(abs(onnx - torch_).max()) <= 1e-4
    int8 = open_model(version, engine="int8").probabilities(texts)
    assert (int8.argmax(axis=1) == onnx.argmax(axis=1)).mean() >= 2 / 3
