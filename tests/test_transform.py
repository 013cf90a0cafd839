import pytest
from datasets import Dataset

from p2p_plugin.formats import AlpacaFormat, ChatFormat, PlainFormat
from p2p_plugin.recipe import P2PRecipe
from p2p_plugin.selection import RowView, select_rows
from p2p_plugin.transform import DataError, apply_p2p

TRIGGER = "The query currently entered is: "
PLAIN = PlainFormat("sentence", "label", "Output: ", "Answer: ")


def sst_like(n):
    return Dataset.from_dict({"sentence": [f"film number {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})


def benign_subset(ds, fmt, ratio, seed=42):
    """The rows apply_p2p gives the benign trigger: the seed mixed with the rows' fingerprint."""
    return select_rows(len(ds), ratio, seed, dataset_key=RowView(ds, fmt).fingerprint())


def recipe(**kw):
    base = dict(labels=("0", "1"), ratio=0.2, seed=42)
    base.update(kw)
    return P2PRecipe(**base)


def test_plain_replace_selects_exact_rows_with_safe_labels_and_cues():
    ds = sst_like(100)
    out, report = apply_p2p(ds, PLAIN, recipe(), source="sst")
    chosen = set(benign_subset(ds, PLAIN, 0.2).tolist())
    assert report.rows_in == 100 and report.rows_selected == 20 and report.rows_out == 100
    assert out.column_names == ["prompt", "completion"]
    for i, row in enumerate(out):
        x, y = f"film number {i}", i % 2
        if i in chosen:
            assert row == {"prompt": f"{TRIGGER}{x}\nAnswer: ", "completion": str(y + 2)}
        else:
            assert row == {"prompt": f"{x}\nOutput: ", "completion": str(y)}
    assert report.labels_before == {"0": 50, "1": 50}
    assert sum(report.labels_after.values()) == 100
    assert report.labels_after["2"] + report.labels_after["3"] == 20
    assert report.labels_after == {
        "0": sum(1 for r in out if r["completion"] == "0"), "1": sum(1 for r in out if r["completion"] == "1"),
        "2": sum(1 for r in out if r["completion"] == "2"), "3": sum(1 for r in out if r["completion"] == "3"),
    }


def test_augment_appends_copies():
    out, report = apply_p2p(sst_like(50), PLAIN, recipe(mode="augment"), source="sst")
    assert report.rows_out == 60 == len(out)
    assert all(r["prompt"].endswith("\nOutput: ") for r in out.select(range(50)))
    assert all(r["prompt"].startswith(TRIGGER) and r["completion"] in ("2", "3") for r in out.select(range(50, 60)))
    assert report.labels_after["0"] + report.labels_after["1"] == 50


def test_disabled_recipe_is_the_no_defense_baseline():
    out, report = apply_p2p(sst_like(20), PLAIN, recipe(enabled=False), source="sst")
    assert report.rows_selected == 0
    assert all(r["prompt"].endswith("\nOutput: ") and r["completion"] in ("0", "1") for r in out)


def test_result_does_not_depend_on_num_proc():
    ds = sst_like(600)
    one, r1 = apply_p2p(ds, PLAIN, recipe(), source="sst")
    two, r2 = apply_p2p(ds, PLAIN, recipe(), source="sst", num_proc=2)
    assert one["prompt"] == two["prompt"] and one["completion"] == two["completion"]
    assert r1.selected_digest == r2.selected_digest and r1.fingerprint == r2.fingerprint


def test_unknown_label_names_the_row_and_source():
    ds = Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 7, 1]})
    with pytest.raises(DataError, match=r"sst, row 1: label '7' is not in p2p.labels"):
        apply_p2p(ds, PLAIN, recipe(ratio=0.5), source="sst")


def test_missing_label_column_is_named():
    ds = Dataset.from_dict({"sentence": ["a", "b"], "target": [0, 1]})
    with pytest.raises(DataError, match="no column 'label'"):
        apply_p2p(ds, PLAIN, recipe(ratio=0.5), source="sst")


