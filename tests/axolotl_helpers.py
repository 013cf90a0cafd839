"""Drive Axolotl's own config loading and dataset preparation in-process."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_config(model: Path, tmp: Path, datasets, p2p=None, **overrides) -> dict:
    cfg = {
        "base_model": str(model),
        "tokenizer_config": str(model),
        "datasets": datasets,
        "sequence_len": 512,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "output_dir": str(tmp / "out"),
        "dataset_prepared_path": str(tmp / "prepared"),
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "val_set_size": 0,
        "save_strategy": "no",
        "dataset_num_proc": 1,
        "seed": 0,
    }
    if p2p is not None:
        cfg["plugins"] = ["p2p_plugin.P2PPlugin"]
        cfg["p2p"] = p2p
    cfg.update(overrides)
    return cfg


def load_cfg(cfg: dict):
    from axolotl.cli.config import load_cfg as axolotl_load_cfg
    from axolotl.utils.dict import DictDefault

    return axolotl_load_cfg(DictDefault(cfg))


def prepare(cfg: dict):
    """load_cfg + load_datasets; returns (validated cfg, train dataset)."""
    from axolotl.common.datasets import load_datasets

    parsed = load_cfg(cfg)
    meta = load_datasets(cfg=parsed)
    return parsed, meta.train_dataset
