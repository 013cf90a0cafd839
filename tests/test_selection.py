import numpy as np
import pytest

from p2p_plugin.selection import (
    SelectionError, SelectionStrategy, dataset_seed, get_selection_strategy, num_to_select,
    register_selection_strategy, select_rows, selection_strategy_names,
)


def test_random_selection_size_sorted_unique_and_seeded():
    a = select_rows(1000, 0.2, seed=42, dataset_key="d")
    b = select_rows(1000, 0.2, seed=42, dataset_key="d")
    assert len(a) == 200 and np.array_equal(a, b)
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
    assert not np.array_equal(a, select_rows(1000, 0.2, seed=43, dataset_key="d"))
    assert not np.array_equal(a, select_rows(1000, 0.2, seed=42, dataset_key="other"))


def test_selection_is_not_contiguous():
    chosen = select_rows(1000, 0.2, seed=0)
    assert chosen.max() - chosen.min() > 500  # spread over the data, not a block


def test_seed_mixing_is_stable_across_processes():
    """Python's hash() randomization must not leak in: another interpreter with another
    PYTHONHASHSEED derives the same per-dataset seed and the same rows."""
    import os
    import subprocess
    import sys

    code = ("from p2p_plugin.selection import dataset_seed, select_rows; "
            "print(dataset_seed(42, 'data.jsonl'), select_rows(100, 0.2, 42, dataset_key='data.jsonl').tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    here = f"{dataset_seed(42, 'data.jsonl')} {select_rows(100, 0.2, 42, dataset_key='data.jsonl').tolist()}"
    assert outs == {here}


def test_rounding_and_zero_rows_error():
    assert num_to_select(10, 0.25) == 2  # round half to even: 2.5 -> 2
    assert num_to_select(7, 0.2) == 1
    with pytest.raises(SelectionError, match="selects 0 of 2 rows"):
        num_to_select(2, 0.1)


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(SelectionError, match="known: .*random"):
        get_selection_strategy("nope")


def test_custom_strategy_is_validated():
    @register_selection_strategy
    class FirstRows(SelectionStrategy):
        name = "test-first-rows"

        def select(self, num_rows, num_selected, rng, rows=None):
            return np.arange(num_selected)

    @register_selection_strategy
    class Broken(SelectionStrategy):
        name = "test-broken"

        def select(self, num_rows, num_selected, rng, rows=None):
            return np.zeros(num_selected, dtype=np.int64)

    assert "test-first-rows" in selection_strategy_names()
    assert select_rows(10, 0.3, 0, "test-first-rows").tolist() == [0, 1, 2]
    with pytest.raises(SelectionError, match="invalid subset"):
        select_rows(10, 0.3, 0, "test-broken")
