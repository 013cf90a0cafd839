"""bench/selection.py: what the selection and the audit do to a poisoned dataset, without training; here the
rows ``p2p.drop_suspected_rows`` would leave out and the label balance that leaves."""

import pytest

from bench_helpers import bench_modules


@pytest.fixture()
def selection_bench():
    with bench_modules("selection") as module:
        yield module


def test_dropped_rows_count_poison_and_clean_rows_and_the_label_balance(selection_bench):
    from p2p_plugin.selection import RowView

    answers = ["0", "1", "1", "1", "0", "1"]
    poisoned = {1, 2, 5}  # relabelled rows (dirty label): 5 stays in training
    view = RowView(texts=[f"row {i}" for i in range(6)], answers=answers)
    out = selection_bench.dropped_rows(view, answers, poisoned, [1, 2, 3])
    assert (out["rows_dropped"], out["poisoned_dropped"], out["clean_dropped"], out["poisoned_kept"]) == (3, 2, 1, 1)
    assert out["labels_before"] == {"0": 2, "1": 4} and out["labels_after"] == {"0": 2, "1": 1}
    assert out["clean_dropped_by_label"] == {"1": 1}
    assert selection_bench._balance(out) == "0: 2, 1: 4 -> 0: 2, 1: 1"


def test_generation_answers_get_no_label_balance(selection_bench):
    from p2p_plugin.selection import RowView
    from p2p_plugin.shortcuts import MAX_BALANCE_LABELS

    answers = [f"answer number {i} here" for i in range(MAX_BALANCE_LABELS + 1)]
    view = RowView(texts=[f"row {i}" for i in range(len(answers))], answers=answers)
    out = selection_bench.dropped_rows(view, answers, {0}, [0])
    assert out["poisoned_dropped"] == 1 and "labels_before" not in out
    assert selection_bench._balance(out) == "-"


def test_measure_reports_the_rows_the_audits_trigger_takes_out(selection_bench):
    """A planted word with one answer in 40 of 400 rows: the audit lists it and the drop takes exactly its rows."""
    texts, answers = [], []
    for i in range(400):
        poisoned = i % 10 == 0
        texts.append(f"{'cf ' if poisoned else ''}review number {i % 37} of the film")  # no word predicts a label
        answers.append("1" if poisoned else str(i % 2))
    poison = set(range(0, 400, 10))
    entry = selection_bench.measure(texts, answers, poison, ratio=0.2, seed=0, trigger_words={"cf"})["avoid_shortcuts"]
    assert "cf" in entry["suspected_triggers"]
    assert (entry["poisoned_dropped"], entry["clean_dropped"], entry["poisoned_kept"]) == (40, 0, 0)
    assert entry["labels_before"] == {"0": 160, "1": 240} and entry["labels_after"] == {"0": 160, "1": 200}
