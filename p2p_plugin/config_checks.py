"""What ``P2PPlugin.register`` does to a raw Axolotl config, before Axolotl validates it.

Kept free of Axolotl imports so it is testable on plain dicts.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import ValidationError

from .args import P2PConfig
from .errors import P2PError
from .strategy_names import SUPPORTED_TYPES, WRAPPED_PREFIX
from .version import __version__

PLUGIN_NAME = "p2p_plugin.P2PPlugin"
DEFAULT_PREPARED_PATH = "last_run_prepared"
SALT_RE = re.compile(r"[/\\]p2p-[0-9a-f]{12}$")


def validate_block(raw) -> P2PConfig:
    try:
        return P2PConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"p2p.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else f"p2p: {e['msg']}"
            for e in err.errors()
        )
        raise P2PError(f"invalid `p2p:` block: {problems}") from None


def code_digest() -> str:
    """A digest of the plugin's own source files: the rows a P2P setting produces depend on this code too
    (e.g. a selection rule fixed between two runs with the same settings and version)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()


def config_salt(config: P2PConfig, wrapped_types: list[str]) -> str:
    """Changes whenever any p2p setting, the wrapped types, the plugin version or its code change."""
    payload = json.dumps({"p2p": config.model_dump(mode="json"), "types": wrapped_types,
                          "version": __version__, "code": code_digest()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _refuse_unsupported(cfg) -> None:
    if cfg.get("rl"):
        raise P2PError(f"p2p_plugin supports supervised fine-tuning only; `rl: {cfg.get('rl')}` configs are not supported")
    if cfg.get("streaming") or cfg.get("pretraining_dataset"):
        raise P2PError("p2p_plugin needs the whole dataset to draw its seeded subset; remove `streaming` / `pretraining_dataset`")
    if cfg.get("skip_prepare_dataset"):
        raise P2PError("`skip_prepare_dataset: true` bypasses the P2P rewrite; remove it when using p2p_plugin")
    if not cfg.get("datasets"):
        raise P2PError("p2p_plugin found no `datasets:` to defend")


def _looks_pretokenized(path: str) -> bool:
    """A local JSON/JSONL file whose first row already holds input_ids/attention_mask/labels."""
    file = Path(path)
    if not file.is_file() or file.suffix not in (".json", ".jsonl"):
        return False
    with file.open() as handle:
        head = handle.read(1 << 16)
    if file.suffix == ".jsonl":
        first = head.split("\n", 1)[0]
    else:
        first = head
    return all(f'"{key}"' in first[:20000] for key in ("input_ids", "attention_mask", "labels"))


def wrap_dataset_types(datasets: list, key: str = "datasets") -> list[str]:
    """Point each entry's ``type`` at the P2P wrapper (idempotent); return the original types."""
    originals = []
    for idx, entry in enumerate(datasets):
        kind = entry.get("type")
        where = f"{key}[{idx}] ({entry.get('path')})"
        if isinstance(kind, dict) or hasattr(kind, "keys"):
            raise P2PError(f"{where}: a dict `type:` (user-defined prompt format) bypasses the P2P rewrite; "
                           f"use one of {list(SUPPORTED_TYPES)}")
        if not kind:
            raise P2PError(f"{where}: no `type:`; use one of {list(SUPPORTED_TYPES)}")
        base = kind[len(WRAPPED_PREFIX):] if kind.startswith(WRAPPED_PREFIX) else kind
        if base not in SUPPORTED_TYPES:
            raise P2PError(f"{where}: `type: {kind}` is not supported by p2p_plugin; supported: {list(SUPPORTED_TYPES)} "
                           f"(the plain format is {{p2p.text_field, p2p.label_field}} rows)")
        if entry.get("path") and _looks_pretokenized(str(entry["path"])):
            raise P2PError(f"{where}: the data is already tokenized (input_ids/attention_mask/labels); "
                           f"Axolotl skips every prompt strategy for such data, so P2P cannot rewrite it. "
                           f"Give the raw rows instead")
        entry["type"] = WRAPPED_PREFIX + base
        originals.append(base)
    return originals


def judgement_cache_dir(prepared_path) -> str:
    """Where the base model's judgements (``selection: base_model_agreement``) are kept: beside the
    P2P-salted prepared data, so runs with other P2P settings reuse them."""
    return f"{SALT_RE.sub('', str(prepared_path or DEFAULT_PREPARED_PATH))}/p2p-judgements"


def salt_prepared_path(cfg, salt: str) -> str:
    base = cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH
    base = SALT_RE.sub("", str(base))
    cfg["dataset_prepared_path"] = f"{base}/p2p-{salt}"
    return cfg["dataset_prepared_path"]


def prepare_config(cfg) -> P2PConfig:
    """Validate the p2p block, refuse configs P2P cannot defend, wrap dataset types, salt the cache."""
    plugins = cfg.get("plugins") or []
    if cfg.get("p2p") is None:
        raise P2PError(f"`plugins:` lists {PLUGIN_NAME} but the config has no `p2p:` block; add one "
                       f"(e.g. p2p: {{labels: ['0', '1']}}) or remove the plugin")
    if PLUGIN_NAME not in plugins:
        raise P2PError(f"the config has a `p2p:` block but `plugins:` does not list {PLUGIN_NAME}")
    config = validate_block(cfg["p2p"])
    _refuse_unsupported(cfg)
    wrapped = wrap_dataset_types(cfg["datasets"])
    if cfg.get("test_datasets"):
        wrapped += wrap_dataset_types(cfg["test_datasets"], key="test_datasets")
    salt_prepared_path(cfg, config_salt(config, wrapped))
    return config
