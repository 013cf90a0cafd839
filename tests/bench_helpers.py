"""Import the benchmark scripts (bench/*.py, bench/gpu/*.py are scripts, not a package) in tests."""

from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIRS = (REPO / "bench", REPO / "bench" / "gpu")


@contextmanager
def bench_modules(*names: str):
    """The named bench scripts as modules, with bench/ and bench/gpu/ on sys.path while in use."""
    paths = [str(p) for p in BENCH_DIRS]
    sys.path[:0] = paths
    try:
        modules = [importlib.import_module(name) for name in names]
        yield modules[0] if len(modules) == 1 else tuple(modules)
    finally:
        for path in paths:
            sys.path.remove(path)
