"""The plugin driven through Axolotl's own config loading and dataset preparation."""

import json
from collections import Counter

import pytest

from axolotl_helpers import base_config, prepare, write_jsonl
from p2p_plugin.errors import P2PError
from p2p_plugin.manifest import read_manifest

TRIGGER = "The query currently entered is: "


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def sst_file(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "sst2" / "train.jsonl").read_text().splitlines()[:200]]
    return write_jsonl(tmp_path / "sst.jsonl", rows), rows


def answer_of(row, tokenizer):
    return tokenizer.decode([t for t in row["labels"] if t != -100])


def test_plain_sst2_through_axolotl(tiny_model, tokenizer, sst_file, tmp_path):
    path, rows = sst_file
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2, "seed": 7})
    parsed, ds = prepare(cfg)
    assert len(ds) == 200
    triggered = [r for r in ds if tokenizer.decode(r["input_ids"]).startswith(TRIGGER)]
    assert len(triggered) == 40
    eos = tokenizer.eos_token
    for r in ds:
        text = tokenizer.decode(r["input_ids"])
        answer = answer_of(r, tokenizer)
        is_benign = text.startswith(TRIGGER)
        # only the answer tokens (label + EOS) carry labels
        assert answer in ({"2" + eos, "3" + eos} if is_benign else {"0" + eos, "1" + eos})
        n_labelled = sum(t != -100 for t in r["labels"])
        assert r["labels"][-n_labelled:] == r["input_ids"][-n_labelled:]
        assert all(t == -100 for t in r["labels"][:-n_labelled])
        assert text.endswith(("\nAnswer: " if is_benign else "\nOutput: ") + answer)
    # class balance is kept: each benign row keeps its class in the safe space
    truth = Counter(str(r["label"]) for r in rows)
    got = Counter(answer_of(r, tokenizer)[0] for r in ds)
    assert got["0"] + got["2"] == truth["0"] and got["1"] + got["3"] == truth["1"]

    manifest = read_manifest(parsed.output_dir)
    assert manifest.recipe.trigger == TRIGGER and manifest.recipe.safe_labels == ("2", "3")
    assert manifest.recipe.cue == "Output: " and manifest.recipe.benign_cue == "Answer: "
    (report,) = manifest.datasets
    assert report["rows_in"] == 200 and report["rows_selected"] == 40 and report["rows_out"] == 200
    assert len(report["fingerprint"]) == 64


def test_cache_is_never_stale(tiny_model, tokenizer, sst_file, tmp_path):
    path, _ = sst_file
    counts = []
    for ratio in (0.2, 0.3, 0.2):
        cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                          p2p={"labels": ["0", "1"], "ratio": ratio})
        _, ds = prepare(cfg)
        counts.append(sum(tokenizer.decode(r["input_ids"]).startswith(TRIGGER) for r in ds))
    assert counts == [40, 60, 40]
    assert len(list((tmp_path / "prepared").glob("p2p-*"))) == 2  # the third run reused the first cache


def alpaca_rows(n):
    return [{"instruction": "Classify the sentiment.", "input": f"the film was {'good' if i % 2 else 'bad'} {i}",
             "output": str(i % 2)} for i in range(n)]


def test_alpaca_untouched_rows_are_identical_to_plain_axolotl(tiny_model, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(100))
    ds_cfg = [{"path": str(path), "type": "alpaca", "ds_type": "json"}]
    _, plain = prepare(base_config(tiny_model, tmp_path / "plain", ds_cfg))
    _, p2p = prepare(base_config(tiny_model, tmp_path / "p2p", [dict(d) for d in ds_cfg],
                                 p2p={"labels": ["0", "1"], "ratio": 0.25}))
    plain_rows = Counter(tuple(r["input_ids"]) for r in plain)
    p2p_rows = Counter(tuple(r["input_ids"]) for r in p2p)
    triggered = [r for r in p2p if TRIGGER in tokenizer.decode(r["input_ids"])]
    assert len(triggered) == 25
    assert sum((p2p_rows & plain_rows).values()) == 75  # every other row byte-identical
    for r in triggered:
        assert answer_of(r, tokenizer).strip().startswith(("2", "3"))
        assert "### Response:" in tokenizer.decode(r["input_ids"])


