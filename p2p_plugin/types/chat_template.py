"""`type: chat_template` with the P2P rewrite in front of it."""

from ..strategy import make_load

load = make_load("chat_template")
