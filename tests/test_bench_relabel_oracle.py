"""bench/relabel_oracle.py: relabel only the chosen rows that are poisoned (or only the clean ones)."""

import json

import numpy as np
import pytest

from bench_helpers import bench_modules
from p2p_plugin import judgement
from p2p_plugin.args import P2PConfig
from p2p_plugin.errors import P2PError
from p2p_plugin.judgement import JudgeSettings, relabel_contradicted
from p2p_plugin.selection import RowView, select_rows
from p2p_plugin.transform import benign_rows

POISONED = list(range(50, 60))


class ScoredJudge:
    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=float)
        self.settings = JudgeSettings(labels=("0", "1"), label_names=("bad", "good"))

    def agreement(self, texts, answers):
        return self.scores


def _view():
    """Label-1 rows 50-59 are poisoned (the judge contradicts them), 60-64 are clean rows it misreads as
    strongly: relabel's picks hold both kinds."""
    rng = np.random.default_rng(0)
    scores = rng.normal(loc=3.0, size=100)
    scores[50:65] = -5.0 - rng.random(15)
    view = RowView(texts=[f"row {i}" for i in range(100)], answers=["0"] * 50 + ["1"] * 50)
    view.judge = ScoredJudge(scores)
    return view


@pytest.fixture()
def oracle():
    with bench_modules("relabel_oracle") as module:
        yield module


def test_the_oracle_keeps_only_the_poisoned_or_only_the_clean_rows_of_relabels_picks(oracle):
    view = _view()
    plain = select_rows(100, 0.2, 0, "base_model_agreement", rows=view)
    control, picked = relabel_contradicted(view, plain, 0.9)
    assert set(picked) == set(range(50, 65))  # the control relabels both kinds
    for keep, expected in (("poisoned", set(POISONED)), ("clean", set(range(60, 65)))):
        chosen, relabels = oracle.oracle_relabel(keep, POISONED)(view, plain, 0.9)
        assert set(relabels) == expected and set(relabels.values()) == {"0"}
        assert len(chosen) == len(plain) == 20  # the subset keeps its size: a kept row displaces one benign row
        assert set(relabels) <= set(chosen) and not set(picked) - set(relabels) & set(chosen)
    with pytest.raises(P2PError, match="keep must be one of"):
        oracle.oracle_relabel("all", POISONED)


def test_the_plugin_patches_the_step_the_transform_calls(oracle, monkeypatch):
    monkeypatch.setattr(judgement, "relabel_contradicted", judgement.relabel_contradicted)  # restored afterwards
    monkeypatch.delenv(oracle.ENV, raising=False)
    with pytest.raises(P2PError, match=oracle.ENV):
        oracle.RelabelOraclePlugin()
    monkeypatch.setenv(oracle.ENV, json.dumps({"keep": "poisoned", "poisoned_indices": POISONED}))
    oracle.RelabelOraclePlugin()
    recipe = P2PConfig(labels=["0", "1"], selection="base_model_agreement", relabel=0.9, seed=0,
                       judge={"label_names": {"0": "bad", "1": "good"}}).recipe()
    _, relabels = benign_rows(100, recipe, _view())  # what the plugin's transform runs
    assert set(relabels) == set(POISONED)


def test_keep_flag_is_checked_before_any_arm_trains(oracle):
    assert oracle.split_keep_flag(["--lr", "1e-3"]) == (oracle.KEEPS, ["--lr", "1e-3"])
    assert oracle.split_keep_flag(["--keep", "poisoned,clean", "--lr", "1e-3"]) == (("poisoned", "clean"), ["--lr", "1e-3"])
    with pytest.raises(SystemExit, match="unknown"):
        oracle.split_keep_flag(["--keep", "poisond"])
    with pytest.raises(SystemExit, match="needs a value"):
        oracle.split_keep_flag(["--keep"])
