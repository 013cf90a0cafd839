"""bench/speed_at_quality.py: a training recipe against a reference recipe at equal quality (CA, ASR, runtime)."""

import json

import pytest

from bench_helpers import bench_modules
from p2p_plugin.metrics import Rate

ARM = "badnets-10pct-dirty/p2p-avoid_shortcuts"
CPU = {"cpus": 2, "python": "3.11.9"}
AUTHORS = {"lr": 2e-4, "epochs": 3.0, "micro_batch_size": 32, "sample_packing": False, "sequence_len": 128,
           "train_rows": 4000, "rates": [0.1], "attacks": ["badnets"], "eval_split": "dev", "seed": 0}
PACKED = {**AUTHORS, "lr": 1e-3, "epochs": 1.0, "micro_batch_size": 1, "sample_packing": True, "sequence_len": 256}


@pytest.fixture()
def speed():
    with bench_modules("speed_at_quality") as module:
        yield module


def reading(ca_k, asr_k):
    """A classification reading as bench/defense.py stores it (1000 clean rows, 500 triggered)."""
    ca, asr = Rate(ca_k, 1000).to_dict(), Rate(asr_k, 500).to_dict()
    return {"ca": {"projected": ca, "strict": ca}, "asr": {"projected": asr, "strict": asr},
            "n_clean": 1000, "n_triggered": 500}


def write_report(path, settings, ca_k, asr_k, runtime, machine=CPU, removed=None, arm_name=ARM):
    readings = {"p2p": reading(ca_k, asr_k)}
    if removed:
        readings["p2p, suspected words removed"] = reading(*removed)
    arm = {"readings": readings, "train_runtime_s": runtime, "train_wall_s": runtime + 15, "machine": machine}
    path.write_text(json.dumps({"command": "python bench/defense.py ...", "settings": settings, "arms": {arm_name: arm}}))
    return str(path)


def test_equal_quality_needs_ca_and_asr_within_tolerance_on_every_shared_reading(speed, tmp_path):
    ref = write_report(tmp_path / "ref.json", AUTHORS, ca_k=850, asr_k=100, runtime=3000, removed=(850, 60))
    # CA 1.5 points lower and ASR 2 points higher: still equal (the edges of the tolerances), 4x faster; its report
    # has more attacks (other arms), which does not change this arm's data
    edge = write_report(tmp_path / "edge.json", {**PACKED, "attacks": ["badnets", "addsent"]}, ca_k=835, asr_k=110,
                        runtime=750, removed=(835, 70))
    # as trained within tolerance, but with the words removed its ASR is 2.4 points higher: not equal
    worse = write_report(tmp_path / "worse.json", PACKED, ca_k=860, asr_k=90, runtime=600, removed=(850, 72))
    out = speed.main(["--reference", ref, "--candidates", edge, worse, "--out", str(tmp_path / "sq")])
    first, second = out["candidates"]
    assert first["equal_quality"] and first["speed_goal_met"] and first["speedup"] == pytest.approx(4.0)
    assert set(first["readings"]) == {"p2p", "p2p, suspected words removed"}
    assert second["readings"]["p2p"]["equal_quality"]
    assert not second["readings"]["p2p, suspected words removed"]["equal_quality"]
    assert not second["equal_quality"] and not second["speed_goal_met"] and second["speedup"] == pytest.approx(5.0)
    written = json.loads((tmp_path / "sq.json").read_text())
    assert written["candidates"][0]["recipe"] == "packed 256 tokens, lr 0.001, 1 epoch"
    assert written["reference"]["recipe"] == "batch 32 unpacked, 128 tokens, lr 0.0002, 3 epochs"
    md = (tmp_path / "sq.md").read_text()
    assert "met by: packed 256 tokens, lr 0.001, 1 epoch." in md and "| +2.4 |" in md


def test_equal_quality_but_too_slow_misses_the_speed_goal(speed, tmp_path):
    ref = write_report(tmp_path / "ref.json", AUTHORS, ca_k=850, asr_k=100, runtime=3000)
    slow = write_report(tmp_path / "slow.json", PACKED, ca_k=870, asr_k=80, runtime=1200)
    out = speed.main(["--reference", ref, "--candidates", slow, "--out", str(tmp_path / "sq")])
    assert out["candidates"][0]["equal_quality"] and not out["candidates"][0]["speed_goal_met"]
    assert "not met by any candidate" in (tmp_path / "sq.md").read_text()


def test_reports_on_other_data_or_another_machine_are_refused_naming_why(speed, tmp_path):
    ref = write_report(tmp_path / "ref.json", AUTHORS, ca_k=850, asr_k=100, runtime=3000)
    other_rows = write_report(tmp_path / "rows.json", {**PACKED, "train_rows": 2000}, ca_k=850, asr_k=100, runtime=700)
    with pytest.raises(SystemExit, match="train_rows=2000"):
        speed.main(["--reference", ref, "--candidates", other_rows, "--out", str(tmp_path / "sq")])
    gpu = write_report(tmp_path / "gpu.json", PACKED, ca_k=850, asr_k=100, runtime=70,
                       machine={"cpus": 16, "python": "3.12.3", "gpu": "NVIDIA H200"})
    with pytest.raises(SystemExit, match="not comparable"):
        speed.main(["--reference", ref, "--candidates", gpu, "--out", str(tmp_path / "sq")])
    with pytest.raises(SystemExit, match="has no arm 'badnets-10pct-dirty/p2p-random'"):
        speed.main(["--reference", ref, "--candidates", f"{ref}#badnets-10pct-dirty/p2p-random",
                    "--out", str(tmp_path / "sq")])
    more_attacks = write_report(tmp_path / "more.json", {**PACKED, "attacks": ["badnets", "addsent"]}, ca_k=850,
                                asr_k=100, runtime=700, arm_name="addsent-10pct-dirty/p2p-avoid_shortcuts")
    with pytest.raises(SystemExit, match="trained on addsent-10pct-dirty"):  # its settings may list more attacks,
        speed.main(["--reference", ref, "--candidates",                      # but the arm read must be the same attack's
                    f"{more_attacks}#addsent-10pct-dirty/p2p-avoid_shortcuts", "--out", str(tmp_path / "sq")])
    assert not (tmp_path / "sq.json").exists()
