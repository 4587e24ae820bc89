"""benchmarks/RESULTS.md is shared: engines.py writes the part above the marker
(``replace_head``), and each other benchmark owns one ``## `` section below it
(``replace_section``), replaced in place on a rerun (or appended)."""

from __future__ import annotations

import re
from pathlib import Path

KEPT_MARKER = "<!-- sections below are written by other benchmarks; engines.py keeps them -->"


def _split(path: Path) -> tuple[str, str]:
    """The text above the marker and the text below it."""
    text = path.read_text() if path.exists() else ""
    head, _, below = text.partition(KEPT_MARKER)
    return head, below


def replace_head(path: Path, head: str) -> None:
    """Put ``head`` above the marker, keeping what other benchmarks wrote below it."""
    _, below = _split(path)
    path.write_text(head.rstrip() + "\n\n" + KEPT_MARKER + "\n" + below.rstrip() + "\n")


def replace_section(path: Path, title: str, body: str) -> None:
    """Put ``body`` (starting with the ``title`` line) in place of the section ``title``
    below the marker, keeping every other section where it is."""
    head, below = _split(path)
    sections = [s.strip() for s in re.split(r"^(?=## )", below, flags=re.M) if s.strip()]
    titled = [s.splitlines()[0] for s in sections]
    if title in titled:
        sections[titled.index(title)] = body.strip()
    else:
        sections.append(body.strip())
    path.write_text(head.rstrip() + "\n\n" + KEPT_MARKER + "\n\n" + "\n\n".join(sections) + "\n")
