"""``p2p_manifest.json``: what a trained model needs to be queried the P2P way.

Written from the validated config (the recipe) plus the per-dataset transform reports; read by
inference and evaluation, which never re-derive the trigger or the label map themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import P2PError
from .recipe import P2PRecipe

MANIFEST_NAME = "p2p_manifest.json"
FORMAT_VERSION = 1


class ManifestError(P2PError):
    """The manifest is missing, unreadable or does not match."""


@dataclass
class P2PManifest:
    recipe: P2PRecipe
    plugin_version: str
    datasets: list[dict] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    model: dict = field(default_factory=dict)
    """What the model was trained from (:func:`model_identity`); empty until training starts."""

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "plugin_version": self.plugin_version,
            "recipe": self.recipe.to_dict(),
            "datasets": self.datasets,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "P2PManifest":
        try:
            return cls(recipe=P2PRecipe.from_dict(data["recipe"]), plugin_version=data["plugin_version"],
                       datasets=list(data.get("datasets", [])), format_version=data.get("format_version", 1),
                       model=dict(data.get("model") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ManifestError(f"{source}: not a valid P2P manifest ({err})") from None

    def merge_report(self, report: dict) -> None:
        """Add or replace one dataset's report (keyed by its source)."""
        self.datasets = [d for d in self.datasets if d.get("source") != report.get("source")] + [report]

    def write(self, directory) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)  # atomic: a reader never sees half a file
        return path


def read_manifest(directory_or_file) -> P2PManifest:
    path = Path(directory_or_file)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"no {MANIFEST_NAME} at {path}: this directory was not trained with p2p_plugin "
            f"(or pass the training output_dir / the manifest file itself)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    return P2PManifest.from_dict(data, source=str(path))


def update_manifest(directory, recipe: P2PRecipe, plugin_version: str, report: dict | None = None,
                    model: dict | None = None) -> P2PManifest:
    """Write the manifest for ``recipe``, keeping earlier dataset reports of the same recipe (and
    model, when ``model`` is given)."""
    try:
        manifest = read_manifest(directory)
        stale = manifest.recipe != recipe or manifest.plugin_version != plugin_version
        if stale or (model and manifest.model and manifest.model != model):
            manifest = P2PManifest(recipe, plugin_version)
    except ManifestError:
        manifest = P2PManifest(recipe, plugin_version)
    if report is not None:
        manifest.merge_report(report)
    if model:
        manifest.model = dict(model)
    manifest.write(directory)
    return manifest


def model_identity(tokenizer, base_model=None) -> dict:
    """The base model name and a digest of the tokenizer's vocabulary: the trigger, cues and label
    tokens a manifest describes only mean something with this tokenizer."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"base_model": None if base_model is None else str(base_model), "tokenizer_size": len(vocab),
            "tokenizer_digest": digest}


def check_model(manifest: P2PManifest, tokenizer, where) -> None:
    """Refuse a model whose tokenizer is not the one the manifest was written for."""
    expected = manifest.model.get("tokenizer_digest")
    if not expected:  # a manifest written before training started (or by plugin 0.1)
        return
    found = model_identity(tokenizer)
    if found["tokenizer_digest"] != expected:
        raise ManifestError(
            f"{where}: the p2p_manifest.json there was written for a model trained from "
            f"{manifest.model.get('base_model')!r} with a {manifest.model.get('tokenizer_size')}-token tokenizer "
            f"(digest {expected}), but the model loaded has a {found['tokenizer_size']}-token tokenizer (digest "
            f"{found['tokenizer_digest']}): the manifest does not belong to this model (pass the output_dir of "
            f"the training run that made it, or the right --base-model)"
        )
