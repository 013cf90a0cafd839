"""Every example config passes Axolotl's own schema validation with the plugin registered.

Offline: the GPU configs name hub models, which validation never loads; validation runs with the
capabilities of the hardware each config is meant for (bf16 GPUs), and the plugin's register()
must rewrite every dataset type. The CPU config runs through `load_cfg` for real, with its model
localized to the tiny test model (the only thing `load_cfg` loads).
"""

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "example_configs").glob("*.yml"))
GPU_CAPS = {"bf16": True, "fp8": False, "tf32": True, "n_gpu": 8, "compute_capability": "sm_90"}
ENV_CAPS = {"torch_version": "2.7.1"}


def test_there_are_configs_for_every_model_family():
    names = " ".join(p.name for p in CONFIGS)
    for model in ("qwen3-0.6b", "qwen3-8b", "qwen3-14b", "llama-3.1-8b", "smollm2-135m"):
        assert model in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path):
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    text = path.read_text()
    header = text.split("\n", 4)[:4]
    assert all(line.startswith("#") for line in header[:3]), "each file starts with a comment block"
    assert "Launch" in text.split("base_model")[0] and "Hardware" in text.split("base_model")[0]
    cfg = DictDefault(yaml.safe_load(text))
    prepare_plugins(cfg)
    assert all(d["type"].startswith("p2p_plugin.types.") for d in cfg.datasets)
    assert "/p2p-" in cfg.dataset_prepared_path
    validated = validate_config(cfg, capabilities=GPU_CAPS, env_capabilities=ENV_CAPS)
    assert validated.p2p["ratio"] > 0


def test_cpu_config_loads_for_real(tiny_model, tmp_path):
    from axolotl_helpers import load_cfg

    path = next(p for p in CONFIGS if "cpu" in p.name)
    cfg = yaml.safe_load(path.read_text())
    cfg.update(base_model=str(tiny_model), output_dir=str(tmp_path / "out"))
    parsed = load_cfg(cfg)
    assert parsed.p2p["labels"] == ["0", "1"] and parsed.sample_packing
