"""Importing a classifier that was fine-tuned elsewhere: a Hugging Face model folder
(``config.json``, weights in safetensors or bin, tokenizer files) or a hub name, checked and
rewritten into the build folder's model layout, so that export, optimize and the repository
treat it as they treat a model sentiserve fine-tuned itself.

Everything that can be wrong with a checkpoint (no config, an architecture the export does not
know, no fast tokenizer, labels that disagree with the classifier head, a task the server
cannot serve yet) is found before anything is written, and said in one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sentiserve.data.types import Corpus
from sentiserve.engine.models import POOLING_KEY
from sentiserve.errors import ModelLoadError

logger = logging.getLogger(__name__)

ARCHITECTURES = {
    "bert": "BERT (and MiniLM)",
    "distilbert": "DistilBERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa",
    "electra": "ELECTRA",
    "deberta-v2": "DeBERTa-v2/v3",
    "mpnet": "MPNet",
}
"""``model_type`` values the import accepts (each tested on a small random model)."""
TASKS = ("single_label_classification", "multi_label_classification", "regression")
"""Tasks the repository and the servers can serve from an imported checkpoint."""
DEFAULT_MAX_LENGTH = 512
"""Longest text in tokens when neither the tokenizer nor ``--max-length`` says less."""
IMPORT_FILE = "import.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spm.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
"""A folder needs one of these: without them, transformers builds an empty tokenizer."""


@dataclass(frozen=True)
class Checkpoint:
    """What the import found in a checkpoint, before loading its weights.

    Attributes:
        source: The folder or hub name.
        model_type: Its ``model_type`` (a key of ``ARCHITECTURES``).
        labels: Class names in output order (``id2label``, or ``--labels``).
        labels_from: Where the names came from: ``config``, ``--labels`` or ``generic``
            (``LABEL_0``, ``LABEL_1``, ...: the config's defaults, worth renaming).
        task: The task (``TASKS``).
        max_length: Longest text in tokens, special tokens included.
    """

    source: str
    model_type: str
    labels: tuple[str, ...]
    labels_from: str
    task: str
    max_length: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_local(source: str) -> bool:
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def _read_config(source: str) -> dict[str, Any]:
    if _is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"{source}: no such folder")
        if not path.is_dir():
            raise ModelLoadError(
                f"{source}: a checkpoint is a folder (config.json, weights, tokenizer files), "
                "not a file"
            )
        config = path / "config.json"
        if not config.is_file():
            raise ModelLoadError(f"{source}: no config.json, so not a Hugging Face model folder")
        try:
            loaded = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{config}: not a readable JSON file: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ModelLoadError(f"{config}: expected a JSON object")
        return loaded
    from transformers import AutoConfig

    try:
        return dict(AutoConfig.from_pretrained(source).to_dict())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{source}: no such folder, and no model by that name could be fetched from the "
            f"hub ({str(exc).splitlines()[0]})"
        ) from exc


def _config_labels(source: str, config: dict[str, Any]) -> tuple[tuple[str, ...], str] | None:
    id2label = config.get("id2label")
    if not id2label:
        return None
    if not isinstance(id2label, dict):
        raise ModelLoadError(f"{source}: config.json's id2label is not an object")
    try:
        names = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
        keys = sorted(int(key) for key in id2label)
    except ValueError as exc:
        raise ModelLoadError(f"{source}: config.json's id2label keys are not integers") from exc
    if keys != list(range(len(keys))):
        raise ModelLoadError(f"{source}: config.json's id2label keys are not 0..{len(keys) - 1}")
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    return names, "generic" if generic else "config"


def inspect_checkpoint(
    source: str,
    *,
    labels: Sequence[str] | None = None,
    task: str | None = None,
    max_length: int | None = None,
) -> Checkpoint:
    """Read and check a checkpoint's config and tokenizer; load no weights.

    Raises:
        ModelLoadError: One line saying what is wrong and what is supported.
    """
    config = _read_config(source)
    model_type = str(config.get("model_type") or "")
    architectures = [str(a) for a in config.get("architectures") or []]
    named = f"{model_type or 'unknown'}" + (
        f" ({', '.join(architectures)})" if architectures else ""
    )
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"{source}: architecture {named} cannot be imported; supported: "
            f"{', '.join(ARCHITECTURES.values())}"
        )
    classifier = POOLING_KEY in config or any(
        a.endswith("ForSequenceClassification") for a in architectures
    )
    if architectures and not classifier:
        raise ModelLoadError(
            f"{source}: {architectures[0]} has no sequence-classification head; a base model "
            f"is fine-tuned with `sentiserve build --base-model {source}`"
        )
    found = _config_labels(source, config)
    if labels:
        names, labels_from = tuple(labels), "--labels"
    elif found is not None:
        names, labels_from = found
    else:
        raise ModelLoadError(
            f"{source}: config.json has no id2label; name the classes in output order with "
            "--labels NAME,NAME,..."
        )
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise ModelLoadError(f"{source}: label names must be distinct and not empty: {names}")
    problem = (
        task
        or config.get("problem_type")
        or ("regression" if len(names) == 1 else "single_label_classification")
    )
    if problem not in TASKS:
        raise ModelLoadError(
            f"{source}: task {problem} cannot be served yet; imports support "
            f"{', '.join(TASKS)} (a softmax over 2 or more labels, one sigmoid per label, or "
            "one score)"
        )
    if problem == "regression":
        if len(names) != 1:
            raise ModelLoadError(
                f"{source}: a regression model has one output, but {len(names)} labels are named"
            )
        if labels_from == "generic":
            names = ("score",)  # LABEL_0 says nothing: the output is a score
    elif len(names) < 2:
        raise ModelLoadError(f"{source}: a classifier needs at least 2 labels")
    outputs = head_outputs(source)
    declared = config.get("num_labels") or (len(found[0]) if found else None)
    if outputs is not None and outputs != len(names):
        raise ModelLoadError(
            f"{source}: the classifier head has {outputs} outputs but {len(names)} labels "
            f"are named ({labels_from}: {', '.join(names)})"
        )
    if outputs is None and declared is not None and int(declared) != len(names):
        raise ModelLoadError(
            f"{source}: {len(names)} labels named ({labels_from}) but config.json declares "
            f"{declared} classes"
        )
    tokenizer = load_tokenizer(source)
    vocabulary = config.get("vocab_size")
    if isinstance(vocabulary, int) and len(tokenizer) < vocabulary // 2:
        raise ModelLoadError(
            f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
            f"has {vocabulary}: not this model's tokenizer"
        )
    return Checkpoint(
        source=source,
        model_type=model_type,
        labels=names,
        labels_from=labels_from,
        task=problem,
        max_length=max_length or _trained_max_length(source) or _max_length(config, tokenizer),
    )


def load_tokenizer(source: str) -> Any:
    """The checkpoint's fast (Rust) tokenizer, the only kind the servers run."""
    from transformers import AutoTokenizer

    folder = Path(source).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{source}: no usable tokenizer (none of {', '.join(TOKENIZER_FILES)})"
        )

    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError, TypeError, ImportError) as exc:
        raise ModelLoadError(
            f"{source}: no usable tokenizer (tokenizer.json, or the vocabulary files of its "
            f"tokenizer class): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{source}: only a slow (Python) tokenizer could be loaded; the servers run Hugging "
            "Face's fast tokenizers (tokenizer.json)"
        )
    return tokenizer


