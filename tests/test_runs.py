"""p2p_plugin.runs: an arm's Axolotl config, and a killed arm resuming from its last checkpoint."""

import json
import shutil
from argparse import Namespace

from p2p_plugin.runs import DONE_NAME, last_checkpoint, train_arm, training_config


def arm_args(**overrides):
    values = dict(ratio=0.2, seed=0, sequence_len=128, micro_batch_size=2, epochs=1, lr=1e-3, max_steps=2,
                  save_steps=1)
    values.update(overrides)
    return Namespace(**values)


def test_save_steps_turns_on_checkpoints_and_auto_resume(tmp_path):
    cfg = training_config(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "out", tmp_path / "prep", arm_args(),
                          defended=True)
    assert (cfg["save_strategy"], cfg["save_steps"], cfg["save_total_limit"]) == ("steps", 1, 1)
    assert cfg["auto_resume_from_checkpoints"] is True
    cfg = training_config(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "out", tmp_path / "prep",
                          arm_args(save_steps=0), defended=True)
    assert cfg["save_strategy"] == "no" and "auto_resume_from_checkpoints" not in cfg


def test_last_checkpoint_is_the_highest_step(tmp_path):
    assert last_checkpoint(tmp_path) is None
    for name in ("checkpoint-5", "checkpoint-40", "checkpoint-7", "checkpoint-x"):
        (tmp_path / name).mkdir()
    assert last_checkpoint(tmp_path) == "checkpoint-40"


def test_killed_arm_resumes_from_its_checkpoint(tiny_model, shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "sst2" / "train.jsonl").open()][:40]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"sentence": r["sentence"], "label": r["label"]}) + "\n" for r in rows))
    out = tmp_path / "arm"
    cfg = training_config(tiny_model, data, out, tmp_path / "prepared", arm_args(), defended=True)
    first = train_arm(cfg, tmp_path, "arm")
    assert first["resumed_from"] is None and last_checkpoint(out) == "checkpoint-2"
    (out / DONE_NAME).unlink()  # as if it had been killed after its checkpoint at step 2
    shutil.rmtree(out / "checkpoint-1", ignore_errors=True)
    cfg = training_config(tiny_model, data, out, tmp_path / "prepared", arm_args(max_steps=3), defended=True)
    second = train_arm(cfg, tmp_path, "arm")
    assert second["resumed_from"] == "checkpoint-2"
    assert last_checkpoint(out) == "checkpoint-3"
    log = (tmp_path / "arm.log").read_text()  # appended to, not overwritten, by the resumed run
    assert log.count("Starting trainer") == 2
    assert f"resume from checkpoint at {out / 'checkpoint-2'}" in log.split("Starting trainer")[1]


def test_selection_is_left_to_the_plugin_default_unless_given(tmp_path):
    from p2p_plugin.args import P2PConfig

    cfg = training_config(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "o", tmp_path / "p", arm_args(), True)
    assert "selection" not in cfg["p2p"]
    assert P2PConfig.model_validate(cfg["p2p"]).selection == "avoid_shortcuts"
    cfg = training_config(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "o", tmp_path / "p", arm_args(), True,
                          selection="random")
    assert cfg["p2p"]["selection"] == "random"


def test_a_done_marker_without_weights_is_not_a_finished_arm(tmp_path, capsys):
    """A results archive (bench/gpu/defense_matrix.py --resume) carries done markers, not weights:
    such an arm must be trained again, not 'reused' into a failing model load."""
    from p2p_plugin.runs import finished_run

    (tmp_path / DONE_NAME).write_text('{"seconds": 1.0}')
    assert finished_run(tmp_path) is None and "no weights" in capsys.readouterr().out
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    assert finished_run(tmp_path) == {"seconds": 1.0}
    assert finished_run(tmp_path / "missing") is None


def test_all_linear_lora_targets_reach_the_trained_adapter(tiny_model, shared_data, tmp_path):
    """``all-linear`` is Axolotl's ``lora_target_linear``: the adapter covers the attention and the MLP."""
    rows = [json.loads(line) for line in (shared_data / "sst2" / "train.jsonl").open()][:20]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"sentence": r["sentence"], "label": r["label"]}) + "\n" for r in rows))
    out = tmp_path / "arm"
    cfg = training_config(tiny_model, data, out, tmp_path / "prepared", arm_args(max_steps=1, save_steps=0),
                          defended=True, lora_targets="all-linear")
    train_arm(cfg, tmp_path, "arm")
    assert set(json.loads((out / "adapter_config.json").read_text())["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    qkvo = training_config(tiny_model, data, out, tmp_path / "prepared", arm_args(), True, lora_targets="qkvo")
    assert qkvo["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"] and "lora_target_linear" not in qkvo