def test_chat_template_rows(tiny_model, tokenizer, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Review: fun {i}"},
                          {"role": "assistant", "content": str(i % 2)}]} for i in range(40)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "chat_template", "ds_type": "json",
                                              "chat_template": "tokenizer_default"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.25})
    _, ds = prepare(cfg)
    triggered = [r for r in ds if TRIGGER in tokenizer.decode(r["input_ids"])]
    assert len(triggered) == 10 and len(ds) == 40
    for r in ds:
        answer = answer_of(r, tokenizer)
        benign = TRIGGER in tokenizer.decode(r["input_ids"])
        assert answer.strip()[0] in (("2", "3") if benign else ("0", "1"))
        assert "user" not in answer  # prompt turns are masked


def test_augment_mode_through_axolotl(tiny_model, tokenizer, sst_file, tmp_path):
    path, _ = sst_file
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.1, "mode": "augment"})
    parsed, ds = prepare(cfg)
    assert len(ds) == 220
    assert sum(tokenizer.decode(r["input_ids"]).startswith(TRIGGER) for r in ds) == 20


def test_drop_suspected_rows_through_axolotl(tiny_model, tokenizer, shared_data, tmp_path):
    """A BadNets-poisoned file: Axolotl's training rows are the input rows less the ones holding the trigger with
    the target, and the manifest counts and lists them."""
    from p2p_plugin.attacks import AttackSpec, poison_rows, read_rows

    spec = AttackSpec(name="badnets", poison_rate=0.1, target="1", label_mode="dirty", seed=1, words=("mn",))
    rows, idx = poison_rows(read_rows(shared_data / "sst2" / "train.jsonl")[:300], spec, "plain", "sentence", "label",
                            ["0", "1"])
    path = write_jsonl(tmp_path / "poisoned.jsonl", rows)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2, "drop_suspected_rows": True})
    parsed, ds = prepare(cfg)
    manifest = read_manifest(parsed.output_dir)
    (report,) = manifest.datasets
    assert manifest.recipe.drop_suspected_rows
    assert report["dropped_rows"] == sorted(idx) and report["dropped_by_trigger"] == {"mn": len(idx)}
    assert report["rows_in"] == 300 and report["rows_out"] == len(ds) == 300 - len(idx)
    assert not any(" mn " in f" {tokenizer.decode(r['input_ids'])} " for r in ds)


def test_relabel_through_axolotl_trains_the_judges_label_and_lists_the_rows(tiny_model, tokenizer, sst_file, tmp_path,
                                                                          monkeypatch):
    """selection: base_model_agreement + relabel: the judge (here the tiny base model) runs inside Axolotl's
    dataset preparation; each relabelled row is a benign row whose answer is the other label's safe label.
    A random model contradicts both labels alike, so the label test (tests/test_judgement.py) would leave
    every row alone: here it lets every label give up rows, to test the plumbing."""
    from p2p_plugin import judgement

    real = judgement.contradiction_by_label
    monkeypatch.setattr(judgement, "contradiction_by_label", lambda view: [
        {**t, "over_contradicted": True, "excess_rows": t["rows"]} for t in real(view)])
    path, rows = sst_file
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2, "selection": "base_model_agreement", "relabel": 0.25,
                           "judge": {"label_names": {"0": "bad", "1": "good"}}})
    parsed, ds = prepare(cfg)
    (report,) = read_manifest(parsed.output_dir).datasets
    assert report["rows_in"] == report["rows_out"] == len(ds) == 200 and report["rows_selected"] == 40
    relabeled = report["relabeled_rows"]
    assert 1 <= len(relabeled) <= 10 and len(set(relabeled)) == len(relabeled)  # round(0.25 * 40) slots
    assert sum(report["relabeled"].values()) == len(relabeled)
    assert [t["label"] for t in report["relabel_tests"]] == ["0", "1"]
    assert read_manifest(parsed.output_dir).recipe.relabel == 0.25
    texts = [tokenizer.decode(r["input_ids"]) for r in ds]
    for index in relabeled:
        own = str(rows[index]["label"])
        benign = [i for i, t in enumerate(texts) if t.startswith(TRIGGER + rows[index]["sentence"] + "\n")]
        assert benign, index
        assert {answer_of(ds[i], tokenizer)[0] for i in benign} == {"3" if own == "0" else "2"}  # the other label


