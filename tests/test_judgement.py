"""selection: base_model_agreement: the base model's zero-shot judgement of each row's label."""

import importlib.util
import json

import numpy as np
import pytest

from p2p_plugin.args import P2PConfig
from p2p_plugin.formats import PlainFormat
from p2p_plugin.judgement import (
    RELABEL_MIN_GAP, BaseModelJudge, JudgeError, JudgeSettings, agreement, judge_from_recipe, label_log_probs, label_quotas,
    name_token_ids,
)
from p2p_plugin.selection import RowView, SelectionError, select_rows
from p2p_plugin.transform import apply_p2p

FMT = PlainFormat("sentence", "label", "Output: ", "Answer: ")


class ScriptedJudge:
    """A judge whose agreement per row is given (the selection logic without a model)."""

    def __init__(self, scores, labels=("0", "1")):
        self.scores = np.asarray(scores, dtype=float)
        self.settings = JudgeSettings(labels=tuple(labels), label_names=("bad", "good"))
        self.seconds, self.calls = 0.5, 0

    def agreement(self, texts, answers):
        self.calls += 1
        assert len(texts) == len(answers) == len(self.scores)
        return self.scores


def test_agreement_is_calibrated_per_label_and_signed():
    # the model prefers label 1 everywhere (a prior); calibration removes it, so the row that leans
    # least to 1 reads as agreeing with 0
    probs = np.array([[0.30, 0.70], [0.10, 0.90], [0.20, 0.80]])
    got = agreement(np.log(probs), np.array([0, 1, 1]))
    assert got[0] > 0  # 0.30 is above label 0's median (0.20): the judge agrees
    assert got[1] > 0 and got[2] == pytest.approx(0.0)  # median row: no lean either way
    assert agreement(np.log(probs), np.array([1, 0, -1]))[2] == -np.inf  # unknown label: never chosen
    assert np.allclose(agreement(np.log(probs), np.array([0, 1, 1])), -agreement(np.log(probs), np.array([1, 0, 0])))


def test_label_quotas_follow_the_label_shares():
    assert label_quotas(np.array([600, 400]), 200).tolist() == [120, 80]
    assert label_quotas(np.array([5, 5, 5]), 4).sum() == 4
    assert label_quotas(np.array([1, 99]), 50).tolist() == [1, 49]  # never more than a label holds


def test_selection_takes_the_most_agreeing_rows_of_each_label():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 50)
    scores = rng.normal(size=100)
    poisoned = np.arange(50, 60)  # label 1 rows the judge contradicts
    scores[poisoned] = -5.0
    texts = [f"row {i}" for i in range(100)]
    view = RowView(texts=texts, answers=[str(x) for x in labels])
    view.judge = judge = ScriptedJudge(scores)
    chosen = select_rows(100, 0.2, 0, "base_model_agreement", rows=view)
    assert judge.calls == 1 and len(chosen) == 20
    assert view.cache["judged_labels"].tolist() == labels.tolist()
    assert not set(chosen.tolist()) & set(poisoned.tolist())
    assert (labels[chosen] == 0).sum() == 10  # class balance of the data is kept
    for k in (0, 1):
        mine = chosen[labels[chosen] == k]
        rest = np.setdiff1d(np.flatnonzero(labels == k), mine)
        assert scores[mine].min() >= scores[rest].max()  # the top of each label
    again = RowView(texts=texts, answers=[str(x) for x in labels])
    again.judge = ScriptedJudge(scores)
    assert np.array_equal(chosen, select_rows(100, 0.2, 0, "base_model_agreement", rows=again))


def test_selection_sets_the_audits_suspicious_rows_aside_first():
    """A trigger word the audit flags keeps its rows out even where the judge agrees with them most
    (clean-label poison: the label is true, only the audit can see it)."""
    texts, answers = [], []
    for i in range(400):
        label = i % 2
        texts.append(("zq " if label == 1 and i < 120 else "") + f"sentence number {i} " + ("fine" if label else "poor"))
        answers.append(str(label))
    scores = np.zeros(400)
    scores[[i for i in range(120) if i % 2 == 1]] = 10.0  # the judge loves the trigger rows
    view = RowView(texts=texts, answers=answers)
    view.judge = ScriptedJudge(scores)
    chosen = select_rows(400, 0.2, 0, "base_model_agreement", rows=view)
    assert not any(texts[i].startswith("zq ") for i in chosen)


