"""Two CPU processes (torchrun, gloo) train with the plugin: identical P2P data on both ranks,
prepared once.

`accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.13 (``--cpu``
always takes its single-process launcher), so the test uses torchrun, which is what accelerate's
multi-process launcher runs underneath. Axolotl 0.19 also needs a small test-only plugin to load
the model on CPU under WORLD_SIZE > 1 (see tests/cpu_ddp_plugin.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from axolotl_helpers import base_config, write_jsonl
from p2p_plugin.manifest import read_manifest


def test_two_ranks_see_identical_p2p_data_prepared_once(tiny_model, tmp_path):
    rows = [{"sentence": f"the film was {'good' if i % 2 else 'bad'} number {i}", "label": i % 2} for i in range(200)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(data), "type": "plain", "ds_type": "json"}],
                      p2p={"labels": ["0", "1"], "ratio": 0.2}, max_steps=2, micro_batch_size=2,
                      dataset_num_proc=2, ddp_backend="gloo")
    cfg["plugins"] = ["p2p_plugin.P2PPlugin", "cpu_ddp_plugin.CpuDdpPlugin"]
    cfg_path = tmp_path / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    bin_dir = Path(sys.executable).parent
    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PATH": str(bin_dir) + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": tests_dir + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2",
                             "-m", "axolotl.cli.train", str(cfg_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    digests = dict(re.findall(r"P2P rank (\d): training rows \d+, digest ([0-9a-f]+)", log))
    assert set(digests) == {"0", "1"}, "\n".join(l for l in log.splitlines() if "P2P" in l or "RANK:1" in l)[-3000:]
    assert digests["0"] == digests["1"]
    assert len(re.findall(r"P2P \S+: rows in 200, selected 40", log)) == 1  # one process prepared the data
    assert read_manifest(tmp_path / "out").datasets[0]["rows_selected"] == 40
