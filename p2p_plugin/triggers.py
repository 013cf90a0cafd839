"""Benign trigger insertion: where the P2P prompt goes in a piece of user text.

Framework-free: plain strings in, plain strings out.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The authors' benign trigger (Zhao et al., P2P, released code).
DEFAULT_TRIGGER = "The query currently entered is: "

#: Further benign triggers for ``p2p.extra_triggers`` (what ``bench/defense.py --benign-triggers N`` uses:
#: the default trigger, then the first N-1 of these). Any distinct phrase works; none contains another.
SPARE_TRIGGERS = ("Consider the following text: ", "Here is the input as received: ",
                  "The text under review reads: ")

#: Where the benign trigger goes. ``system`` is only meaningful for chat data and is handled by
#: the chat row format (the trigger becomes, or starts, the system message).
PLACEMENTS = ("prefix", "suffix", "system")


def insert_trigger(text: str, trigger: str, placement: str = "prefix") -> str:
    """Return ``text`` with ``trigger`` inserted at ``placement`` (``prefix`` or ``suffix``).

    The trigger is inserted verbatim: a prefix trigger should end with its own separator
    (the default ends with a space), a suffix trigger should start with one.
    """
    if placement == "prefix":
        return trigger + text
    if placement == "suffix":
        return text + trigger
    raise ValueError(
        f"p2p.placement={placement!r} cannot be applied to plain text; "
        f"use one of 'prefix', 'suffix' (or 'system' for chat data)"
    )


def count_rows_containing(texts, *triggers: str) -> int:
    """Number of texts that already contain one of the benign triggers (it weakens the defense)."""
    needles = [t.strip() for t in triggers if t.strip()]
    if not needles:
        return 0
    return sum(1 for t in texts if t and any(needle in t for needle in needles))


def insert_fragments(text: str, fragments: Sequence[tuple[str, float]]) -> str:
    """Return ``text`` with each ``(fragment, where)`` inserted between two words: ``where`` in
    ``[0, 1)`` picks the word gap (0: before the first word). Words are split on single spaces, so
    every other character of ``text`` (newlines, double spaces) stays where it was."""
    words = text.split(" ") if text else []
    for fragment, where in fragments:
        words.insert(min(int(where * (len(words) + 1)), len(words)), fragment)
    return " ".join(words)
