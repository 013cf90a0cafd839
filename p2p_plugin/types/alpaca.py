"""`type: alpaca` with the P2P rewrite in front of it."""

from ..strategy import make_load

load = make_load("alpaca")
