"""Names shared by the config rewrite and the dataset strategy (no Axolotl import)."""

#: dataset ``type:`` values the plugin understands (what the user writes)
SUPPORTED_TYPES = ("plain", "alpaca", "chat_template")
#: what ``register()`` rewrites them to: Axolotl imports ``p2p_plugin.types.<type>`` and calls ``load``
WRAPPED_PREFIX = "p2p_plugin.types."
