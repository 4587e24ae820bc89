"""Classifiers fine-tuned elsewhere (``sentiserve build --checkpoint``): a small randomly
initialised model of every supported architecture, built here, is imported, exported,
optimized and written to a repository, and serves the PyTorch model's own probabilities
(|Δp| ≤ 1e-4 with fp32). A 5-label model is served by the embedded server (v1, v2 REST, v2
gRPC) and by the real Triton; the pipeline's own fine-tuned checkpoint round-trips; bad
checkpoints get one clear line and leave the repository untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from sentiserve.client import Client
from sentiserve.errors import ModelLoadError
from sentiserve.pipeline import BuildConfig, build
from sentiserve.pipeline.checkpoint import ARCHITECTURES
from sentiserve.repository.layout import ModelRepository
from sentiserve.repository.served import open_model
from sentiserve.train.tiny import tiny_classifier
from sentiserve.triton.environment import TritonEnvironment
from tests.conftest import FILLER, NEGATIVE_WORDS, POSITIVE_WORDS, toy_texts, write_csv
from tests.integration.serving import start_server, stop
from tests.integration.test_pipeline import cli
from tests.integration.test_triton import column, start_triton

WORDS = sorted(set(POSITIVE_WORDS + NEGATIVE_WORDS + FILLER))
EMOTIONS = {0: "anger", 1: "joy", 2: "fear", 3: "sadness", 4: "surprise"}
TEXTS = [text for text, _ in toy_texts(40, seed=5)] + ["ok", "GREAT great great!", "the plot"]


def checkpoint(
    folder: Path, arch: str = "bert", labels: dict[int, str] = EMOTIONS, **options: object
) -> Path:
    # A wide initialisation, so that the random model's outputs differ from text to text.
    options.setdefault("initializer_range", 0.3)
    return tiny_classifier(folder, arch, WORDS, labels, seed=3, **options)


def pytorch_probabilities(
    folder: Path, texts: list[str], multi_label: bool = False, raw: bool = False
) -> np.ndarray:
    import torch
    from transformers import AutoTokenizer

    from sentiserve.engine.models import load_classifier

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = load_classifier(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = [model(**tokenizer([t], return_tensors="pt")).logits.double()[0] for t in texts]
        rows = [
            x if raw else torch.sigmoid(x) if multi_label else torch.softmax(x, -1) for x in logits
        ]
    return torch.stack(rows).numpy()


def import_build(
    ckpt: Path, root: Path, name: str = "emotion", **options: object
) -> ModelRepository:
    from sentiserve.optimize.variants import OptimizeSettings

    # The tiny build's amounts for the checks (as tests/conftest.py's tiny model) and the
    # variants an import is served with (test_pipeline covers the others): what is tested here
    # is the import, not how many texts the checks read.
    options.setdefault(
        "optimize",
        OptimizeSettings(
            invariance_texts=40,
            throughput_texts=64,
            calibration_texts=60,
            variants=("fp32", "int8"),
        ),
    )
    build(
        BuildConfig(
            work_dir=root / f"build-{name}",
            repository=root / "repo",
            model_name=name,
            checkpoint=str(ckpt),
            **options,  # type: ignore[arg-type]
        )
    )
    return ModelRepository(root / "repo")


@pytest.fixture(scope="module")
def every_architecture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """One repository with a 5-label model of every supported architecture, named for it."""
    root = tmp_path_factory.mktemp("architectures")
    checkpoints = {}
    for arch in sorted(ARCHITECTURES):
        checkpoints[arch] = checkpoint(root / arch, arch)
        import_build(checkpoints[arch], root, name=arch)
    return root / "repo", checkpoints


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_each_architecture_serves_the_pytorch_probabilities(
    arch: str, every_architecture: tuple[Path, dict[str, Path]]
) -> None:
    repo, checkpoints = every_architecture
    version = ModelRepository(repo).load(arch)
    manifest = version.manifest
    assert manifest.labels == list(EMOTIONS.values())
    assert manifest.provenance["imported"] is True
    assert manifest.provenance["gate"] == "agreement"  # no labelled data was given
    for variant in ("fp32", "int8"):
        report = manifest.evaluation[variant]
        assert report["gate"] == "agreement"
        assert report["accuracy"] is None
        assert report["eligible"] == (
            report["agreement"] >= 0.99 and report["max_batch_delta"] <= 1e-4
        )
    assert manifest.default_engine["cpu"] == (
        "int8" if manifest.evaluation["int8"]["eligible"] else "fp32"
    )

    served = open_model(version, engine="fp32", device="cpu")
    got = served.probabilities(TEXTS)
    want = pytorch_probabilities(checkpoints[arch], TEXTS)
    assert got.shape == (len(TEXTS), 5)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert float(want.std(axis=0).max()) > 0.01, "the random model's answers vary with the text"


@pytest.mark.timeout(600)
def test_triton_and_score_serve_every_architecture(
    every_architecture: tuple[Path, dict[str, Path]],
    environment: TritonEnvironment,
    tmp_path: Path,
) -> None:
    """The real Triton (python form) and `sentiserve score` answer as the embedded path
    does, with each model's default engine."""
    import tritonclient.http as httpclient
    from typer.testing import CliRunner

    from sentiserve.cli import build_app
    from sentiserve.repository.triton import write_python_form

    repo, _ = every_architecture
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    for arch in ARCHITECTURES:
        write_python_form(copy, arch)
    answers = {}
    server = start_triton(environment, copy, tmp_path / "triton.log")
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        for arch in ARCHITECTURES:
            tensor = httpclient.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
            tensor.set_data_from_numpy(column(TEXTS), binary_data=True)
            answers[arch] = client.infer(arch, [tensor]).as_numpy("PROBABILITIES")
        client.close()
    finally:
        server.stop()
    data = write_csv(tmp_path / "in.csv", [(t, "x") for t in TEXTS])
    for arch in sorted(ARCHITECTURES):
        want = open_model(ModelRepository(repo).load(arch), device="cpu").probabilities(TEXTS)
        assert float(np.abs(answers[arch] - want).max()) <= 1e-4, arch
        out = tmp_path / f"{arch}.jsonl"
        args = ["score", str(data), str(out), "--model-repository", str(repo)]
        result = CliRunner().invoke(build_app(), [*args, "--model-name", arch])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        scored = np.array([[r[f"p_{n}"] for n in EMOTIONS.values()] for r in rows])
        assert float(np.abs(scored - want).max()) <= 1e-4, arch


