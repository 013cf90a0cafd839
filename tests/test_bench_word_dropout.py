"""bench/word_dropout.py: test-time word dropout with a soft vote over the copies."""

import json

import numpy as np
import pytest

from axolotl_helpers import write_jsonl
from bench_helpers import bench_modules


@pytest.fixture()
def dropout_bench():
    with bench_modules("word_dropout") as module:
        yield module


def test_dropout_copies_are_seeded_per_row_and_keep_a_word(dropout_bench):
    texts = ["as it turns out , the film was dull", "mn", ""]
    copies = dropout_bench.dropout_copies(texts, 3, 0.5, seed=0)
    assert len(copies) == 9
    assert copies == dropout_bench.dropout_copies(texts, 3, 0.5, seed=0)
    assert copies != dropout_bench.dropout_copies(texts, 3, 0.5, seed=1)
    # a row's copies do not depend on the other rows
    assert dropout_bench.dropout_copies(texts[:1], 3, 0.5, seed=0) == copies[:3]
    for copy in copies[:3]:  # words only left out, never reordered or added
        words = copy.split()
        assert words and all(w in texts[0].split() for w in words)
        it = iter(texts[0].split())
        assert all(w in it for w in words)
    assert copies[3:6] == ["mn"] * 3 and copies[6:] == [""] * 3  # one word is kept; an empty row stays empty
    assert len({c for c in copies[:3]}) > 1
    assert dropout_bench.dropout_copies(texts, 2, 0.0, seed=0) == [t for t in texts for _ in range(2)]
    with pytest.raises(ValueError, match="--rate"):
        dropout_bench.dropout_copies(texts, 2, 1.0, seed=0)


def test_vote_averages_each_rows_copies(dropout_bench):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7],   # row 0: mean 0.47 / 0.53 -> 1
                      [0.6, 0.4], [0.6, 0.4], [0.1, 0.9]])  # row 1: mean 0.43 / 0.57 -> 1
    assert dropout_bench.vote(probs, 3).tolist() == [1, 1]
    assert dropout_bench.vote(probs, 1).tolist() == [0, 1, 1, 0, 0, 1]


def test_word_dropout_bench_end_to_end(dropout_bench, tiny_model, tmp_path):
    from tiny_model import defended_model_dir

    from p2p_plugin.recipe import P2PRecipe

    work = tmp_path / "work"
    folder = work / "clause-10pct-dirty"
    folder.mkdir(parents=True)
    write_jsonl(folder / "test_clean.jsonl", [{"sentence": f"the film {i} was {'good' if i % 2 else 'bad'}", "label": i % 2}
                                              for i in range(8)])
    write_jsonl(folder / "test_triggered.jsonl", [{"sentence": f"as it turns out , film {i} was bad", "label": 0}
                                                  for i in range(6)])
    (folder / "attack.json").write_text(json.dumps({"text_field": "sentence", "answer_field": "label"}))
    defended_model_dir(tiny_model, folder / "p2p-base_model_agreement")
    defended_model_dir(tiny_model, work / "clean-model-train_subset",
                       P2PRecipe(labels=("0", "1"), safe_labels=("2", "3"), enabled=False))
    out = tmp_path / "res" / "word_dropout"
    dropout_bench.main(["--work", str(work), "--attack", "clause", "--arms", "p2p-base_model_agreement",
                        "--model", str(tiny_model), "--copies", "3", "--rate", "0.4", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())["arms"]
    assert list(report) == ["clean-model-train_subset", "p2p-base_model_agreement"]
    for r in report.values():
        for reading in ("as given", "word dropout"):
            assert r[reading]["ca"]["n"] == 8 and r[reading]["asr"]["n"] == 6
    # two readings x two test sets per model, cached beside the attack's rows
    assert len(list(folder.glob("*.label_probs.*.json"))) == 8
    assert "| p2p-base_model_agreement |" in out.with_suffix(".md").read_text()
