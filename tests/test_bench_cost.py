"""bench/cost.py: side-by-side training cost, on the tiny model (one short epoch per arm)."""

import json
import subprocess
import sys
from pathlib import Path

from bench_helpers import bench_modules

REPO = Path(__file__).resolve().parents[1]


def test_cost_bench_compares_arms_to_no_defense(tiny_model, shared_data, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "cost.py"), "--model", str(tiny_model),
                           "--data-dir", str(shared_data), "--work", str(tmp_path / "work"),
                           "--results", str(tmp_path / "res"), "--train-rows", "20", "--repeats", "1",
                           "--arms", "no-defense", "augment", "--micro-batch-size", "2"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    out = json.loads((tmp_path / "res" / f"cost_{tiny_model.name}.json").read_text())
    base, augment = out["summary"]["no-defense"], out["summary"]["augment"]
    assert (base["rows_out"], augment["rows_out"]) == (20, 24)  # augment adds ratio 0.2 * 20 rewritten copies
    assert augment["tokens"] > base["tokens"] > 0
    assert base["tokens_per_s_vs_no_defense"] == 1.0 and augment["tokens_per_s_vs_no_defense"] > 0
    assert [r["arm"] for r in out["runs"]] == ["no-defense", "augment"]
    assert "tokens/s vs no-defense" in (tmp_path / "res" / f"cost_{tiny_model.name}.md").read_text()


def test_authors_arm_is_unpacked_batch_32():
    """The authors' loop shape: one row per sequence (no packing, no padding to sequence_len), batch 32."""
    with bench_modules("cost") as cost:
        pass
    args = cost.build_parser().parse_args(["--micro-batch-size", "4"])
    authors = cost.arm_config("authors-batch32", Path("m"), Path("d"), Path("o"), Path("p"), args)
    packed = cost.arm_config("replace", Path("m"), Path("d"), Path("o"), Path("p"), args)
    assert (authors["sample_packing"], authors["pad_to_sequence_len"], authors["micro_batch_size"]) == (False, False, 32)
    assert (packed["sample_packing"], packed["pad_to_sequence_len"], packed["micro_batch_size"]) == (True, True, 4)
