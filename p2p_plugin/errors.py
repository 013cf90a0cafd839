"""The one exception family of p2p_plugin: a user-facing mistake with a message that says what,
where (key / file / row) and how to fix it."""


class P2PError(ValueError):
    """A P2P configuration or data error (user-facing; printed without a traceback by the CLI)."""