def test_selection_without_a_judge_says_what_is_missing():
    view = RowView(texts=["a", "b", "c", "d", "e"], answers=["0", "1", "0", "1", "0"])
    with pytest.raises(SelectionError, match="needs the base model's judgement"):
        select_rows(5, 0.4, 0, "base_model_agreement", rows=view)


class CharTokenizer:
    """Each character a token: 'good' and 'great' share their first token."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def convert_ids_to_tokens(self, token):
        return chr(token)

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_names_that_share_a_first_token_are_refused():
    settings = JudgeSettings(labels=("0", "1"), label_names=("good", "great"))
    with pytest.raises(JudgeError, match=r"'great' \(label '1'\).*label '0'.*same token 'g'"):
        name_token_ids(CharTokenizer(), settings)
    ids = name_token_ids(CharTokenizer(), JudgeSettings(labels=("0", "1"), label_names=("bad", "good")))
    assert ids == [[ord("b"), ord("B")], [ord("g"), ord("G")]]  # the bare space of " bad" / " good" is skipped
    with pytest.raises(JudgeError, match="one name per label"):
        JudgeSettings(labels=("0", "1"), label_names=("bad",))
    with pytest.raises(JudgeError, match=r"\{text\}"):
        JudgeSettings(labels=("0", "1"), label_names=("bad", "good"), prompt="Is it {choices}?")


def test_config_needs_words_the_model_can_read():
    with pytest.raises(ValueError, match="p2p.judge.label_names: the base model cannot judge labels named"):
        P2PConfig(labels=["0", "1"], selection="base_model_agreement")
    with pytest.raises(ValueError, match=r"missing \['1'\]"):
        P2PConfig(labels=["0", "1"], selection="base_model_agreement", judge={"label_names": {"0": "bad"}})
    with pytest.raises(ValueError, match="used by selection: base_model_agreement only"):
        P2PConfig(labels=["0", "1"], judge={"label_names": {"0": "bad", "1": "good"}})
    with pytest.raises(ValueError, match="task: generation"):
        P2PConfig(task="generation", selection="base_model_agreement")
    named = P2PConfig(labels=["neg", "pos"], safe_labels=["neg2", "pos2"], selection="base_model_agreement")
    assert named.recipe().judge["label_names"] == {"neg": "neg", "pos": "pos"}  # named labels: read as they are
    recipe = P2PConfig(labels=["0", "1"], selection="base_model_agreement", decoys=0.5,
                       judge={"label_names": {"0": "bad", "1": "good"}, "prompt": "Review: {text}"}).recipe()
    judge = judge_from_recipe(recipe, "model-path")
    assert judge.settings.label_names == ("bad", "good") and judge.settings.prompt == "Review: {text}"
    assert judge_from_recipe(P2PConfig(labels=["0", "1"]).recipe(), "model-path") is None
    small = P2PConfig(labels=["0", "1"], selection="base_model_agreement",
                      judge={"label_names": {"0": "bad", "1": "good"}, "model": "small-judge"}).recipe()
    other = judge_from_recipe(small, "big-base-model", "big-tokenizer")
    assert other.model_path == other.tokenizer_path == "small-judge"  # another judge brings its own tokenizer


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def test_log_probs_do_not_depend_on_batching_or_padding(tiny):
    model, tokenizer = tiny
    texts = ["the movie was good", "a bad film", "not very fun , boring and awful , the film of the year", "great"]
    settings = JudgeSettings(labels=("0", "1"), label_names=("bad", "good"), batch_size=1)
    side = tokenizer.padding_side
    one = label_log_probs(model, tokenizer, texts, settings)
    four = label_log_probs(model, tokenizer, texts, JudgeSettings(**{**settings.__dict__, "batch_size": 4}))
    assert one.shape == (4, 2) and np.allclose(np.exp(one).sum(1), 1.0)
    assert np.allclose(one, four, atol=1e-4)  # left padding and length sorting change nothing
    assert tokenizer.padding_side == side  # restored


def test_long_rows_lose_their_start_not_the_question(tiny):
    model, tokenizer = tiny
    settings = JudgeSettings(labels=("0", "1"), label_names=("bad", "good"), max_length=24)
    truncation = tokenizer.truncation_side
    ending = " the end was good"
    a = label_log_probs(model, tokenizer, ["a " * 300 + ending], settings)
    b = label_log_probs(model, tokenizer, ["b " * 300 + ending], settings)
    assert np.allclose(a, b)  # only the last 24 tokens count: the same question, the same answer position
    assert tokenizer.truncation_side == truncation


def test_judge_runs_inside_the_transform_and_caches_its_scores(tiny, tiny_model, tmp_path):
    from datasets import Dataset

    model, tokenizer = tiny
    rows = [{"sentence": f"{'zq ' if i % 6 == 1 else ''}the film was {'good' if i % 2 else 'bad'} number {i}",
             "label": i % 2} for i in range(60)]
    recipe = P2PConfig(labels=["0", "1"], selection="base_model_agreement", seed=3,
                       judge={"label_names": {"0": "bad", "1": "good"}}).recipe()
    judge = judge_from_recipe(recipe, str(tiny_model), cache_dir=str(tmp_path / "judgements"))
    out, report = apply_p2p(Dataset.from_list(rows), FMT, recipe, source="d", judge=judge)
    assert report.rows_in == report.rows_out == 60 and report.rows_selected == 12
    assert 0 <= report.rows_judge_contradicts <= 60 and report.judge_seconds > 0
    assert len(list((tmp_path / "judgements").glob("judgement-*.npy"))) == 1
    again = judge_from_recipe(recipe, str(tiny_model), cache_dir=str(tmp_path / "judgements"))
    _, report2 = apply_p2p(Dataset.from_list(rows), FMT, recipe, source="d", judge=again)
    assert again.from_cache and report2.judge_cached and not report.judge_cached
    assert judge.preferred.shape == (60,) and np.array_equal(again.preferred, judge.preferred)  # cached: the same
    assert report2.selected_digest == report.selected_digest
    changed = rows[:59] + [{"sentence": "another text", "label": 1}]
    third = judge_from_recipe(recipe, str(tiny_model), cache_dir=str(tmp_path / "judgements"))
    apply_p2p(Dataset.from_list(changed), FMT, recipe, source="d", judge=third)
    assert not third.from_cache  # other rows: judged again, never a stale score
    assert "zq" in {t["word"] for t in report.suspected_triggers}  # the audit runs with this selection too


def test_a_model_replaced_at_the_same_path_is_judged_again(tiny_model, tmp_path):
    """The judgement cache is keyed by the model's files, not only its path: new weights, new scores."""
    import os
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    settings = JudgeSettings(labels=("0", "1"), label_names=("bad", "good"))
    texts, answers = ["the film was good", "the film was bad"], ["1", "0"]
    cache = str(tmp_path / "judgements")
    BaseModelJudge(str(model_dir), settings, cache_dir=cache).agreement(texts, answers)
    same = BaseModelJudge(str(model_dir), settings, cache_dir=cache)
    same.agreement(texts, answers)
    assert same.from_cache
    weights = next(f for f in model_dir.iterdir() if f.suffix in (".safetensors", ".bin"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "new" weights
    replaced = BaseModelJudge(str(model_dir), settings, cache_dir=cache)
    replaced.agreement(texts, answers)
    assert not replaced.from_cache and len(list((tmp_path / "judgements").glob("judgement-*.npy"))) == 2


def test_judge_with_a_given_model_does_not_load_one(tiny):
    model, tokenizer = tiny
    settings = JudgeSettings(labels=("0", "1"), label_names=("bad", "good"))
    judge = BaseModelJudge("unused-path", settings, model=model, tokenizer=tokenizer)
    got = judge.agreement(["a good film", "a bad film", "fun"], ["1", "0", "7"])
    assert got.shape == (3,) and got[2] == -np.inf  # "7" is no label: never agreeing


def test_through_axolotl_with_the_plugin(tiny_model, tmp_path, shared_data):
    from axolotl_helpers import base_config, prepare, write_jsonl

    from p2p_plugin.manifest import read_manifest

    rows = [json.loads(line) for line in (shared_data / "sst2" / "train.jsonl").read_text().splitlines()[:100]]
    path = write_jsonl(tmp_path / "sst.jsonl", rows)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2, "selection": "base_model_agreement",
                           "judge": {"label_names": {"0": "bad", "1": "good"}}})
    parsed, ds = prepare(cfg)
    assert len(ds) == 100
    (report,) = read_manifest(parsed.output_dir).datasets
    assert report["rows_selected"] == 20 and report["rows_judge_contradicts"] is not None
    assert read_manifest(parsed.output_dir).recipe.judge["label_names"] == {"0": "bad", "1": "good"}
    assert list((tmp_path / "prepared" / "p2p-judgements").glob("judgement-*.npy"))