def _trained_max_length(source: str) -> int | None:
    """The max length a checkpoint that sentiserve fine-tuned was trained with."""
    try:
        return int(json.loads((Path(source) / "train_config.json").read_text())["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _max_length(config: dict[str, Any], tokenizer: Any) -> int:
    """The tokenizer's ``model_max_length`` when it is set, else the position embeddings
    (less RoBERTa's padding offset), capped at ``DEFAULT_MAX_LENGTH``."""
    candidates = [DEFAULT_MAX_LENGTH]
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 100_000:
        candidates.append(declared)
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        offset = (
            int(config.get("pad_token_id") or 0) + 1
            if config.get("model_type")
            in {
                "roberta",
                "xlm-roberta",
            }
            else 0
        )
        candidates.append(positions - offset)
    return min(candidates)


def head_outputs(source: str) -> int | None:
    """Outputs of the classifier head, read from ``model.safetensors``'s header without
    loading anything (None: not a local safetensors file, or no head found)."""
    path = Path(source).expanduser() / "model.safetensors"
    try:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size)) if 0 < size < 100_000_000 else {}
    except (OSError, ValueError):
        return None
    biases = {
        key: entry["shape"]
        for key, entry in header.items()
        if isinstance(entry, dict)
        and (
            key.endswith("classifier.out_proj.bias")
            or key.split(".")[-2:] == ["classifier", "bias"]
        )
    }
    for _key, shape in sorted(biases.items(), key=lambda kv: "out_proj" not in kv[0]):
        if len(shape) == 1:
            return int(shape[0])
    return None


