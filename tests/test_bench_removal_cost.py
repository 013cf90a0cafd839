"""bench/removal_cost.py: what removing the audit's natural-word suspects costs on clean dev rows."""

import json

import pytest

from axolotl_helpers import write_jsonl
from bench_helpers import bench_modules
from tiny_model import defended_model_dir


@pytest.fixture()
def removal_cost():
    with bench_modules("removal_cost") as module:
        yield module


def test_removal_cost_reads_only_the_dev_rows_holding_a_flagged_word(removal_cost, tiny_model, tmp_path):
    # 200 training rows: "zork" comes with answer 1 in 60 of them (a natural polar word, for the audit a suspect)
    train = [{"sentence": f"{'zork ' if i < 60 else ''}w{i % 7} a film", "label": 1 if i < 60 else i % 2}
             for i in range(200)]
    dev = [{"sentence": "a zork film", "label": 1}, {"sentence": "a film", "label": 0},
           {"sentence": "ZORK! good", "label": 1}, {"sentence": "zorkish", "label": 0}]
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    write_jsonl(data / "sst2" / "train.jsonl", train)
    write_jsonl(data / "sst2" / "dev.jsonl", dev)
    model = defended_model_dir(tiny_model, tmp_path / "m")
    assert removal_cost.main(["--models", str(model), "--base-model", str(tiny_model), "--data-dir", str(data),
                              "--audit-rows", "50", "200", "--results", str(tmp_path / "res")]) == 0
    report = json.loads((tmp_path / "res" / "removal_cost.json").read_text())
    assert report["audited"] == {"50": ["zork"], "200": ["zork"]} and report["words"] == ["zork"]
    (entry,) = report["models"]
    assert entry["dev_rows"] == 4 and entry["touched_rows"] == 2  # "zorkish" is another word
    assert set(entry["readings"]) == {"p2p", "no benign trigger"}
    for r in entry["readings"].values():
        assert 0 <= r["touched_rows_correct"] <= 2 and 0 <= r["touched_rows_correct_removed"] <= 2
        assert r["ca_change_points"] == pytest.approx(100 * (r["touched_rows_correct_removed"]
                                                             - r["touched_rows_correct"]) / 4)
    assert "Dev rows holding any of them: 2 of 4" in (tmp_path / "res" / "removal_cost.md").read_text()


def test_removal_cost_refuses_when_nothing_is_flagged(removal_cost, tmp_path):
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    write_jsonl(data / "sst2" / "train.jsonl", [{"sentence": f"a film {i}", "label": i % 2} for i in range(40)])
    write_jsonl(data / "sst2" / "dev.jsonl", [{"sentence": "a film", "label": 0}])
    with pytest.raises(SystemExit, match="flags no word"):
        removal_cost.main(["--models", str(tmp_path), "--data-dir", str(data), "--audit-rows", "40",
                           "--results", str(tmp_path / "res")])
