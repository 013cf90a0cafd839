"""p2p_plugin: the P2P (Poison-to-Poison) backdoor defense for LLM fine-tuning, as an Axolotl plugin.

The method (trigger insertion, label spaces, selection, transform, manifest) imports without
Axolotl; ``P2PPlugin`` is loaded lazily so ``import p2p_plugin`` stays light.
"""

from .errors import P2PError
from .labels import LabelSpace
from .manifest import P2PManifest, read_manifest
from .recipe import P2PRecipe
from .selection import SelectionStrategy, register_selection_strategy, select_rows
from .triggers import DEFAULT_TRIGGER, insert_trigger
from .version import __version__

__all__ = [
    "DEFAULT_TRIGGER",
    "LabelSpace",
    "P2PError",
    "P2PManifest",
    "P2PPlugin",
    "P2PRecipe",
    "SelectionStrategy",
    "__version__",
    "insert_trigger",
    "read_manifest",
    "register_selection_strategy",
    "select_rows",
]


def __getattr__(name):
    if name == "P2PPlugin":
        from .plugin import P2PPlugin

        return P2PPlugin
    raise AttributeError(f"module 'p2p_plugin' has no attribute {name!r}")