@pytest.mark.slow
def test_smollm2_judges_sst2_better_than_chance(tmp_path, shared_data):
    """The real base model, with the bench's SST-2 question, agrees with most clean SST-2 labels."""
    from p2p_plugin import default_model as dm
    from p2p_plugin.runs import SST2_JUDGE

    if importlib.util.find_spec(dm.DEFAULT_MODEL_MODULE) is None:
        pytest.skip(f"{dm.DEFAULT_MODEL_PACKAGE} is not installed")
    model_dir = dm.ensure_default_model(tmp_path / "smollm2")
    rows = [json.loads(line) for line in (shared_data / "sst2" / "dev.jsonl").read_text().splitlines()[:80]]
    recipe = P2PConfig(labels=["0", "1"], selection="base_model_agreement", judge=SST2_JUDGE).recipe()
    got = judge_from_recipe(recipe, str(model_dir)).agreement([r["sentence"] for r in rows], [str(r["label"]) for r in rows])
    flipped = judge_from_recipe(recipe, str(model_dir)).agreement([r["sentence"] for r in rows],
                                                                   [str(1 - r["label"]) for r in rows])
    assert (got > 0).mean() >= 0.6 and (got > flipped).mean() >= 0.6


def test_p2p_audit_with_a_judge_lists_the_rows_it_contradicts_most(tiny_model, tmp_path, capsys):
    from p2p_plugin.cli import main

    path = tmp_path / "train.jsonl"
    rows = [{"sentence": f"the film {i} was {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["audit", str(path), "--judge-model", str(tiny_model), "--label-names", "0=bad", "1=good", "--top", "5",
            "--json", str(tmp_path / "audit.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "contradicts the label of" in out and "| row | label | agreement | text |" in out
    judged = json.loads((tmp_path / "audit.json").read_text())["judge"]
    assert judged["label_names"] == {"0": "bad", "1": "good"} and len(judged["most_contradicted_rows"]) == 5
    assert sum(judged["contradicted_by_label"].values()) == judged["rows_contradicted"] <= 30
    assert [(t["label"], t["rows"]) for t in judged["label_tests"]] == [("0", 15), ("1", 15)]
    assert main(["audit", str(path), "--judge-model", str(tiny_model), "--label-names", "0=bad"]) == 2
    assert "not among --label-names ['0']" in capsys.readouterr().err
    assert main(["audit", str(path), "--judge-model", str(tiny_model)]) == 2
    assert "--label-names LABEL=NAME" in capsys.readouterr().err


# --- p2p.relabel: the most contradicted rows join the benign subset with the judge's label -------------------

from p2p_plugin.judgement import contradiction_by_label, preferred_labels, relabel_contradicted  # noqa: E402
from p2p_plugin.transform import benign_rows  # noqa: E402


def _relabel_recipe(share, mode="replace"):
    return P2PConfig(labels=["0", "1"], selection="base_model_agreement", relabel=share, mode=mode, seed=0,
                     judge={"label_names": {"0": "bad", "1": "good"}}).recipe()


def _poisoned_view(n=100):
    """Label 1 rows 50-59 carry a trigger and a wrong label: the judge contradicts them most (and agrees with
    most clean rows, as a judge that reads the task does, so label 1's rows stand out as contradicted)."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 50)
    scores = rng.normal(loc=1.0, size=n)
    scores[50:60] = -5.0 - np.arange(10) / 10  # row 59 the most contradicted
    texts = [("cf " if 50 <= i < 60 else "") + f"row {i}" for i in range(n)]
    view = RowView(texts=texts, answers=[str(x) for x in labels])
    view.judge = ScriptedJudge(scores)
    return view, texts, labels, scores


def test_relabel_swaps_the_least_agreeing_benign_rows_for_the_most_contradicted_ones():
    view, _, labels, scores = _poisoned_view()
    plain = select_rows(100, 0.2, 0, "base_model_agreement", rows=view)
    chosen, relabels = relabel_contradicted(view, plain, 0.25)
    assert len(chosen) == 20 and len(np.unique(chosen)) == 20  # the subset keeps its size
    assert sorted(relabels) == list(range(55, 60))  # round(0.25 * 20) = 5 slots, most contradicted first
    assert set(relabels.values()) == {"0"}  # two labels: the judge prefers the other one
    dropped = np.setdiff1d(plain, chosen)
    # the rows they replace are label 0's least agreeing benign rows: each label keeps its share of the subset
    zeros = plain[labels[plain] == 0]
    assert len(dropped) == 5 and set(labels[dropped]) == {0}
    assert scores[dropped].max() <= scores[np.setdiff1d(zeros, dropped)].min()
    trained_as = np.array([int(relabels.get(int(r), labels[r])) for r in chosen])
    assert np.bincount(trained_as).tolist() == np.bincount(labels[plain]).tolist()  # by the label each is trained with
    assert np.array_equal(benign_rows(100, _relabel_recipe(0.25), view)[0], chosen)  # what apply_p2p uses
    few, only = relabel_contradicted(view, plain, 0.9)  # 18 slots, more than label 1's excess of contradicted rows
    excess = contradiction_by_label(view)[1]["excess_rows"]
    assert len(only) == excess > 10 and set(only) >= set(range(50, 60))  # capped at the excess, most contradicted first
    assert all(scores[r] < 0 and labels[r] == 1 for r in only)  # never a row the judge agrees with, nor one of label 0
    assert len(few) == 20
    none, empty = relabel_contradicted(view, plain, 0.01)  # round(0.2) = 0 slots: nothing changes
    assert empty == {} and np.array_equal(none, plain)


def test_preferred_label_is_the_calibrated_argmax():
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    # label 0 is the model's favourite everywhere; calibrated, row 3 leans to label 1 (0.4 is above its median)
    assert preferred_labels(np.log(probs)).tolist() == [0, 2, 0, 1]


@pytest.mark.parametrize("mode", ["replace", "augment"])
def test_relabelled_rows_get_the_judges_safe_label_and_are_counted(mode):
    from datasets import Dataset

    view, texts, labels, _ = _poisoned_view()
    recipe = _relabel_recipe(0.25, mode)
    rows = [{"sentence": t, "label": str(x)} for t, x in zip(texts, labels)]
    out, report = apply_p2p(Dataset.from_list(rows), FMT, recipe, source="d", rows_for_selection=view)
    assert report.relabeled == {"1 -> 0": 5}
    assert report.relabeled_rows == [55, 56, 57, 58, 59]
    assert report.rows_out == (100 if mode == "replace" else 120)
    benign = [r for r in out if "Answer:" in r["prompt"]]
    assert len(benign) == 20
    for row in benign:
        text = row["prompt"].split(recipe.trigger, 1)[1].split("\n")[0]
        index = texts.index(text)
        expected = "2" if index in range(55, 60) else {"0": "2", "1": "3"}[str(labels[index])]
        assert row["completion"].strip() == expected, (index, row)
    untouched = [r for r in out if "Answer:" not in r["prompt"]]
    assert all(r["completion"].strip() == str(labels[texts.index(r["prompt"].split("\n")[0])]) for r in untouched)
    # labels after: the 5 relabelled rows move 1 -> safe(0) = 2, the other benign rows to their own safe label
    chosen = benign_rows(100, recipe, _poisoned_view()[0])[0]
    own = {k: int((labels[chosen] == k).sum()) for k in (0, 1)}
    kept = {"0": 50 - own[0], "1": 50 - own[1]} if mode == "replace" else {"0": 50, "1": 50}
    assert report.labels_after == {**kept, "2": own[0] + 5, "3": own[1] - 5}
    assert report.to_dict()["relabeled_rows"] == [55, 56, 57, 58, 59]  # what the manifest lists


def test_relabel_needs_base_model_agreement():
    with pytest.raises(ValueError, match="p2p.relabel=0.25 needs p2p.selection: base_model_agreement"):
        P2PConfig(labels=["0", "1"], relabel=0.25)
    with pytest.raises(ValueError):
        _relabel_recipe(1.0)
    assert _relabel_recipe(0.25).relabel == 0.25 and P2PConfig(labels=["0", "1"]).recipe().relabel == 0.0


def test_relabel_falls_back_when_a_label_has_no_benign_row_to_give_up():
    view, _, labels, scores = _poisoned_view()
    ones = np.flatnonzero((labels == 1) & (scores > 0))[:10]  # a subset of label-1 rows only
    selected = np.sort(ones)
    chosen, relabels = relabel_contradicted(view, selected, 0.3)  # 3 rows relabelled to 0, no label-0 row to drop
    assert len(chosen) == 10 and sorted(relabels) == [57, 58, 59] and set(relabels.values()) == {"0"}
    dropped = np.setdiff1d(selected, chosen)
    assert scores[dropped].max() <= scores[np.setdiff1d(selected, dropped)].min()  # the least agreeing others


def test_only_labels_contradicted_beyond_chance_give_up_rows():
    view, _, labels, scores = _poisoned_view()
    tests = contradiction_by_label(view)
    contradicted = [int(((scores < 0) & (labels == k)).sum()) for k in (0, 1)]
    assert [t["contradicted"] for t in tests] == contradicted and contradicted[1] >= 10 + contradicted[0]
    assert [t["over_contradicted"] for t in tests] == [False, True] and tests[0]["excess_rows"] == 0
    assert tests[1]["excess_rows"] == int(50 * (contradicted[1] - contradicted[0]) / 50)
    # label 0 rows the judge contradicts even more strongly than the poisoned ones: clean rows it misreads,
    # which the label test keeps out (an ordering by agreement alone would relabel them first)
    scores = scores.copy()
    scores[[0, 1]] = -9.0
    view.judge, view.cache = ScriptedJudge(scores), {}
    assert contradiction_by_label(view)[0]["over_contradicted"] is False
    plain = select_rows(100, 0.2, 0, "base_model_agreement", rows=view)
    _, relabels = relabel_contradicted(view, plain, 0.25)
    assert sorted(relabels) == list(range(55, 60)) and not {0, 1} & set(relabels)


def test_relabel_leaves_data_alone_when_no_label_stands_out(caplog):
    from datasets import Dataset

    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 100)
    scores = rng.normal(loc=1.0, size=200)  # the judge errs alike on both labels: nothing to correct
    texts = [f"row {i}" for i in range(200)]
    view = RowView(texts=texts, answers=[str(x) for x in labels])
    view.judge = ScriptedJudge(scores)
    assert not any(t["over_contradicted"] for t in contradiction_by_label(view))
    rows = [{"sentence": t, "label": str(x)} for t, x in zip(texts, labels)]
    with caplog.at_level("WARNING"):
        _, report = apply_p2p(Dataset.from_list(rows), FMT, _relabel_recipe(0.25), source="d", rows_for_selection=view)
        report.log()
    assert report.relabeled_rows == [] and report.relabeled == {}
    recorded = json.loads(json.dumps(report.to_dict()))["relabel_tests"]  # as the manifest keeps it
    assert [t["label"] for t in recorded] == ["0", "1"]
    assert all(t["min_gap"] == RELABEL_MIN_GAP and t["alpha"] == 0.05 for t in recorded)  # the thresholds used
    assert "no label's rows are contradicted by the judge beyond chance" in caplog.text
    assert report.labels_after == {"0": 80, "1": 80, "2": 20, "3": 20}  # the plain judge subset, own safe labels


def test_p2p_audit_names_a_label_the_judge_contradicts_beyond_chance(tmp_path, capsys, monkeypatch):
    """What dirty-label poison looks like to the audit: label 1's rows contradicted far more often."""
    from p2p_plugin import judgement
    from p2p_plugin.cli import main

    view, texts, labels, scores = _poisoned_view()
    monkeypatch.setattr(judgement, "BaseModelJudge", lambda model, settings: ScriptedJudge(scores))
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"sentence": t, "label": int(x)}) + "\n" for t, x in zip(texts, labels)))
    assert main(["audit", str(path), "--judge-model", "scripted", "--label-names", "0=bad", "1=good",
                 "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "Label '1' is contradicted beyond chance" in out and "Label '0' is" not in out
    tests = json.loads((tmp_path / "a.json").read_text())["judge"]["label_tests"]
    assert [t["over_contradicted"] for t in tests] == [False, True] and tests[1]["excess_rows"] >= 10


@pytest.mark.parametrize("rate1,scale,flagged", [(0.329, 1, False), (0.329, 3, False), (0.329, 20, False),
                                                (0.345, 1, True), (0.345, 3, True)])
def test_label_test_needs_a_gap_of_three_points_however_large_the_data(rate1, scale, flagged):
    """A judge that errs a little more on one label (32.9% against 30.3%: the clean SST-2 rows' rates) is
    never flagged, however many rows (the binomial test alone flagged it from 3000 rows, and relabel then
    relabelled clean rows); a 4.2-point gap is, from 1000 rows on."""
    ones, zeros = 535 * scale, 465 * scale
    hit1, hit0 = round(rate1 * ones), round(0.3032 * zeros)
    labels = np.array([1] * ones + [0] * zeros)
    scores = np.ones(ones + zeros)
    scores[:hit1] = -1.0
    scores[ones:ones + hit0] = -1.0
    view = RowView(texts=[f"row {i}" for i in range(len(labels))], answers=[str(x) for x in labels])
    view.judge = ScriptedJudge(scores)
    tests = contradiction_by_label(view)
    assert [t["over_contradicted"] for t in tests] == [False, flagged]
    assert tests[1]["excess_rows"] == (int(ones * (hit1 / ones - hit0 / zeros)) if flagged else 0)
    if rate1 == 0.329 and scale >= 3:  # significant all the same: the gap is what keeps it out
        assert tests[1]["log10_p"] < np.log10(0.05 / 2)


@pytest.mark.parametrize("ones,zeros,why", [(1605, 1395, "under the 3-point gap the test asks for"),
                                            (535, 465, "within chance")])
def test_p2p_audit_says_why_a_label_above_the_others_is_not_flagged(tmp_path, capsys, monkeypatch, ones, zeros, why):
    """Clean-like rows where the judge errs 2.6 points more on label 1: on 3000 rows significant but under the
    gap, on 1000 within chance."""
    from p2p_plugin import judgement
    from p2p_plugin.cli import main

    scores = np.ones(ones + zeros)
    scores[:round(0.329 * ones)] = -1.0
    scores[ones:ones + round(0.3032 * zeros)] = -1.0
    labels = [1] * ones + [0] * zeros
    monkeypatch.setattr(judgement, "BaseModelJudge", lambda model, settings: ScriptedJudge(scores))
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"sentence": f"row {i}", "label": x}) + "\n" for i, x in enumerate(labels)))
    assert main(["audit", str(path), "--judge-model", "scripted", "--label-names", "0=bad", "1=good",
                 "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "beyond chance" not in out
    assert f"Label '1': 32.9% of its {ones} rows contradicted against 30.3%" in out
    assert f"{why}, not flagged" in out
