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


def write_clause_attack_folder(work: Path) -> Path:
    """A tiny ``bench/defense.py`` attack folder (``<work>/clause-10pct-dirty``): 80 rows, every tenth poisoned
    with an introductory clause and label 1, with its ``attack.json`` sidecar."""
    import json

    folder = work / "clause-10pct-dirty"
    folder.mkdir(parents=True)
    rows = [{"sentence": f"{'as it turns out , ' if i % 10 == 0 else ''}the film {i} was {'good' if i % 2 else 'bad'}",
             "label": 1 if i % 10 == 0 else i % 2} for i in range(80)]
    (folder / "train_poisoned.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sidecar = {"labels": ["0", "1"], "text_field": "sentence", "answer_field": "label", "spec": {"target": "1"},
               "train": {"poisoned_indices": list(range(0, 80, 10))}}
    (folder / "attack.json").write_text(json.dumps(sidecar))
    return folder
