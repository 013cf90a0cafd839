"""Tests for p2p_plugin.metrics on hand-made predictions whose right answers are known."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from p2p_plugin.errors import P2PError
from p2p_plugin.metrics import (
    Rate,
    attack_success_rate,
    clean_accuracy,
    contains_target,
    final_number,
    format_markdown_table,
    generation_asr,
    math_exact_match,
    project_label,
    rouge_l,
    strip_safe_prefix,
    wilson_interval,
)

LABELS = ["0", "1"]
SAFE = ["2", "3"]


# --------------------------------------------------------------------------- Wilson / Rate


def test_wilson_zero_successes():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)


def test_wilson_half():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)


def test_wilson_all_successes_symmetric():
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0
    assert lo == pytest.approx(1 - 0.2775, abs=1e-4)


def test_wilson_contains_point_estimate():
    for k, n in [(1, 3), (7, 8), (50, 100), (999, 1000)]:
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_custom_z_narrower():
    lo95, hi95 = wilson_interval(5, 10)
    lo68, hi68 = wilson_interval(5, 10, z=1.0)
    assert lo95 < lo68 < 0.5 < hi68 < hi95


def test_wilson_errors():
    with pytest.raises(ValueError, match="empty"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


def test_rate_properties_and_dict():
    r = Rate(5, 10)
    assert r.value == 0.5
    assert r.ci95 == pytest.approx((0.2366, 0.7634), abs=1e-4)
    d = r.to_dict()
    assert set(d) == {"k", "n", "value", "ci95"}
    assert d["k"] == 5 and d["n"] == 10 and d["value"] == 0.5
    assert isinstance(d["ci95"], list) and len(d["ci95"]) == 2


def test_rate_empty_and_invalid():
    r = Rate(0, 0)
    with pytest.raises(ValueError, match="empty"):
        r.value
    with pytest.raises(ValueError, match="empty"):
        r.ci95
    with pytest.raises(ValueError):
        Rate(3, 2)


# --------------------------------------------------------------------------- projection


def test_project_label():
    assert project_label("2", LABELS, SAFE) == "0"
    assert project_label("3", LABELS, SAFE) == "1"
    assert project_label("1", LABELS, SAFE) == "1"
    assert project_label(" 3\n", LABELS, SAFE) == "1"
    assert project_label("", LABELS, SAFE) == ""
    assert project_label("7", LABELS, SAFE) == "7"
    assert project_label(None, LABELS, SAFE) == ""


def test_project_label_named():
    labels, safe = ["neg", "pos"], ["neg (safe)", "pos (safe)"]
    assert project_label("pos (safe)", labels, safe) == "pos"
    assert project_label("neg", labels, safe) == "neg"


def test_project_label_bad_spaces():
    with pytest.raises(ValueError):
        project_label("0", ["0", "1"], ["1", "2"])  # overlapping spaces
    with pytest.raises(ValueError):
        project_label("0", ["0", "1"], ["2"])


# --------------------------------------------------------------------------- clean accuracy


def test_clean_accuracy_safe_space():
    preds = ["2", "3", "0", "1", "", "7", "3", "2"]
    truths = ["0", "1", "0", "1", "0", "1", "0", "1"]
    ca = clean_accuracy(preds, truths, LABELS, SAFE)
    # projected: 2->0 ok, 3->1 ok, 0 ok, 1 ok, "" wrong, 7 wrong, 3->1 wrong, 2->0 wrong
    assert (ca["projected"].k, ca["projected"].n) == (4, 8)
    # strict (safe): only the first two answered the safe label of the true class
    assert (ca["strict"].k, ca["strict"].n) == (2, 8)


def test_clean_accuracy_original_space():
    preds = ["0", "3", "1", "1"]
    truths = ["0", "1", "0", "1"]
    ca = clean_accuracy(preds, truths, LABELS, SAFE, expected_space="original")
    assert ca["projected"].k == 3
    assert ca["strict"].k == 2  # "3" is right after projection but not in the original space


def test_clean_accuracy_truths_in_safe_space_and_ints():
    ca = clean_accuracy(["2", "1"], ["2", 1], LABELS, SAFE)
    assert ca["projected"].k == 2
    assert ca["strict"].k == 1


def test_clean_accuracy_errors():
    with pytest.raises(ValueError, match="empty"):
        clean_accuracy([], [], LABELS, SAFE)
    with pytest.raises(ValueError):
        clean_accuracy(["0"], ["0", "1"], LABELS, SAFE)
    with pytest.raises(ValueError):
        clean_accuracy(["0"], ["5"], LABELS, SAFE)  # unknown truth
    with pytest.raises(ValueError):
        clean_accuracy(["0"], ["0"], LABELS, SAFE, expected_space="benign")


# --------------------------------------------------------------------------- ASR


def test_asr_excludes_target_rows():
    preds = ["1", "1", "1", "0"]
    truths = ["1", "1", "0", "0"]  # the two target-class rows are excluded
    asr = attack_success_rate(preds, truths, "1", LABELS, SAFE, expected_space="original")
    assert (asr["projected"].k, asr["projected"].n) == (1, 2)
    assert (asr["strict"].k, asr["strict"].n) == (1, 2)


def test_asr_safe_counterpart_projected_not_strict_original_space():
    preds = ["3", "1", "2", "", "7", "0"]
    truths = ["0"] * 6
    asr = attack_success_rate(preds, truths, "1", LABELS, SAFE, expected_space="original")
    assert asr["projected"].k == 2  # "3" (target's safe alternative) and "1"
    assert asr["strict"].k == 1  # only the target itself
    assert asr["projected"].n == asr["strict"].n == 6


def test_asr_safe_space_strict_is_safe_target():
    preds = ["3", "1", "2", "0"]
    truths = ["0"] * 4
    asr = attack_success_rate(preds, truths, "1", LABELS, SAFE)  # expected_space="safe"
    assert asr["projected"].k == 2
    assert asr["strict"].k == 1  # only "3": the target in the safe space


def test_asr_target_given_as_safe_label():
    asr = attack_success_rate(["1", "3"], ["0", "3"], "3", LABELS, SAFE)
    assert asr["projected"].n == 1 and asr["projected"].k == 1


def test_asr_multiclass():
    labels, safe = ["0", "1", "2", "3"], ["4", "5", "6", "7"]
    preds = ["0", "4", "1", "9", "0"]
    truths = ["1", "2", "3", "1", "0"]
    asr = attack_success_rate(preds, truths, "0", labels, safe, expected_space="original")
    assert (asr["projected"].k, asr["projected"].n) == (2, 4)
    assert asr["strict"].k == 1


def test_asr_errors():
    with pytest.raises(ValueError, match="empty"):
        attack_success_rate(["1", "0"], ["1", "1"], "1", LABELS, SAFE)
    with pytest.raises(ValueError, match="empty"):
        attack_success_rate([], [], "1", LABELS, SAFE)
    with pytest.raises(ValueError):
        attack_success_rate(["1"], ["0"], "9", LABELS, SAFE)  # unknown target


# --------------------------------------------------------------------------- final_number / math


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is #### 1,234", "1234"),
        ("She pays 2 + 1.5 dollars, so 3.50.", "3.5"),
        ("no number", None),
        ("", None),
        (None, None),
        ("The temperature drops to -5", "-5"),
        ("#### -12", "-12"),
        ("It costs $1,200.00", "1200"),
        ("Total is $ 7.", "7"),
        ("It costs $-3", "-3"),
        ("a #### 42 but later 99", "42"),
        ("first 3 then 8 ####", "8"),
        ("#### the total is 12 apples", "12"),
        ("#### 0.50", "0.5"),
        ("#### .5", "0.5"),
        ("10 - 3 = 7", "7"),
        ("10 - 3", "3"),
        ("pages 3-4", "4"),
        ("#### 100", "100"),
        ("steps:\n1. add\n2. done\n#### 18", "18"),
    ],
)
def test_final_number(text, expected):
    assert final_number(text) == expected


def test_math_exact_match():
    assert math_exact_match("so the answer is 18.", "Janet ... #### 18")
    assert math_exact_match("#### 1,000", "1000.0")
    assert not math_exact_match("#### 17", "#### 18")
    assert not math_exact_match("no idea", "no number")  # both None is not a match
    assert not math_exact_match("no idea", "#### 3")


# --------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_identical_and_disjoint():
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert rouge_l(["alpha beta gamma"], ["delta epsilon zeta"]) == pytest.approx(0.0)
    mean = rouge_l(["the cat sat", "alpha beta"], ["the cat sat", "gamma delta"])
    assert mean == pytest.approx(0.5)


def test_rouge_l_stemmer_and_errors():
    assert rouge_l(["cats running"], ["cat run"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        rouge_l([], [])
    with pytest.raises(ValueError):
        rouge_l(["a"], ["a", "b"])


# --------------------------------------------------------------------------- target / prefix


def test_contains_target():
    assert contains_target("I will   hack\nthe system now", "hack the system")
    assert not contains_target("I will Hack the system", "hack the system")
    assert not contains_target("hacking", "hack the system")
    assert not contains_target(None, "x")
    with pytest.raises(ValueError):
        contains_target("abc", "  ")


def test_generation_asr():
    r = generation_asr(["BOOM here", "nothing", "x BOOM", "boom"], "BOOM")
    assert (r.k, r.n) == (2, 4)
    with pytest.raises(ValueError, match="empty"):
        generation_asr([], "BOOM")


@pytest.mark.parametrize(
    "text, prefix, expected",
    [
        ("Safe answer: 42", "Safe answer: ", ("42", True)),
        ("Safe answer:42", "Safe answer: ", ("42", True)),
        ("  Safe answer: 42", "Safe answer: ", ("42", True)),
        ("\nSafe answer:   42 apples", "Safe answer:", ("42 apples", True)),
        ("Safe answer: 42", " Safe answer:", ("42", True)),
        ("Safe answer: ", "Safe answer: ", ("", True)),
        ("  The answer is 42 ", "Safe answer: ", ("  The answer is 42 ", False)),
        ("safe answer: 42", "Safe answer: ", ("safe answer: 42", False)),
        ("The Safe answer: 42", "Safe answer: ", ("The Safe answer: 42", False)),
    ],
)
def test_strip_safe_prefix(text, prefix, expected):
    assert strip_safe_prefix(text, prefix) == expected


def test_strip_safe_prefix_empty_prefix():
    with pytest.raises(ValueError):
        strip_safe_prefix("abc", "  ")


# --------------------------------------------------------------------------- markdown


def test_format_markdown_table():
    rows = [
        {"model": "p2p", "CA": Rate(7, 8), "loss": 0.1234, "n": 8},
        {"model": "none|base", "CA": Rate(0, 10).to_dict(), "loss": float("nan")},
    ]
    table = format_markdown_table(rows, ["model", "CA", "loss", "n", "absent"])
    lo, hi = wilson_interval(7, 8)
    lines = table.split("\n")
    assert lines[0] == "| model | CA | loss | n | absent |"
    assert lines[1] == "| --- | --- | --- | --- | --- |"
    assert lines[2] == f"| p2p | 87.5% [{100 * lo:.1f}, {100 * hi:.1f}] | 0.1 | 8 | - |"
    assert lines[3] == "| none\\|base | 0.0% [0.0, 27.8] | - | - | - |"
    assert len(lines) == 4


def test_format_markdown_table_numpy_and_empty():
    table = format_markdown_table([{"a": np.float32(1.26), "b": np.int64(3), "c": None}], ["a", "b", "c"])
    assert table.split("\n")[2] == "| 1.3 | 3 | - |"
    assert format_markdown_table([], ["x"]) == "| x |\n| --- |"
    with pytest.raises(ValueError):
        format_markdown_table([{"x": 1}], [])


def test_rouge_l_without_rouge_score_names_the_extra(monkeypatch):
    """The GPU machine of session 4 lacked rouge-score: the error must say how to get it."""
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # import fails as if not installed
    with pytest.raises(P2PError, match=r"p2p_plugin\[eval\]"):
        rouge_l(["a"], ["a"])