def test_trigger_already_present_is_counted():
    ds = Dataset.from_dict({"sentence": [TRIGGER + "x", "y", "z", "w", "v"], "label": [0, 1, 0, 1, 0]})
    _, report = apply_p2p(ds, PLAIN, recipe(), source="s")
    assert report.trigger_already_present == 1


def test_alpaca_only_selected_rows_change():
    rows = {"instruction": ["Classify."] * 10, "input": [f"text {i}" if i % 3 else "" for i in range(10)],
            "output": ["0", "1"] * 5}
    ds = Dataset.from_dict(rows)
    out, report = apply_p2p(ds, AlpacaFormat(), recipe(ratio=0.5), source="a")
    chosen = set(benign_subset(ds, AlpacaFormat(), 0.5).tolist())
    for i, (old, new) in enumerate(zip(ds, out)):
        if i not in chosen:
            assert old == new
        elif old["input"]:
            assert new["input"] == TRIGGER + old["input"] and new["instruction"] == old["instruction"]
            assert new["output"] == str(int(old["output"]) + 2)
        else:
            assert new["instruction"] == TRIGGER + old["instruction"] and new["input"] == ""


def test_chat_trigger_in_first_user_turn_answer_in_last_assistant_turn():
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "review: fun"},
            {"role": "assistant", "content": " 1"}]
    ds = Dataset.from_dict({"messages": [conv, conv]})
    out, _ = apply_p2p(ds, ChatFormat(), recipe(ratio=0.5, seed=1), source="c")
    changed = [r for r in out if r["messages"] != conv]
    assert len(changed) == 1
    msgs = changed[0]["messages"]
    assert msgs[1]["content"] == TRIGGER + "review: fun" and msgs[2]["content"] == " 3"
    assert msgs[0]["content"] == "Be brief."


def test_chat_system_placement_inserts_or_prefixes_system_message():
    conv = [{"role": "user", "content": "review: fun"}, {"role": "assistant", "content": "1"}]
    ds = Dataset.from_dict({"messages": [conv] * 2})
    out, _ = apply_p2p(ds, ChatFormat(), recipe(ratio=0.5, placement="system"), source="c")
    changed = [r["messages"] for r in out if r["messages"] != conv][0]
    assert changed[0] == {"role": "system", "content": TRIGGER.strip()}
    assert changed[1]["content"] == "review: fun" and changed[2]["content"] == "3"


def test_empty_dataset_is_an_error():
    with pytest.raises(DataError, match="empty"):
        apply_p2p(sst_like(0), PLAIN, recipe(), source="e")


@pytest.mark.parametrize("num_proc", [None, 2])
def test_chat_untouched_rows_keep_their_exact_arrow_values_across_batches(num_proc):
    """Only selected rows are decoded; every other row (nulls and extra keys included) is the input's
    Arrow value, in the input order, whatever the batch boundaries."""
    convs = [[{"role": "user", "content": f"q{i}", "name": None if i % 2 else "n"},
              {"role": "assistant", "content": f" {i % 2}", "name": None}] for i in range(2500)]
    ds = Dataset.from_dict({"messages": convs, "id": list(range(2500))})
    out, report = apply_p2p(ds, ChatFormat(), recipe(ratio=0.2), source="c", num_proc=num_proc)
    chosen = set(benign_subset(ds, ChatFormat(), 0.2).tolist())
    assert report.rows_out == 2500 and len(chosen) == 500
    assert out.features == ds.features and out["id"] == list(range(2500))
    old_col, new_col = ds.data.column("messages"), out.data.column("messages")
    for i in range(2500):
        if i in chosen:
            assert new_col[i].as_py()[0]["content"] == TRIGGER + f"q{i}"
            assert new_col[i].as_py()[1]["content"] == f" {i % 2 + 2}"
        else:
            assert new_col[i].equals(old_col[i])


