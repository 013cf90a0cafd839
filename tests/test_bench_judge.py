"""bench/judge.py: the base model as judge of an attack folder's training rows, per prompt."""

import json

import pytest

from bench_helpers import bench_modules, write_clause_attack_folder


@pytest.fixture()
def judge_bench():
    with bench_modules("judge") as module:
        yield module


def test_judge_bench_reports_every_prompt_and_reuses_the_cache(judge_bench, tiny_model, tmp_path):
    work = tmp_path / "work"
    write_clause_attack_folder(work)
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
