"""The benchmark scripts (benchmarks/, not a package) imported as modules by their tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(relative: str) -> ModuleType:
    """``benchmarks/<relative>`` as a module named after its file (registered, so that
    dataclasses and pickling inside it work)."""
    path = BENCHMARKS / relative
    if str(BENCHMARKS) not in sys.path:  # as running a script does: they import each other
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