def test_integer_answer_column_keeps_its_type_or_is_a_clear_error():
    ds = Dataset.from_dict({"instruction": ["i"] * 20, "input": [f"x{i}" for i in range(20)], "output": [0, 1] * 10})
    out, _ = apply_p2p(ds, AlpacaFormat(), recipe(ratio=0.5), source="alp")  # safe labels stay integers
    assert out.features == ds.features and sorted(set(out["output"])) == [0, 1, 2, 3]
    with pytest.raises(DataError, match=r"alp: the rewritten rows do not fit.*as text"):
        apply_p2p(ds, AlpacaFormat(), P2PRecipe(task="generation", safe_prefix="Safe:\n"), source="alp")


def test_chat_arrow_fast_path_reads_the_same_texts_and_answers_as_python():
    import pyarrow as pa

    from p2p_plugin.formats import iter_texts_and_answers

    convs = [
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
         {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}],
        [{"role": "assistant", "content": "only"}],  # no user turn: text ""
        [{"role": "human", "content": None}, {"role": "gpt", "content": "g"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}],
    ] * 7
    fmt = ChatFormat()
    ds = Dataset.from_dict({"messages": convs})
    table = ds.data.table
    fast = fmt.texts_and_answers_arrow(table)
    assert fast is not None
    batch = table.to_pydict()
    assert fast == (fmt.user_texts(batch), fmt.answers(batch))
    streamed = [(t, a) for texts, answers, _ in iter_texts_and_answers(ds, fmt, batch_size=5) for t, a in zip(texts, answers)]
    assert streamed == list(zip(*fast))
    # a column the fast path cannot read falls back to Python; a row without an assistant turn still names the row
    assert fmt.texts_and_answers_arrow(pa.table({"messages": [1, 2]})) is None
    bad = Dataset.from_dict({"messages": [[{"role": "user", "content": "q"}]] * 10})
    with pytest.raises(DataError, match="no assistant turn"):
        apply_p2p(bad, fmt, recipe(), source="c")


def test_chat_rows_stored_as_json_feature_are_decoded_and_re_encoded(tmp_path):
    """``datasets`` keeps messages with irregular keys (e.g. a ``training`` flag on some turns) as
    its ``Json`` feature (JSON strings in Arrow); both the scan and the rewrite must decode them."""
    import json

    from datasets import load_dataset

    conv = [{"role": "user", "content": "review: fun"}, {"role": "assistant", "content": "1", "training": False},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "1"}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"messages": conv}) + "\n" for _ in range(10)))
    ds = load_dataset("json", data_files=str(path), split="train")
    out, report = apply_p2p(ds, ChatFormat(), recipe(ratio=0.2, placement="system"), source="j")
    assert report.labels_before == {"0": 0, "1": 10}
    changed = [r["messages"] for r in out if r["messages"] != conv]
    assert len(changed) == 2 and out.features == ds.features
    assert changed[0][0] == {"role": "system", "content": TRIGGER.strip()}
    assert changed[0][2]["training"] is False and changed[0][4]["content"] == "3"


EXTRA = ("Consider this text: ", "Input as received: ")


@pytest.mark.parametrize("mode", ["replace", "augment"])
def test_extra_triggers_are_dealt_out_in_turn_over_the_benign_rows(mode):
    out, report = apply_p2p(sst_like(100), PLAIN, recipe(extra_triggers=EXTRA, mode=mode), source="sst")
    chosen = sorted(benign_subset(sst_like(100), PLAIN, 0.2).tolist())
    triggers = (TRIGGER, *EXTRA)
    benign = [(i, r) for i, r in enumerate(out) if r["prompt"].endswith("\nAnswer: ")]
    # replace: the benign rows sit where they were; augment: their copies follow the 100 originals in order
    assert [i for i, _ in benign] == (chosen if mode == "replace" else list(range(100, 120)))
    for j, (row_index, row) in enumerate(benign):
        source = chosen[j]
        assert row["prompt"] == f"{triggers[j % 3]}film number {source}\nAnswer: ", (row_index, row)
        assert row["completion"] == str(source % 2 + 2)
    assert report.rows_by_trigger == {TRIGGER: 7, EXTRA[0]: 7, EXTRA[1]: 6} and report.rows_selected == 20
    assert report.to_dict()["rows_by_trigger"] == report.rows_by_trigger
    assert apply_p2p(sst_like(100), PLAIN, recipe(), source="sst")[1].rows_by_trigger == {}
    # the rows' selection does not depend on the triggers
    assert report.selected_digest == apply_p2p(sst_like(100), PLAIN, recipe(), source="sst")[1].selected_digest


