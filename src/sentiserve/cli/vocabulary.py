"""The command line's vocabulary, and the old spellings it still takes for one release.

The rules (checked over the whole command tree by ``tests/unit/cli/test_vocabulary.py``):

- a model is named by what it is: ``--base-model`` (what fine-tuning starts from),
  ``--checkpoint`` (a fine-tuned model folder), ``--model-name`` (a model in a repository),
  ``--model-repository`` (the repository); no bare ``--model``;
- every duration flag carries its unit: ``-s``, ``-ms`` or ``-us``;
- every command that produces a result has ``--json`` (servers, which run until stopped,
  do not);
- nouns are groups: what acts on a model repository is under ``sentiserve repository``.

Old spellings (``--model``, ``--duration``, ``sentiserve publish`` ...) are rewritten to the
new ones before the command line is parsed, with a deprecation line on standard error, so
scripts keep working for one release. They appear in no ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from typer.core import TyperGroup

RENAMED_OPTIONS: dict[tuple[str, ...], dict[str, str]] = {
    ("train",): {"--model": "--base-model"},
    ("build",): {"--model": "--base-model", "--name": "--model-name"},
    ("export",): {"--model": "--checkpoint"},
    ("optimize",): {"--model": "--checkpoint"},
    ("evaluate",): {"--model": "--model-name"},
    ("score",): {"--model": "--model-name"},
    ("bench",): {
        "--model": "--model-name",
        "--duration": "--duration-s",
        "--warmup": "--warmup-s",
        "--timeout": "--timeout-s",
    },
    ("serve",): {"--triton-model": "--triton-model-name"},
    ("triton",): {"--exit-timeout": "--exit-timeout-s"},
    ("monitor",): {"--scrape-interval": "--scrape-interval-s"},
    ("repository", "build"): {"--name": "--model-name"},
    ("repository", "form"): {"--model": "--model-name"},
    ("repository", "show"): {"--model": "--model-name"},
}
"""Per command path: old option spelling -> new one."""

MOVED_COMMANDS: dict[str, tuple[str, ...]] = {
    "publish": ("repository", "publish"),
    "pull": ("repository", "pull"),
}
"""Old top-level command -> its place now."""


def rewrite(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The command line in today's vocabulary, and one deprecation line per old spelling.

    Only words before a ``--`` are looked at; an option's value is never rewritten (an old
    spelling is recognised only where an option may stand).
    """
    words = list(args)
    notes: list[str] = []
    if words and words[0] in MOVED_COMMANDS:
        new = MOVED_COMMANDS[words[0]]
        notes.append(
            f"`sentiserve {words[0]}` is deprecated: use `sentiserve {' '.join(new)}` "
            "(the old name goes in the next release)"
        )
        words[:1] = list(new)
    path = tuple(words[:2]) if tuple(words[:2]) in RENAMED_OPTIONS else tuple(words[:1])
    renamed = RENAMED_OPTIONS.get(path)
    if not renamed:
        return words, notes
    out = words[: len(path)]
    for word in words[len(path) :]:
        if word == "--":
            out.extend(words[len(out) :])
            break
        name, eq, value = word.partition("=")
        if name in renamed:
            notes.append(
                f"{name} is deprecated for `sentiserve {' '.join(path)}`: use {renamed[name]} "
                "(the old spelling goes in the next release)"
            )
            word = f"{renamed[name]}{eq}{value}"
        out.append(word)
    return out, notes


class Group(TyperGroup):
    """The root group: rewrites old spellings (see the module docstring) before parsing."""

    def parse_args(self, ctx: object, args: list[str]) -> list[str]:
        args, notes = rewrite(args)
        for note in notes:
            print(f"sentiserve: {note}", file=sys.stderr)  # noqa: T201 - the CLI's own output
        return super().parse_args(ctx, args)  # type: ignore[arg-type]
