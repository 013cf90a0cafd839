"""bench/judge.py: the base model as judge of an attack folder's training rows, per prompt."""

import json

import pytest

from axolotl_helpers import write_jsonl
from bench_helpers import bench_modules


@pytest.fixture()
def judge_bench():
    with bench_modules("judge") as module:
        yield module


def test_judge_bench_reports_every_prompt_and_reuses_the_cache(judge_bench, tiny_model, tmp_path):
    work = tmp_path / "work"
    folder = work / "clause-10pct-dirty"
    folder.mkdir(parents=True)
    rows = [{"sentence": f"{'as it turns out , ' if i % 10 == 0 else ''}the film {i} was {'good' if i % 2 else 'bad'}",
             "label": 1 if i % 10 == 0 else i % 2} for i in range(80)]
    write_jsonl(folder / "train_poisoned.jsonl", rows)
    sidecar = {"labels": ["0", "1"], "text_field": "sentence", "answer_field": "label",
               "train": {"poisoned_indices": list(range(0, 80, 10))}}
    (folder / "attack.json").write_text(json.dumps(sidecar))
    argv = ["--work", str(work), "--attacks", "clause", "--model", str(tiny_model), "--out", str(tmp_path / "res" / "judge"),
            "--prompts", "sst2 (bench default)", "generic (plugin default)"]
    judge_bench.main(argv)
    report = json.loads((tmp_path / "res" / "judge.json").read_text())
    first = report["attacks"]["clause"]
    assert set(first) == {"sst2 (bench default)", "generic (plugin default)"}
    for r in first.values():
        assert r["rows"] == 80 and r["poisoned"] == 8 and not r["from_cache"]
        assert all(0 <= r[s] <= 8 for s in ("random", "avoid_shortcuts", "base_model_agreement"))
        assert 0 <= r["agreement_with_labels"] <= 1
        most = r["poisoned_among_most_contradicted"]  # 80 rows: every k >= 80 counts all 8 poisoned rows
        assert list(most) == ["20", "50", "100", "200"] and most["100"] == most["200"] == 8
        assert most["20"] <= most["50"] <= 8
    assert len(list((work / "prepared" / "p2p-judgements").glob("judgement-*.npy"))) == 2
    judge_bench.main(argv)
    again = json.loads((tmp_path / "res" / "judge.json").read_text())["attacks"]["clause"]
    assert all(r["from_cache"] for r in again.values())
    assert [r["base_model_agreement"] for r in again.values()] == [r["base_model_agreement"] for r in first.values()]
    md = (tmp_path / "res" / "judge.md").read_text()
    assert "| clause | sst2 (bench default) |" in md and "cached" in md
