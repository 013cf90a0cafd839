"""bench/ensemble.py: seed ensembles of P2P arms (soft vote, overlap of the rows each seed fails on)."""

import json

import numpy as np
import pytest

from axolotl_helpers import write_jsonl
from bench_helpers import bench_modules


@pytest.fixture()
def ensemble_bench():
    with bench_modules("ensemble") as module:
        yield module


def test_soft_vote_averages_probabilities_not_votes(ensemble_bench):
    # row 0: two members lean weakly to label 0, one is sure of label 1 -> the mean picks 1 (a majority vote would pick 0)
    a = np.array([[0.55, 0.45], [0.9, 0.1]])
    b = np.array([[0.55, 0.45], [0.8, 0.2]])
    c = np.array([[0.01, 0.99], [0.2, 0.8]])
    assert ensemble_bench.soft_vote([a, b, c]).tolist() == [1, 0]
    assert ensemble_bench.soft_vote([a]).tolist() == [0, 0]


def test_target_hits_counts_members_per_non_target_row(ensemble_bench):
    project = {"0": "0", "1": "1", "2": "0", "3": "1"}.get
    truths = ["0", "1", "0", "0"]  # row 1 is a target row: excluded, as attack_success_rate does
    first = ["3", "1", "2", "3"]   # hits rows 0 and 3 (safe label 3 projects to the target 1)
    second = ["1", "1", "3", "2"]  # hits rows 0 and 2
    hits = ensemble_bench.target_hits([first, second], truths, "1", project)
    assert hits.tolist() == [2, 1, 1]
    assert ensemble_bench.jaccard({0, 3}, {0, 2}) == pytest.approx(1 / 3)
    assert ensemble_bench.jaccard(set(), set()) is None