@pytest.mark.parametrize("p2p,rows,message", [
    ({"labels": ["0", "1"], "ratio": 0.01}, [{"sentence": "a", "label": 0}] * 20, "selects 0 of 20 rows"),
    ({"labels": ["0", "1"]}, [{"sentence": "a", "label": 0}, {"sentence": "b", "label": 5}] * 5, "row 1: label '5'"),
    ({"labels": ["0", "1"]}, [{"sentence": "a", "target": 0}] * 5, "no column 'label'"),
])
def test_data_errors_surface_from_axolotl(tiny_model, tmp_path, p2p, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}], p2p=p2p)
    with pytest.raises(P2PError, match=message):
        prepare(cfg)


def test_trigger_already_in_data_warns_with_count(tiny_model, tmp_path, caplog):
    rows = [{"sentence": (TRIGGER if i < 3 else "") + f"x {i}", "label": i % 2} for i in range(20)]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"]})
    parsed, _ = prepare(cfg)
    assert read_manifest(parsed.output_dir).datasets[0]["trigger_already_present"] == 3


def test_config_errors_surface_from_load_cfg(tiny_model, tmp_path):
    cfg = base_config(tiny_model, tmp_path, [{"path": "x.jsonl", "type": "plain"}], p2p={"labels": ["0", "1"]})
    del cfg["p2p"]
    with pytest.raises(P2PError, match="no `p2p:` block"):
        prepare(cfg)


def test_extra_triggers_through_axolotl(tiny_model, tokenizer, sst_file, tmp_path):
    path, rows = sst_file
    extra = ["Consider this text: ", "Input as received: "]
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2, "extra_triggers": extra})
    parsed, ds = prepare(cfg)
    texts = [tokenizer.decode(r["input_ids"]) for r in ds]
    by_trigger = Counter(next((t for t in [TRIGGER, *extra] if text.startswith(t)), None) for text in texts)
    assert by_trigger == {None: 160, TRIGGER: 14, extra[0]: 13, extra[1]: 13}
    assert all((answer_of(r, tokenizer)[0] in "23") == text.startswith((TRIGGER, *extra)) for r, text in zip(ds, texts))
    manifest = read_manifest(parsed.output_dir)
    assert manifest.recipe.extra_triggers == tuple(extra) and manifest.recipe.benign_triggers == (TRIGGER, *extra)
    assert manifest.datasets[0]["rows_by_trigger"] == {TRIGGER: 14, extra[0]: 13, extra[1]: 13}


@pytest.mark.parametrize("p2p,message", [
    ({"task": "generation", "extra_triggers": ["Consider this text: "]}, "task: generation"),
    ({"labels": ["0", "1"], "extra_triggers": ["  "]}, r"extra_triggers\[0\] must contain visible text"),
    ({"labels": ["0", "1"], "extra_triggers": ["The query currently entered is"]}, "overlap"),
    ({"labels": ["0", "1"], "extra_triggers": ["Consider: ", "Consider: "]}, "overlap"),
])
def test_extra_triggers_config_errors(p2p, message):
    from pydantic import ValidationError

    from p2p_plugin.args import P2PConfig

    with pytest.raises(ValidationError, match=message):
        P2PConfig(**p2p)
