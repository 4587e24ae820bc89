"""The tutorial's IMDb data set, from the Hugging Face hub through ``datasets``.

Offline machines get a clear error that names the alternatives; the same reviews work
from the aclImdb folder of the IMDb tarball (``--data path/to/aclImdb``).
"""

from __future__ import annotations

import logging
from typing import Any

from sentiserve.data.types import DEFAULT_LABELS, Corpus, Examples, holdout_sizes, seeded_split
from sentiserve.errors import DataUnavailableError

logger = logging.getLogger(__name__)

HUB_NAME = "imdb"
SPLIT_SEED = 1234
ALTERNATIVES = (
    "use --data rt (built in), an aclImdb folder from the IMDb tarball "
    "(--data path/to/aclImdb), or a CSV/TSV/JSONL/Parquet file with text and label columns"
)


def _to_examples(split: Any) -> Examples:
    # The hub's imdb labels are 0 = neg, 1 = pos: the same order as DEFAULT_LABELS.
    texts = tuple(" ".join(t.replace("<br />", " ").split()) for t in split["text"])
    return Examples(texts, tuple(int(x) for x in split["label"]), DEFAULT_LABELS)


def load(hub_name: str = HUB_NAME) -> Corpus:
    """IMDb train/test from the hub; validation carved from train with a fixed seed."""
    try:
        import datasets
    except ImportError as exc:
        raise DataUnavailableError(
            f"the imdb source needs the 'datasets' package (pip install 'sentiserve[hub]'); "
            f"or {ALTERNATIVES}"
        ) from exc
    try:
        loaded = datasets.load_dataset(hub_name)
    except Exception as exc:  # network, offline mode and hub errors come in many types
        raise DataUnavailableError(
            f"cannot load {hub_name!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). The hub is not "
            f"reachable from this machine; {ALTERNATIVES}"
        ) from exc
    full_train = _to_examples(loaded["train"])
    _, validation_size = holdout_sizes(len(full_train))
    train, validation, _ = seeded_split(
        full_train, test_size=0, validation_size=validation_size, seed=SPLIT_SEED
    )
    return Corpus(
        name="imdb",
        train=train,
        validation=validation,
        test=_to_examples(loaded["test"]),
        description="IMDb movie reviews (Hugging Face hub)",
        provenance={"source": f"hf-hub:{hub_name}", "split_seed": str(SPLIT_SEED)},
    )