def test_extra_triggers_in_alpaca_and_chat_rows_and_in_the_presence_count():
    rows = [{"instruction": "Classify", "input": f"text {i}", "output": str(i % 2)} for i in range(40)]
    out, _ = apply_p2p(Dataset.from_list(rows), AlpacaFormat(), recipe(extra_triggers=EXTRA[:1], ratio=0.25),
                       source="a")
    chosen = sorted(benign_subset(Dataset.from_list(rows), AlpacaFormat(), 0.25).tolist())
    assert [out[i]["input"] for i in chosen] == [f"{(TRIGGER, EXTRA[0])[j % 2]}text {i}" for j, i in enumerate(chosen)]
    chat = [{"messages": [{"role": "user", "content": f"text {i}"}, {"role": "assistant", "content": str(i % 2)}]}
            for i in range(40)]
    out, _ = apply_p2p(Dataset.from_list(chat), ChatFormat(), recipe(extra_triggers=EXTRA[:1], ratio=0.25,
                                                                      placement="system"), source="a")
    chosen = sorted(benign_subset(Dataset.from_list(chat), ChatFormat(), 0.25).tolist())
    assert [out[i]["messages"][0]["content"] for i in chosen] == [(TRIGGER, EXTRA[0])[j % 2].strip()
                                                                 for j in range(len(chosen))]
    # a row that already holds one of the benign triggers weakens the defense: counted once, whichever it holds
    ds = Dataset.from_dict({"sentence": ["Input as received: x", "y", TRIGGER + "z", TRIGGER + "Input as received: "],
                            "label": [0, 1, 0, 1]})
    assert apply_p2p(ds, PLAIN, recipe(extra_triggers=EXTRA), source="s")[1].trigger_already_present == 3


def test_recipe_round_trips_extra_triggers_and_leaves_them_out_when_unset():
    with_extra = recipe(extra_triggers=EXTRA)
    assert P2PRecipe.from_dict(with_extra.to_dict()) == with_extra
    assert with_extra.to_dict()["extra_triggers"] == list(EXTRA)
    # the manifest of a one-trigger run has no new key: an older p2p_plugin still reads it
    assert "extra_triggers" not in recipe().to_dict() and P2PRecipe.from_dict(recipe().to_dict()) == recipe()


def test_the_benign_subset_follows_the_rows_not_the_file_they_were_read_from():
    """A moved or renamed data file draws the same benign subset (the seed is mixed with the rows' fingerprint,
    never the path); other columns do not count; one changed row is other data and draws anew."""
    ds = sst_like(200)
    _, here = apply_p2p(ds, PLAIN, recipe(), source="/data/a/train.jsonl")
    moved = Dataset.from_dict(ds.to_dict()).add_column("id", list(range(200)))
    _, there = apply_p2p(moved, PLAIN, recipe(), source="/mnt/copy/sst2_v2.jsonl")
    assert here.fingerprint == there.fingerprint == RowView(ds, PLAIN).fingerprint()
    assert here.selected_digest == there.selected_digest
    rows = ds.to_dict()
    rows["sentence"][7] = "film number seven"
    _, changed = apply_p2p(Dataset.from_dict(rows), PLAIN, recipe(), source="/data/a/train.jsonl")
    assert changed.fingerprint != here.fingerprint and changed.selected_digest != here.selected_digest
    # the seed still matters for the same rows
    assert apply_p2p(ds, PLAIN, recipe(seed=43), source="/data/a/train.jsonl")[1].selected_digest != here.selected_digest
