"""Dataset ``type:`` targets the plugin rewrites the user's types to (``p2p_plugin.types.<type>``).

One module per supported original type, because Axolotl resolves an external ``type:`` as a
module with a ``load`` function.
"""
