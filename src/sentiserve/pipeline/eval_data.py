"""The texts an imported checkpoint is checked on (the optimize stage's gate, int8
calibration and temperature): the user's labelled file, their texts, or the built-in sample."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sentiserve.data.types import Corpus


def import_corpus(
    labels: Sequence[str],
    eval_data: Path | None = None,
    calibration_data: Path | None = None,
    *,
    multi_label: bool = False,
) -> Corpus:
    """The texts an imported model is checked on.

    - ``eval_data`` (labelled, ``text`` and ``label``, and ``text_pair`` for a model that
      compares two texts; for a ``multi_label`` model the label sets, see
      ``data.files.read_label_sets``): 70% held out for the gate (accuracy, or macro F1 over
      the labels), 30% for the temperature and int8 calibration.
    - else ``calibration_data`` (texts only), or else the built-in mixed-domain sample: the
      gate is agreement with fp32, and no temperature is fitted.

    With both, the labelled file gates and the texts calibrate int8.
    """
    from sentiserve.data.files import (
        has_column,
        read_file,
        read_label_sets,
        read_pairs,
        read_texts,
    )
    from sentiserve.data.sample import sample_texts, unlabelled_corpus
    from sentiserve.data.types import Examples, seeded_split
    from sentiserve.errors import DataError

    names = tuple(labels)
    if eval_data is not None:
        if multi_label:
            examples = read_label_sets(eval_data, names)
        elif has_column(eval_data, "text_pair"):  # a model that compares two texts
            examples = read_pairs(eval_data, names)
        else:
            examples = read_file(eval_data, names)
        if len(examples) < 10:
            raise DataError(f"{eval_data}: only {len(examples)} rows; need at least 10")
        test_size = int(len(examples) * 0.7)
        _, validation, test = seeded_split(
            examples, test_size=test_size, validation_size=len(examples) - test_size - 1, seed=0
        )
        calibration = validation
        if calibration_data is not None:
            texts = read_texts(calibration_data)
            calibration = Examples(texts, (0,) * len(texts), names)
        return Corpus(
            name=eval_data.stem,
            train=calibration,
            validation=validation,
            test=test,
            description=f"labelled evaluation file {eval_data}",
            provenance={"source": str(eval_data.resolve()), "gate": "accuracy"},
        )
    if calibration_data is not None:
        return unlabelled_corpus(
            read_texts(calibration_data),
            names,
            calibration_data.stem,
            {"source": str(calibration_data.resolve()), "gate": "agreement"},
        )
    return unlabelled_corpus(
        sample_texts(),
        names,
        "builtin-sample",
        {"source": "sentiserve.data.sample (mixed domains)", "gate": "agreement"},
    )