def test_label_probabilities_load_a_model_once_for_consecutive_row_sets(ensemble_bench, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from p2p_plugin.inference import P2PModel

    loads = []

    class Fake:
        defended = True

        def classify(self, texts, benign, progress):
            return [SimpleNamespace(scores={"0": 0.0, "1": float(len(t))}) for t in texts]

    monkeypatch.setattr(P2PModel, "load", staticmethod(lambda folder, **kw: loads.append(folder.name) or Fake()))
    monkeypatch.setattr(ensemble_bench, "_LAST_LOADED", {})
    first, second = tmp_path / "a", tmp_path / "b"
    for texts in (["x"], ["yy", "z"]):  # two row sets on one model: one load, each set's own probabilities
        labels, probs = ensemble_bench.label_probabilities(first, texts, tmp_path / "base", tmp_path)
        assert labels == ["0", "1"] and probs.shape == (len(texts), 2)
    ensemble_bench.label_probabilities(second, ["x"], tmp_path / "base", tmp_path)
    ensemble_bench.label_probabilities(first, ["w"], tmp_path / "base", tmp_path)  # another model came between
    assert loads == ["a", "b", "a"]
    assert ensemble_bench.label_probabilities(first, ["x"], tmp_path / "base", tmp_path)[1].shape == (1, 2)
    assert loads == ["a", "b", "a"]  # the file cache answers without a model


def test_ensemble_bench_end_to_end_on_copies_of_one_model(ensemble_bench, tiny_model, tmp_path):
    from tiny_model import defended_model_dir

    work = tmp_path / "work"
    folder = work / "clause-10pct-dirty"
    folder.mkdir(parents=True)
    clean = [{"sentence": f"the film {i} was {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(12)]
    triggered = [{"sentence": f"as it turns out , the film {i} was bad", "label": i % 2} for i in range(10)]
    write_jsonl(folder / "test_clean.jsonl", clean)
    write_jsonl(folder / "test_triggered.jsonl", triggered)
    (folder / "attack.json").write_text(json.dumps({"text_field": "sentence", "answer_field": "label"}))
    for name in ("p2p-avoid_shortcuts", "p2p-avoid_shortcuts-seed2"):  # seeds 0 and 2; seed 1 missing
        defended_model_dir(tiny_model, folder / name)
    defended_model_dir(tiny_model, folder / "p2p-base_model_agreement")  # one member only: skipped
    from p2p_plugin.recipe import P2PRecipe

    defended_model_dir(tiny_model, work / "clean-model-train_subset",
                       P2PRecipe(labels=("0", "1"), safe_labels=("2", "3"), enabled=False))  # the floor's model
    out = tmp_path / "res" / "ensemble"
    argv = ["--work", str(work), "--attacks", "clause", "--model", str(tiny_model), "--out", str(out)]
    ensemble_bench.main(argv)
    report = json.loads(out.with_suffix(".json").read_text())["attacks"]["clause"]
    assert report["p2p-base_model_agreement"] is None
    r = report["p2p-avoid_shortcuts"]
    assert set(r["seeds"]) == {"0", "2"} and set(r["ensembles"]) == {"0+2"}
    single = r["seeds"]["0"]
    assert single["asr"]["n"] == 5 and single["ca"]["n"] == 12  # the 5 non-target triggered rows, every clean row
    # identical members: the vote is each member, and every row is hit by none or by both
    assert r["ensembles"]["0+2"]["asr"] == single["asr"] == r["seeds"]["2"]["asr"]
    assert r["ensembles"]["0+2"]["ca"] == single["ca"]
    hist = r["rows_by_members_hitting_target"]
    assert sum(hist.values()) == 5 and hist["1"] == 0 and hist["2"] == single["asr"]["k"]
    in_floor = r["floor_rows_by_members_hitting_target"]
    assert sum(in_floor.values()) == r["floor_rows"] <= 5 and all(in_floor[k] <= hist[k] for k in hist)
    caches = sorted(p.name for p in folder.glob("*.label_probs.*.json"))
    assert len(caches) == 5  # clean + triggered per member, triggered for the clean model (all in the attack folder)
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.label_probs.*.json")}
    ensemble_bench.main(argv)  # second run: read from the caches, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads(out.with_suffix(".json").read_text())["attacks"]["clause"]["p2p-avoid_shortcuts"] == r
    assert "| clause | p2p-avoid_shortcuts |" in out.with_suffix(".md").read_text()
    assert "matches_defense_result" not in single  # no bench/defense.py result beside the member
    # a bench/defense.py result of a member (its own ASR reading) is found by defense.arm_result_path and compared
    reading = {"readings": {"p2p": {"asr": {"projected": {"k": single["asr"]["k"]}}}}}
    (folder / "p2p-avoid_shortcuts.result.json").write_text(json.dumps(reading))
    (folder / "p2p-avoid_shortcuts-seed2.result.json").write_text(
        json.dumps({"readings": {"p2p": {"asr": {"projected": {"k": single["asr"]["k"] + 1}}}}}))
    ensemble_bench.main(argv)
    seeds = json.loads(out.with_suffix(".json").read_text())["attacks"]["clause"]["p2p-avoid_shortcuts"]["seeds"]
    assert seeds["0"]["matches_defense_result"] is True and seeds["2"]["matches_defense_result"] is False
    # --eval-split heldout reads the rows a `defense.py --eval-split heldout` run wrote under <attack>/heldout/
    (folder / "heldout").mkdir()
    write_jsonl(folder / "heldout" / "test_clean.jsonl", clean[:6])
    write_jsonl(folder / "heldout" / "test_triggered.jsonl", triggered[:4])
    ensemble_bench.main(argv[:-1] + [str(tmp_path / "res" / "heldout"), "--eval-split", "heldout"])
    held = json.loads((tmp_path / "res" / "heldout.json").read_text())["attacks"]["clause"]["p2p-avoid_shortcuts"]
    assert held["seeds"]["0"]["ca"]["n"] == 6 and held["seeds"]["0"]["asr"]["n"] == 2
    assert "matches_defense_result" not in held["seeds"]["0"]  # the dev result is not the held-out reading
