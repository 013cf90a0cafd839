"""bench/probe_judge.py: zero-shot judge vs linear probes on its hidden states, read with the poison's positions."""

import json

import numpy as np
import pytest
import torch

from bench_helpers import bench_modules, write_clause_attack_folder


@pytest.fixture()
def probe_bench():
    with bench_modules("probe_judge") as module:
        yield module


def test_features_come_back_in_row_order(probe_bench, tiny_model):
    """label_log_probs batches by prompt length; each row's feature must still be its own last hidden state."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from p2p_plugin.judgement import JudgeSettings, judge_inputs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    texts = ["a much longer sentence about the film and its actors", "short", "a medium one here", "x"]
    settings = JudgeSettings(labels=("0", "1"), label_names=("bad", "good"), batch_size=1)  # no padding: exact
    log_probs, features = probe_bench.judge_with_features(model, tokenizer, texts, settings)
    assert log_probs.shape == (4, 2) and features.shape[0] == 4
    for i, prompt in enumerate(judge_inputs(tokenizer, texts, settings)):
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            states = model(**enc, output_hidden_states=True).hidden_states
        assert np.allclose(features[i], np.stack([h[0, -1].numpy() for h in states]), atol=1e-5)


def test_probe_scores_each_row_without_it_and_learns_a_separable_label(probe_bench):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    features = rng.normal(size=(120, 5))
    features[:, 0] += 4 * labels  # one feature says the label
    log_probs = probe_bench.out_of_fold_log_probs(features, labels, 2, folds=5, l2=1.0)
    assert log_probs.shape == (120, 2) and np.allclose(np.exp(log_probs).sum(1), 1)
    assert (log_probs.argmax(1) == labels).mean() > 0.95
    # labels that no feature explains, more features than rows: a probe that saw a row fits its label, one that
    # did not is at chance
    noise = rng.normal(size=(60, 200))
    coin = rng.integers(0, 2, size=60)
    assert (probe_bench.out_of_fold_log_probs(noise, coin, 2, folds=5, l2=1.0).argmax(1) == coin).mean() < 0.75
    weights, bias, mean, scale = probe_bench.fit_logistic(noise, coin, 2, l2=1.0)
    assert (((noise - mean) / scale @ weights + bias).argmax(1) == coin).mean() == 1.0  # in sample: memorized
    with pytest.raises(SystemExit, match="at least that many rows"):
        probe_bench.out_of_fold_log_probs(features[:63], labels[:63], 2, folds=5, l2=1.0)  # label 1: 3 rows


def test_probe_bench_reads_every_reader_and_reuses_the_features(probe_bench, tiny_model, tmp_path):
    work = tmp_path / "work"
    write_clause_attack_folder(work)
    argv = ["--work", str(work), "--attacks", "clause", "--model", str(tiny_model), "--out", str(tmp_path / "res" / "p"),
            "--layers", "0.5", "1.0", "--l2", "10"]
    probe_bench.main(argv)
    report = json.loads((tmp_path / "res" / "p.json").read_text())["attacks"]["clause"]
    assert report["rows"] == 80 and report["poisoned"] == 8 and not report["features_cached"]
    last = report["hidden_states"] - 1
    mid = probe_bench.layer_index(0.5, report["hidden_states"])
    assert list(report["readings"]) == ["zero-shot"] + [f"probe on {w}, layer {layer}, l2 10" for layer in (mid, last)
                                                        for w in ("data labels", "judge labels")]
    for got in report["readings"].values():
        assert 0 <= got["agreement_with_labels"] <= 1
        most = got["poisoned_among_most_contradicted"]  # 80 rows: k >= 80 counts all 8 poisoned rows
        assert most["100"] == most["200"] == 8 and most["20"] <= most["50"] <= 8
        target = got["target_label_most_contradicted"]  # 8 poisoned + 32 clean label-1 rows
        assert target["50"] == target["100"] == 8 and target["25"] <= 8
    probe_bench.main(argv)
    again = json.loads((tmp_path / "res" / "p.json").read_text())["attacks"]["clause"]
    assert again["features_cached"] and again["readings"] == report["readings"]
    md = (tmp_path / "res" / "p.md").read_text()
    assert f"| clause (8 of 80 poisoned) | probe on judge labels, layer {last}, l2 10 |" in md
    with pytest.raises(SystemExit, match="attack.json not found"):
        probe_bench.main(argv[:2] + ["--attacks", "ctba"] + argv[4:])
