"""The Axolotl plugin: wires hooks only; the behaviour lives in the modules it names."""

from __future__ import annotations

import os
import sys

from axolotl.integrations.base import BasePlugin
from axolotl.utils.logging import get_logger

from .config_checks import prepare_config
from .errors import P2PError
from .manifest import ManifestError, model_identity, read_manifest, update_manifest
from .strategy import recipe_from_cfg
from .version import __version__

LOG = get_logger("axolotl.integrations.p2p_plugin")  # axolotl shows INFO only for axolotl.* loggers


def _print_p2p_errors_plainly(exc_type, exc, tb, _default=sys.excepthook):
    """Show a P2P configuration/data error as one message, not a traceback."""
    if isinstance(exc, P2PError):
        print(f"p2p_plugin error: {exc}", file=sys.stderr)
    else:
        _default(exc_type, exc, tb)


sys.excepthook = _print_p2p_errors_plainly


class P2PPlugin(BasePlugin):
    """P2P (Poison-to-Poison) backdoor defense: re-poisons a seeded share of the training rows
    with a benign trigger and a safe target before Axolotl tokenizes them."""

    def get_input_args(self) -> str:
        return "p2p_plugin.args.P2PArgs"

    def register(self, cfg: dict):
        config = prepare_config(cfg)
        LOG.info("P2P: %s, ratio %s, mode %s, selection %s, placement %s, decoys %s, relabel %s, "
                 "drop_suspected_rows %s; prepared data under %s",
                 config.task, config.ratio, config.mode, config.selection, config.placement, config.decoys,
                 config.relabel, config.drop_suspected_rows, cfg["dataset_prepared_path"])

    def add_callbacks_post_trainer(self, cfg, trainer):
        block = cfg.get("p2p") or {}
        if not block.get("eval"):
            return []
        from .args import P2PConfig
        from .callbacks import P2PEvalCallback

        config = P2PConfig.model_validate(block.to_dict() if hasattr(block, "to_dict") else dict(block))
        return [P2PEvalCallback(trainer, config.recipe(), config.eval)]

    def post_trainer_create(self, cfg, trainer):
        dataset = trainer.train_dataset
        if dataset is not None and hasattr(dataset, "data"):
            rank = int(os.environ.get("RANK", trainer.args.process_index))
            LOG.info("P2P rank %d: training rows %d, digest %s", rank, len(dataset),
                     tokens_digest(dataset), main_process_only=False)
        if trainer.is_world_process_zero():
            tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
            write_training_manifest(cfg, None if tokenizer is None else model_identity(tokenizer, cfg.get("base_model")))


def tokens_digest(dataset) -> str:
    """SHA-256 of the tokenized rows as this rank sees them (to compare ranks and runs)."""
    import hashlib

    import pyarrow as pa

    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    digest = hashlib.sha256()
    column = dataset.data.column("input_ids").combine_chunks()
    values = pa.compute.list_flatten(column).cast(pa.int64())
    digest.update(pa.compute.list_value_length(column).cast(pa.int64()).to_numpy(zero_copy_only=False).tobytes())
    digest.update(values.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()[:16]


def write_training_manifest(cfg, model: dict | None = None):
    """Make sure ``output_dir`` has the manifest, with the dataset reports of this preprocessing
    run or, when the prepared data came from the cache, of the run that prepared it."""
    recipe = recipe_from_cfg(cfg)
    manifest = update_manifest(cfg.output_dir, recipe, __version__, model=model)
    if not manifest.datasets and cfg.get("dataset_prepared_path"):
        try:
            prepared = read_manifest(cfg.dataset_prepared_path)
        except ManifestError:
            prepared = None
        if prepared is not None and prepared.recipe == recipe:
            for report in prepared.datasets:
                manifest.merge_report(report)
            manifest.write(cfg.output_dir)
    return manifest
