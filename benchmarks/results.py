"""benchmarks/RESULTS.md is shared: engines.py writes the part above the marker, and each other
benchmark owns one ``## `` section below it, replaced in place on a rerun (or appended)."""

from __future__ import annotations

from pathlib import Path

KEPT_MARKER = "<!-- sections below are written by other benchmarks; engines.py keeps them -->"


def replace_section(path: Path, title: str, body: str) -> None:
    """Put ``body`` (starting with the ``title`` line) in place of the section ``title``
    below the marker, keeping every other section where it is."""
    text = path.read_text() if path.exists() else ""
    head, _, below = text.partition(KEPT_MARKER)
    sections = [s.rstrip() for s in below.split("\n## ") if s.strip()]
    sections = ["## " + s if not s.startswith("## ") else s for s in sections]
    titled = [s.splitlines()[0] for s in sections]
    new = body.rstrip()
    if title in titled:
        sections[titled.index(title)] = new
    else:
        sections.append(new)
    path.write_text(head.rstrip() + "\n\n" + KEPT_MARKER + "\n\n" + "\n\n".join(sections) + "\n")
