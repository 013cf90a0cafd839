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