@pytest.fixture(scope="module")
def emotion_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 5-label RoBERTa-style checkpoint (no token types) and its imported repository."""
    root = tmp_path_factory.mktemp("emotion")
    ckpt = checkpoint(root / "ckpt", "roberta")
    import_build(ckpt, root)
    return ckpt, root / "repo"


def test_the_embedded_server_serves_five_labels_over_every_protocol(
    emotion_repo: tuple[Path, Path],
) -> None:
    import tritonclient.grpc as grpcclient

    ckpt, repo = emotion_repo
    want = pytorch_probabilities(ckpt, TEXTS)
    names = list(EMOTIONS.values())
    running = start_server(repo, "--engine", "fp32")
    try:
        body = httpx.post(
            f"{running.url}/v1/sentiment", json={"texts": TEXTS, "model": "emotion"}, timeout=30
        ).json()
        v1 = np.array([[r["scores"][name] for name in names] for r in body["results"]])
        assert [r["label"] for r in body["results"]] == [names[i] for i in want.argmax(1)]
        assert float(np.abs(v1 - want).max()) <= 1e-4
        # The repository holds one model: a request that names none goes to it.
        alone = httpx.post(f"{running.url}/v1/sentiment", json={"text": TEXTS[0]}, timeout=30)
        assert alone.json()["model"] == "emotion"
        assert alone.json()["results"][0]["scores"] == body["results"][0]["scores"]

        request = {
            "inputs": [{"name": "TEXT", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}]
        }
        reply = httpx.post(f"{running.url}/v2/models/emotion/infer", json=request, timeout=30)
        outputs = {o["name"]: o for o in reply.json()["outputs"]}
        v2 = np.array(outputs["PROBABILITIES"]["data"]).reshape(len(TEXTS), 5)
        assert float(np.abs(v2 - want).max()) <= 1e-4

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
        tensor = grpcclient.InferInput("TEXT", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
        result = grpc.infer("emotion", [tensor])
        assert float(np.abs(result.as_numpy("PROBABILITIES") - want).max()) <= 1e-4
        grpc.close()
    finally:
        stop(running)


@pytest.mark.timeout(600)
def test_triton_serves_the_imported_model(
    emotion_repo: tuple[Path, Path], environment: TritonEnvironment, tmp_path: Path
) -> None:
    import tritonclient.http as httpclient

    from sentiserve.repository.triton import write_python_form

    _, repo = emotion_repo
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    write_python_form(copy, "emotion")
    server = start_triton(environment, copy, tmp_path / "triton.log")
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = httpclient.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
        tensor.set_data_from_numpy(column(TEXTS), binary_data=True)
        result = client.infer("emotion", [tensor])
        pair = httpclient.InferInput("TEXT_PAIR", [len(TEXTS), 1], "BYTES")
        pair.set_data_from_numpy(column(TEXTS[::-1]), binary_data=True)
        paired = client.infer("emotion", [tensor, pair])
        client.close()
    finally:
        server.stop()
    served = open_model(ModelRepository(repo).load("emotion"), device="cpu")
    want_pairs = served.probabilities(TEXTS, TEXTS[::-1])
    assert float(np.abs(paired.as_numpy("PROBABILITIES") - want_pairs).max()) <= 1e-4
    # Triton runs the repository's default engine: the embedded path's answers with it.
    want = open_model(ModelRepository(repo).load("emotion"), device="cpu").probabilities(TEXTS)
    assert result.as_numpy("PROBABILITIES").shape == (len(TEXTS), 5)
    assert float(np.abs(result.as_numpy("PROBABILITIES") - want).max()) <= 1e-4
    labels = [x.decode() for x in result.as_numpy("LABEL").reshape(-1)]
    assert labels == [EMOTIONS[i] for i in want.argmax(1)]


def test_eval_data_gates_on_accuracy_and_fits_a_temperature(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "ckpt", "bert", {0: "negative", 1: "positive"})
    data = write_csv(tmp_path / "eval.csv", toy_texts(200, seed=9))
    version = import_build(ckpt, tmp_path, eval_data=data).load("emotion")
    manifest = version.manifest
    assert manifest.provenance["gate"] == "accuracy"
    assert manifest.evaluation["fp32"]["gate"] == "accuracy"
    assert 0.0 <= manifest.evaluation["fp32"]["accuracy"] <= 1.0
    assert manifest.calibration["fitted_on"] == "validation"
    assert manifest.temperature > 0


def test_the_pipelines_own_checkpoint_round_trips(tiny_build: Path, tmp_path: Path) -> None:
    own = ModelRepository(tiny_build / "model_repository").load("sentiment")
    imported = import_build(tiny_build / "build" / "model", tmp_path).load("emotion")
    assert imported.manifest.labels == own.manifest.labels
    assert imported.manifest.max_length == own.manifest.max_length
    texts = [text for text, _ in toy_texts(64, seed=21)]
    a = open_model(own, engine="fp32", device="cpu")
    b = open_model(imported, engine="fp32", device="cpu")
    # The same logits; the probabilities differ only by the default build's temperature,
    # which an import without labelled data does not fit.
    from sentiserve.engine.predict import predict_probabilities

    pa = predict_probabilities(a.engine, a.tokenizer, texts)
    pb = predict_probabilities(b.engine, b.tokenizer, texts)
    assert float(np.abs(pa - pb).max()) <= 1e-4
    assert (pa.argmax(1) == pb.argmax(1)).all()


def broken(tmp_path: Path, what: str) -> Path:
    ckpt = checkpoint(tmp_path / what)
    config_path = ckpt / "config.json"
    config = json.loads(config_path.read_text())
    if what == "no tokenizer":
        for name in (
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        ):
            (ckpt / name).unlink(missing_ok=True)
    elif what == "unknown architecture":
        config["model_type"] = "gpt2"
        config["architectures"] = ["GPT2ForSequenceClassification"]
    elif what == "head and labels disagree":
        config["id2label"] = {"0": "a", "1": "b", "2": "c"}
        config["label2id"] = {"a": 0, "b": 1, "c": 2}
    elif what == "no id2label":
        config.pop("id2label")
        config.pop("label2id")
    elif what == "no weights":
        (ckpt / "model.safetensors").unlink()
    config_path.write_text(json.dumps(config))
    return ckpt


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("no tokenizer", "no usable tokenizer"),
        (
            "unknown architecture",
            "architecture gpt2 (GPT2ForSequenceClassification) cannot be imported; supported: BERT",
        ),
        (
            "head and labels disagree",
            "the classifier head has 5 outputs but 3 labels are named (config: a, b, c)",
        ),
        (
            "no id2label",
            "config.json has no id2label; name the classes in output order with --labels",
        ),
        ("no weights", "cannot load the weights"),
    ],
)
def test_a_bad_checkpoint_is_one_clear_line_and_writes_no_repository(
    tmp_path: Path, what: str, message: str
) -> None:
    with pytest.raises(ModelLoadError) as caught:
        import_build(broken(tmp_path, what), tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "repo").exists()


def test_labels_that_disagree_with_the_head_and_cli_errors(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "ckpt")
    with pytest.raises(
        ModelLoadError,
        match="the classifier head has 5 outputs but 3 labels are named .--labels: a, b, c.",
    ):
        import_build(ckpt, tmp_path, labels=("a", "b", "c"))
    # --labels renames the classes when the count is right.
    names = ("w", "x", "y", "z", "v")
    version = import_build(ckpt, tmp_path, labels=names, calibration_data=_texts(tmp_path))
    assert version.load("emotion").manifest.labels == list(names)
    assert version.load("emotion").manifest.provenance["dataset"] == "texts"

    done = cli(
        "build",
        "--checkpoint",
        str(tmp_path / "nope"),
        "--model-repository",
        str(tmp_path / "cli-repo"),
    )
    assert done.returncode == 1
    assert "nope: no such folder" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cli-repo").exists()


def _texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS * 3) + "\n")
    return path


TOXIC = {0: "toxic", 1: "insult", 2: "threat", 3: "obscene"}


def test_a_multi_label_model_gives_every_label_above_its_threshold(
    environment: TritonEnvironment, tmp_path: Path
) -> None:
    ckpt = checkpoint(
        tmp_path / "ckpt",
        "distilbert",
        TOXIC,
        problem_type="multi_label_classification",
        initializer_range=0.1,
    )
    repo = import_build(ckpt, tmp_path)
    version = repo.load("emotion")
    manifest = version.manifest
    assert manifest.task == "multi_label_classification"
    assert manifest.thresholds == [0.5] * 4
    assert manifest.evaluation["int8"]["gate"] == "agreement"
    want = pytorch_probabilities(ckpt, TEXTS, multi_label=True)
    got = open_model(version, engine="fp32", device="cpu").probabilities(TEXTS)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert np.abs(want.sum(axis=1) - 1).max() > 0.05, "sigmoids, not a softmax"
    names = list(TOXIC.values())
    expected = [[names[k] for k in range(4) if row[k] >= 0.5] for row in want]
    assert any(len(e) > 1 for e in expected), "some text has several labels"
    assert any(len(e) < 4 for e in expected), "and some text lacks some"

    running = start_server(tmp_path / "repo", "--engine", "fp32")
    try:
        body = httpx.post(f"{running.url}/v1/sentiment", json={"texts": TEXTS}, timeout=30).json()
        with Client(running.url) as client:
            from_client = client.classify_many(TEXTS)
        # The drop-in routes give the same sigmoids (TEI's and vLLM's shapes).
        tei = httpx.post(f"{running.url}/predict", json={"inputs": [[t] for t in TEXTS]}).json()
        vllm = httpx.post(f"{running.url}/v1/classify", json={"input": TEXTS}).json()
    finally:
        stop(running)
    for row, result, data in zip(tei, body["results"], vllm["data"], strict=True):
        assert {d["label"]: d["score"] for d in row} == pytest.approx(result["scores"], abs=1e-6)
        assert data["probs"] == pytest.approx([result["scores"][n] for n in TOXIC.values()])
    assert [r["labels"] for r in body["results"]] == expected
    assert [p.labels for p in from_client.predictions] == expected
    scores = np.array([[r["scores"][n] for n in names] for r in body["results"]])
    assert float(np.abs(scores - want).max()) <= 1e-4

    data = tmp_path / "in.csv"
    write_csv(data, [(t, "x") for t in TEXTS])
    out = tmp_path / "scored.jsonl"
    done = cli(
        "score",
        str(data),
        str(out),
        "--model-repository",
        str(tmp_path / "repo"),
        "--model-name",
        "emotion",
        "--engine",
        "fp32",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["labels"] for r in rows] == expected

    # The gateway in front of the real Triton gives the same labels (default engine).
    from sentiserve.repository.triton import write_python_form

    served = open_model(version, device="cpu").probabilities(TEXTS)
    default = [[names[k] for k in range(4) if row[k] >= 0.5] for row in served]
    write_python_form(tmp_path / "repo", "emotion")
    triton = start_triton(environment, tmp_path / "repo", tmp_path / "triton.log")
    try:
        gateway = start_server(
            ".",
            "--backend",
            "triton",
            "--triton-url",
            triton.grpc_url,
            "--triton-model-name",
            "emotion",
        )
        try:
            body = httpx.post(
                f"{gateway.url}/v1/sentiment", json={"texts": TEXTS, "model": "emotion"}, timeout=30
            ).json()
        finally:
            stop(gateway)
    finally:
        triton.stop()
    assert [r["labels"] for r in body["results"]] == default


def test_a_multi_label_model_is_gated_on_label_sets(tmp_path: Path) -> None:
    from sentiserve.errors import DataError

    ckpt = checkpoint(
        tmp_path / "ckpt",
        "bert",
        TOXIC,
        problem_type="multi_label_classification",
        initializer_range=0.1,
    )
    names = list(TOXIC.values())
    rows = [
        (t, [names[k] for k in range(4) if (i >> k) & 1])
        for i, (t, _) in enumerate(toy_texts(80, seed=6))
    ]
    lists = tmp_path / "sets.jsonl"
    lists.write_text("".join(json.dumps({"text": t, "labels": ls}) + "\n" for t, ls in rows))
    version = import_build(ckpt, tmp_path, eval_data=lists).load("emotion")
    manifest = version.manifest
    assert manifest.provenance["gate"] == "accuracy"
    fp32, int8 = manifest.evaluation["fp32"], manifest.evaluation["int8"]
    assert fp32["gate"] == int8["gate"] == "macro F1"
    assert 0.0 <= fp32["f1"] <= 1.0
    assert 0.0 <= fp32["accuracy"] <= 1.0  # whole label sets right
    assert int8["eligible"] == (fp32["f1"] - int8["f1"] <= 0.01 and int8["max_batch_delta"] <= 1e-4)

    # A temperature per label, fitted on the 30%: every serving path divides by it.
    temperatures = manifest.calibration["temperatures"]
    assert len(temperatures) == 4
    assert all(t > 0 for t in temperatures)
    assert manifest.calibration["fitted_on"] == "validation (one temperature per label)"
    raw = pytorch_probabilities(ckpt, TEXTS, raw=True)
    want = 1 / (1 + np.exp(-raw / np.asarray(temperatures)))
    got = open_model(version, engine="fp32", device="cpu").probabilities(TEXTS)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert ((got >= 0.5) == (raw >= 0)).all(), "temperatures move no decision at 0.5"
    from sentiserve.repository.triton import write_gpu_form
    from sentiserve.repository.triton_configs import Platform

    configs = write_gpu_form(tmp_path / "repo", "emotion", Platform.ONNXRUNTIME)
    (post,) = [c for c in configs if c.name.endswith("_postprocess")]
    assert json.loads(post.parameters["sentiserve_temperature"]) == temperatures

    # evaluate scores the served model on the label sets (the held-out 15%).
    from typer.testing import CliRunner

    from sentiserve.cli import build_app

    args = ["evaluate", "--model-repository", str(tmp_path / "repo"), "--model-name", "emotion"]
    result = CliRunner().invoke(build_app(), [*args, "--data", str(lists), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output.splitlines()[-1])
    assert found["n"] == 12
    assert set(found["f1_per_class"]) == set(found["average_precision"]) == set(names)
    assert 0.0 <= found["mean_average_precision"] <= 1.0
    assert 0.0 <= found["ece"] <= 1.0
    result = CliRunner().invoke(build_app(), [*args, "--data", "rt"])
    assert result.exit_code == 1
    assert "evaluate it on a file of label sets" in result.output

    # The same sets as one 0/1 column per label (Jigsaw's layout) give the same gate.
    columns = tmp_path / "columns.csv"
    header = "text," + ",".join(names) + "\n"
    body = "".join(
        json.dumps(t) + "," + ",".join(str(int(n in ls)) for n in names) + "\n" for t, ls in rows
    )
    columns.write_text(header + body)
    again = import_build(ckpt, tmp_path, name="columns", eval_data=columns).load("columns")
    assert again.manifest.evaluation["fp32"]["f1"] == pytest.approx(fp32["f1"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "labels": ["toxic", "rude"]}) + "\n")
    with pytest.raises(DataError, match="row 1: unknown label 'rude'"):
        import_build(ckpt, tmp_path, name="bad", eval_data=bad)
    assert not (tmp_path / "repo" / "bad").exists()


def test_a_single_output_model_serves_its_raw_score(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "ckpt", "electra", {0: "LABEL_0"}, problem_type="regression")
    version = import_build(ckpt, tmp_path).load("emotion")
    manifest = version.manifest
    assert manifest.task == "regression"
    assert manifest.labels == ["score"]  # a generic LABEL_0 is named for what it is
    report = manifest.evaluation["int8"]
    assert report["gate"] == "rank correlation"
    assert report["eligible"] == (report["agreement"] >= 0.99 and report["max_batch_delta"] <= 1e-4)
    want = pytorch_probabilities(ckpt, TEXTS, raw=True)
    got = open_model(version, engine="fp32", device="cpu").probabilities(TEXTS)
    assert got.shape == (len(TEXTS), 1)
    assert float(np.abs(got - want).max()) <= 1e-4
    running = start_server(tmp_path / "repo", "--engine", "fp32")
    try:
        body = httpx.post(f"{running.url}/v1/sentiment", json={"texts": TEXTS}, timeout=30).json()
    finally:
        stop(running)
    served = np.array([r["score"] for r in body["results"]])
    assert {r["label"] for r in body["results"]} == {"score"}
    assert float(np.abs(served - want[:, 0]).max()) <= 1e-4

    # evaluate: the served scores against numeric labels (here: the model's own raw scores,
    # shifted by one, so MSE is 1 and the ranks agree exactly).
    from typer.testing import CliRunner

    from sentiserve.cli import build_app

    data = tmp_path / "scores.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": t, "label": float(v) + 1}) + "\n"
            for t, v in zip(TEXTS, got[:, 0], strict=True)
        )
    )
    args = ["evaluate", "--model-repository", str(tmp_path / "repo"), "--model-name", "emotion"]
    result = CliRunner().invoke(
        build_app(), [*args, "--data", str(data), "--engine", "fp32", "--json"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.output.splitlines()[-1])
    assert found["n"] == len(TEXTS)
    assert found["mse"] == pytest.approx(1.0, abs=1e-3)
    assert found["spearman"] == pytest.approx(1.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "label": "high"}) + "\n")
    result = CliRunner().invoke(build_app(), [*args, "--data", str(bad)])
    assert result.exit_code == 1
    assert "label 'high' is not a number" in result.output


NLI = {0: "entailment", 1: "neutral", 2: "contradiction"}
PREMISES = [t for t, _ in toy_texts(12, seed=31)] + ["good " * 200]  # the last is too long
HYPOTHESES = [t for t, _ in toy_texts(12, seed=32)] + ["bad plot"]


def pytorch_pairs(folder: Path, texts: list[str], pairs: list[str], max_length: int) -> np.ndarray:
    import torch
    from transformers import AutoTokenizer

    from sentiserve.engine.models import load_classifier

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = load_classifier(folder, attn_implementation="eager").eval()
    rows = []
    with torch.no_grad():
        for a, b in zip(texts, pairs, strict=True):
            encoded = tokenizer(
                [a], [b], truncation=True, max_length=max_length, return_tensors="pt"
            )
            rows.append(torch.softmax(model(**encoded).logits.double(), -1)[0])
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_sentence_pairs_are_encoded_with_the_models_template(arch: str, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    ckpt = checkpoint(tmp_path / "ckpt", arch, NLI)
    version = import_build(ckpt, tmp_path).load("emotion")
    want = pytorch_pairs(ckpt, PREMISES, HYPOTHESES, version.manifest.max_length)
    swapped = pytorch_pairs(ckpt, HYPOTHESES, PREMISES, version.manifest.max_length)
    assert float(np.abs(want - swapped).max()) > 1e-3, "the order of a pair matters"
    served = open_model(version, engine="fp32", device="cpu")
    assert float(np.abs(served.probabilities(PREMISES, HYPOTHESES) - want).max()) <= 1e-4

    names = list(NLI.values())
    running = start_server(tmp_path / "repo", "--engine", "fp32")
    try:
        many = httpx.post(
            f"{running.url}/v1/sentiment",
            json={"texts": PREMISES, "text_pairs": HYPOTHESES},
            timeout=30,
        ).json()["results"]
        got = np.array([[r["scores"][n] for n in names] for r in many])
        assert float(np.abs(got - want).max()) <= 1e-4
        one = httpx.post(
            f"{running.url}/v1/sentiment",
            json={"text": PREMISES[0], "text_pair": HYPOTHESES[0]},
            timeout=30,
        ).json()["results"][0]
        assert one["scores"] == many[0]["scores"]
        with Client(running.url) as client:  # the server's only model: no name needed
            assert client.classify(PREMISES[0], text_pair=HYPOTHESES[0]).scores == one["scores"]
            result = client.classify_many(PREMISES, text_pairs=HYPOTHESES)
            assert [p.scores for p in result.predictions] == [r["scores"] for r in many]
        bad = httpx.post(
            f"{running.url}/v1/sentiment", json={"texts": PREMISES, "text_pair": "x"}, timeout=30
        )
        assert bad.status_code == 400
        assert "'text_pair' goes with 'text'" in bad.json()["error"]
        short = httpx.post(
            f"{running.url}/v1/sentiment",
            json={"texts": PREMISES, "text_pairs": HYPOTHESES[:2]},
            timeout=30,
        )
        assert short.status_code == 400
        assert f"{len(PREMISES)} texts but 2 text pairs" in short.json()["error"]

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
        inputs = []
        for name, column in (("TEXT", PREMISES), ("TEXT_PAIR", HYPOTHESES)):
            tensor = grpcclient.InferInput(name, [len(column)], "BYTES")
            tensor.set_data_from_numpy(np.array([t.encode() for t in column], dtype=np.object_))
            inputs.append(tensor)
        result = grpc.infer("emotion", inputs)
        grpc.close()
        assert float(np.abs(result.as_numpy("PROBABILITIES") - want).max()) <= 1e-4
    finally:
        stop(running)

    data = tmp_path / "pairs.jsonl"
    rows = [{"premise": a, "hypothesis": b} for a, b in zip(PREMISES, HYPOTHESES, strict=True)]
    rows.append({"premise": "fine", "hypothesis": ""})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    done = cli(
        "score",
        str(data),
        str(out),
        "--text-column",
        "premise",
        "--pair-column",
        "hypothesis",
        "--model-repository",
        str(tmp_path / "repo"),
        "--model-name",
        "emotion",
        "--engine",
        "fp32",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    got = np.array([[r[f"p_{n}"] for n in names] for r in scored[:-1]])
    assert float(np.abs(got - want).max()) <= 1e-4
    assert scored[-1]["error"] == "text pair is empty"


def test_evaluate_refuses_data_labelled_unlike_the_model(
    emotion_repo: tuple[Path, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sentiserve.cli import build_app

    _, repo = emotion_repo
    data = write_csv(tmp_path / "two.csv", toy_texts(60, seed=4))  # negative / positive
    args = ["evaluate", "--model-repository", str(repo), "--model-name", "emotion"]
    result = CliRunner().invoke(build_app(), [*args, "--data", str(data)])
    assert result.exit_code == 1
    assert "expected one of anger, joy, fear, sadness, surprise" in result.output
    result = CliRunner().invoke(build_app(), [*args, "--data", "rt"])
    assert result.exit_code == 1
    assert "rt is labelled negative, positive but emotion answers anger, joy" in result.output
    labelled = write_csv(
        tmp_path / "five.csv",
        [(t, EMOTIONS[i % 5]) for i, (t, _) in enumerate(toy_texts(60, seed=4))],
    )
    result = CliRunner().invoke(build_app(), [*args, "--data", str(labelled), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["n"] == 9  # the held-out 15%


def test_pairs_in_eval_data_gate_and_calibrate_on_pairs(tmp_path: Path) -> None:
    from sentiserve.pipeline.eval_data import import_corpus

    ckpt = checkpoint(tmp_path / "ckpt", "bert", NLI)
    texts = [t for t, _ in toy_texts(60, seed=41)]
    seconds = [t for t, _ in toy_texts(60, seed=42)]
    names = list(NLI.values())
    rows = [
        {"text": a, "text_pair": b, "label": names[i % 3]}
        for i, (a, b) in enumerate(zip(texts, seconds, strict=True))
    ]
    data = tmp_path / "nli.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = import_build(ckpt, tmp_path, eval_data=data).load("emotion")
    manifest = version.manifest
    assert manifest.evaluation["fp32"]["gate"] == "accuracy"
    assert manifest.calibration["fitted_on"] == "validation"
    # The gate scored the held-out pairs: PyTorch on the same pairs gives the same accuracy.
    held_out = import_corpus(tuple(names), data).test
    assert held_out.pairs is not None
    want = pytorch_pairs(ckpt, list(held_out.texts), list(held_out.pairs), manifest.max_length)
    accuracy = float((want.argmax(1) == np.asarray(held_out.labels)).mean())
    assert manifest.evaluation["fp32"]["accuracy"] == pytest.approx(accuracy)
