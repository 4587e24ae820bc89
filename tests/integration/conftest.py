"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiserve.triton.environment import TritonEnvironment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def environment() -> TritonEnvironment:
    """Triton's own environment (``.triton/``, made by ``make triton``; made here if missing,
    which needs PyPI)."""
    env = TritonEnvironment(ROOT / ".triton")
    if not env.ready():
        env.create()
    return env