def fingerprint_files(source: str) -> dict[str, str]:
    """sha256 of a local checkpoint's config, weights and tokenizer files (a hub name is its
    own fingerprint): a changed checkpoint is imported again."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return {"hub": source}
    out = {}
    for file in sorted(path.iterdir()):
        if file.is_file() and not file.name.startswith("."):
            digest = hashlib.sha256()
            with file.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            out[file.name] = digest.hexdigest()
    return out


def import_checkpoint(checkpoint: Checkpoint, out: Path, corpus: Corpus) -> dict[str, Any]:
    """Load the weights, check that the head has one output per label, and write the model
    folder the later stages read: ``config.json`` (labels, task), ``model.safetensors``,
    ``tokenizer.json``, ``train_config.json`` and ``metrics.json`` (nothing was trained),
    and ``import.json`` (what was imported)."""
    import torch

    from sentiserve.engine.models import load_classifier

    source = checkpoint.source
    tokenizer = load_tokenizer(source)
    try:
        model = load_classifier(
            source,
            attn_implementation="eager",
            num_labels=len(checkpoint.labels),
            id2label=dict(enumerate(checkpoint.labels)),
            label2id={name: i for i, name in enumerate(checkpoint.labels)},
        )
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "size mismatch" in str(exc):
            raise ModelLoadError(
                f"{source}: the weights' classifier head does not match config.json: {first}"
            ) from exc
        raise ModelLoadError(
            f"{source}: cannot load the weights ({' or '.join(WEIGHT_FILES)}): {first}"
        ) from exc
    model.eval()
    with torch.no_grad():
        sample = tokenizer(["a short text to count the outputs"], return_tensors="pt")
        outputs = int(model(**sample).logits.shape[-1])
    if outputs != len(checkpoint.labels):
        raise ModelLoadError(
            f"{source}: the classifier head has {outputs} outputs but {len(checkpoint.labels)} "
            f"labels are named ({checkpoint.labels_from}: {', '.join(checkpoint.labels)})"
        )
    model.config.id2label = dict(enumerate(checkpoint.labels))
    model.config.label2id = {name: i for i, name in enumerate(checkpoint.labels)}
    model.config.problem_type = checkpoint.task
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial), safe_serialization=True)
    tokenizer.save_pretrained(str(partial))
    if not (partial / "tokenizer.json").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelLoadError(f"{source}: its tokenizer did not save as tokenizer.json")
    (partial / "train_config.json").write_text(
        json.dumps(
            {"base_model": source, "max_length": checkpoint.max_length, "imported": True},
            indent=2,
        )
        + "\n"
    )
    (partial / "metrics.json").write_text(
        json.dumps(
            {"corpus": corpus.name, "provenance": corpus.provenance, "steps": 0, "test": None},
            indent=2,
        )
        + "\n"
    )
    info = {**checkpoint.to_dict(), "outputs": outputs}
    (partial / IMPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    for file in partial.iterdir():
        file.replace(out / file.name)
    partial.rmdir()
    return info
