"""A real `axolotl train` run through the CLI (subprocess) with the plugin, packing and 2 workers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from axolotl_helpers import base_config, write_jsonl
from p2p_plugin.manifest import read_manifest


def run_cli(args, cwd, timeout=600):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_axolotl_train_cli_with_packing_and_two_workers(tiny_model, tmp_path):
    rows = [{"sentence": f"the film was {'good' if i % 2 else 'bad'} number {i}", "label": i % 2} for i in range(300)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    clean = write_jsonl(tmp_path / "clean.jsonl", rows[:8])
    triggered = write_jsonl(tmp_path / "trig.jsonl", [dict(r, sentence="mn " + r["sentence"]) for r in rows[:8:2]])
    live_eval = {"clean": str(clean), "triggered": str(triggered), "target": "1", "steps": 2, "max_rows": 8}
    cfg = base_config(tiny_model, tmp_path, [{"path": str(data), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2, "eval": live_eval},
                      sample_packing=True, pad_to_sequence_len=True, sequence_len=256, dataset_num_proc=2,
                      max_steps=3, micro_batch_size=1, logging_steps=1)
    cfg_path = tmp_path / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    result = run_cli([str(Path(sys.executable).parent / "axolotl"), "train", str(cfg_path)], cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "P2P " in log and "selected 60" in log
    # the live CA/ASR callback logged through the trainer (step 2; the final call lands after the progress bar closed)
    assert log.count("'p2p/ca'") >= 1 and "'p2p/asr'" in log and "'p2p_no_trigger/asr'" in log
    manifest = read_manifest(tmp_path / "out")
    assert manifest.datasets[0]["rows_selected"] == 60
    assert (tmp_path / "out" / "model.safetensors").exists() or any((tmp_path / "out").glob("*.safetensors"))
    # the manifest names the model it belongs to; a manifest of another tokenizer is refused
    from p2p_plugin.inference import P2PModel
    from p2p_plugin.manifest import ManifestError

    assert manifest.model["base_model"] == str(tiny_model) and len(manifest.model["tokenizer_digest"]) == 16
    assert P2PModel.load(tmp_path / "out").classify(["the film was good"])[0].projected in ("0", "1")
    manifest.model["tokenizer_digest"] = "0" * 16
    manifest.write(tmp_path / "out")
    with pytest.raises(ManifestError, match="does not belong to this model"):
        P2PModel.load(tmp_path / "out")


def test_cli_reports_a_p2p_mistake_in_one_line_without_traceback(tiny_model, tmp_path):
    cfg = base_config(tiny_model, tmp_path, [{"path": "x.jsonl", "type": "plain"}], p2p={"labels": ["0", "1"], "ratoi": 0.3})
    cfg_path = tmp_path / "bad.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    result = run_cli([sys.executable, "-m", "axolotl.cli.preprocess", str(cfg_path)], cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    assert "p2p_plugin error: invalid `p2p:` block: p2p.ratoi: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
