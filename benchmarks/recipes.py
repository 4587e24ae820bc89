"""Fine-tuning recipes for the default model (MiniLM-L6 on rt), measured on the validation
split only: the held-out test split is not read here (it is read once, by the build of the
recipe chosen). One process, one recipe after another, on this machine.

Each recipe's validation accuracy and training minutes go to benchmarks/RESULTS-recipes.json
as soon as it finishes (a stopped run keeps what it measured), and the table to a "Recipes"
section of benchmarks/RESULTS.md.

Usage: python benchmarks/recipes.py [--only NAME ...] [--max-train-examples N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from results import replace_section

HERE = Path(__file__).resolve().parent
SECTION = "## Fine-tuning recipes (`benchmarks/recipes.py`)"

RECIPES: dict[str, dict[str, Any]] = {
    # The build's recipe before this comparison.
    "cls, 2 epochs, lr 8e-5": {"pooling": "cls", "epochs": 2.0, "learning_rate": 8e-5},
    "mean, 2 epochs, lr 8e-5": {"pooling": "mean", "epochs": 2.0, "learning_rate": 8e-5},
    "mean, 3 epochs, lr 8e-5": {"pooling": "mean", "epochs": 3.0, "learning_rate": 8e-5},
    "mean, 2 epochs, lr 1.5e-4, layer decay 0.85": {
        "pooling": "mean",
        "epochs": 2.0,
        "learning_rate": 1.5e-4,
        "layer_decay": 0.85,
    },
    "mean, 3 epochs, lr 1.5e-4, layer decay 0.85": {
        "pooling": "mean",
        "epochs": 3.0,
        "learning_rate": 1.5e-4,
        "layer_decay": 0.85,
    },
}


def run(name: str, settings: dict[str, Any], max_train_examples: int | None) -> dict[str, Any]:
    from sentiserve.data import load_corpus
    from sentiserve.train.trainer import TrainConfig, train

    config = TrainConfig(batch_size=32, max_train_examples=max_train_examples, **settings)
    corpus = load_corpus("rt")
    with tempfile.TemporaryDirectory(prefix="recipe-") as out:
        result = train(corpus, Path(out), config, progress=False, held_out=False)
    row = {
        "recipe": name,
        "config": asdict(config),
        "validation_accuracy": result.validation.accuracy,
        "validation_f1": result.validation.f1,
        "steps": result.steps,
        "train_minutes": round(result.seconds / 60, 2),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def write(rows: list[dict[str, Any]]) -> None:
    import torch
    import transformers

    (HERE / "RESULTS-recipes.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        SECTION,
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores; torch {torch.__version__}, "
        f"transformers {transformers.__version__}. Base model MiniLM-L6-H384, rt train split "
        "(batch 32, seed 42, max length 256); accuracy on the 1,000-review validation split "
        "(the held-out test split is not read here). Training minutes only, measured while "
        "the machine was otherwise idle unless a note says so; export and optimize add 4 to 7 "
        'minutes to a build ("Build time" above).',
        "",
        "| recipe | validation accuracy | F1 | steps | train minutes | note |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | {row['validation_accuracy']:.4f} | "
            f"{row['validation_f1']:.4f} | {row['steps']} | {row['train_minutes']:.1f} | "
            f"{row.get('note', '')} |"
        )
    replace_section(HERE / "RESULTS.md", SECTION, "\n".join(lines))


def rewrite() -> None:
    """Rewrite the RESULTS.md section from RESULTS-recipes.json (after a run, or edits)."""
    write(json.loads((HERE / "RESULTS-recipes.json").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(RECIPES), help="Recipes to run.")
    parser.add_argument("--max-train-examples", type=int, help="Quick runs: first N only.")
    parser.add_argument("--rewrite", action="store_true", help="Only rewrite the section.")
    args = parser.parse_args()
    if args.rewrite:
        rewrite()
        return
    # Earlier rows are kept (a later run of some recipes replaces only theirs).
    saved = HERE / "RESULTS-recipes.json"
    rows: list[dict[str, Any]] = json.loads(saved.read_text()) if saved.exists() else []
    for name in args.only or RECIPES:
        row = run(name, RECIPES[name], args.max_train_examples)
        rows = [r for r in rows if r["recipe"] != name] + [row]
        write(rows)


if __name__ == "__main__":
    main()
