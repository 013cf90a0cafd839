"""bench/per_class.py: clean accuracy split by true class, and the share of each predicted label."""

import numpy as np
import pytest

from bench_helpers import bench_modules


@pytest.fixture()
def per_class_bench():
    with bench_modules("per_class") as module:
        yield module


def test_a_shift_towards_one_label_shows_as_one_class_losing(per_class_bench):
    project = {"0": "0", "1": "1", "2": "0", "3": "1"}.get
    labels = ["0", "1", "2", "3"]  # the trained space: original then safe labels
    truths = ["0", "0", "1", "1", "1", "1"]
    # predictions (argmax): 2, 2, 3, 2, 2, 1 -> projected 0, 0, 1, 0, 0, 1
    probs = np.eye(4)[[2, 2, 3, 2, 2, 1]] * 0.7 + 0.075
    result = per_class_bench.per_class(labels, probs, truths, project)
    assert result["ca"] == 66.7 and result["rows"] == 6
    assert result["accuracy_by_class"] == {"0": 100.0, "1": 50.0}  # the positives pay for the shift
    assert result["rows_by_class"] == {"0": 2, "1": 4}
    assert result["predicted_share"] == {"0": 66.7, "1": 33.3}
    table = per_class_bench.markdown({"date": "d", "attacks": {"clause": {"arm": result}}}, "cmd")
    assert "| clause | arm | 66.7 | 0: 100.0, 1: 50.0 | 0: 66.7, 1: 33.3 |" in table


def test_an_arm_without_a_model_is_left_out_and_said(per_class_bench, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "clause-10pct-dirty"
    folder.mkdir()
    monkeypatch.setattr(per_class_bench, "test_sets", lambda *a: ((["a", "b"], ["0", "1"]), ([], [])))
    per_class_bench.main(["--work", str(tmp_path), "--attacks", "clause", "--arms", "missing", "--out",
                          str(tmp_path / "out" / "per_class")])
    assert "missing: no trained model" in capsys.readouterr().out
    assert (tmp_path / "out" / "per_class.md").read_text().count("| clause |") == 0


def _two_label_probs(margins):
    """Label probabilities over the trained space 0, 1, 2, 3 (2 and 3 the safe labels) with these target
    (label 1) margins, all the mass on the safe labels, as a P2P model with its benign trigger reads."""
    p1 = 1 / (1 + np.exp(-np.asarray(margins, dtype=float)))
    return np.stack([np.zeros_like(p1), np.zeros_like(p1), 1 - p1, p1], axis=1)


def test_a_pure_shift_is_bought_back_by_an_offset_and_leaves_the_auc(per_class_bench):
    project = {"0": "0", "1": "1", "2": "0", "3": "1"}.get
    labels = ["0", "1", "2", "3"]
    truths = ["0"] * 4 + ["1"] * 4
    good = np.array([-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0])  # perfectly ranked, threshold at 0
    trig_truths = ["0"] * 4
    trig = np.array([-3.0, -2.5, -0.75, -0.25])  # triggered non-target rows
    shifted = ranking = None
    for name, shift in (("plain", 0.0), ("shifted", -1.25)):
        result = per_class_bench.ranking_and_sweep(labels, _two_label_probs(good + shift), truths,
                                                   _two_label_probs(trig + shift), trig_truths, project, "1",
                                                   (-1.0, 0.0, 1.25, 3.0))
        if name == "plain":
            ranking = result
        else:
            shifted = result
    assert ranking["auc"] == shifted["auc"] == 1.0  # a shift does not change the ranking
    assert ranking["best_offset"]["offset"] == 0.0 and ranking["best_offset"]["ca"] == 100.0 and ranking["asr"] == 0.0
    zero = next(r for r in shifted["sweep"] if r["offset"] == 0.0)
    assert zero["ca"] == 75.0 and zero["target_share"] == 25.0  # two positives called negative
    assert shifted["best_offset"] == {"offset": 1.25, "ca": 100.0, "asr": 0.0, "target_share": 50.0}
    everything = next(r for r in shifted["sweep"] if r["offset"] == 3.0)
    assert everything["asr"] == 50.0 and everything["ca"] == 62.5  # too large: triggered rows go to target too


def test_auc_counts_ties_half_and_a_worse_ranking_shows(per_class_bench):
    assert per_class_bench.auc(np.array([1.0, 0.0, 1.0]), np.array([True, False, False])) == 0.75
    assert per_class_bench.auc(np.array([0.0, 1.0]), np.array([True, False])) == 0.0
    assert per_class_bench.auc(np.array([0.0, 1.0]), np.array([True, True])) is None
