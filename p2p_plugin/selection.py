"""Which training rows receive the benign trigger: named, seeded selection strategies.

A strategy sees the row count (and, if it wants, the raw rows) and returns sorted row indices.
The selection is computed once per dataset, before any parallel map, from a seed mixed with a fingerprint of
the rows' content (never their file's path), so the same rows draw the same subset wherever the file lives,
and it is identical across runs, ``dataset_num_proc`` values, processes and ranks; ``base_model_agreement``
also reads the base model's scores, computed once and cached (``judgement``). Framework-free (NumPy only).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import numpy as np

from .errors import P2PError


#: selection strategies that run the data audit (``shortcuts.audit_rows``) and set its suspicious rows aside
AUDITING_SELECTIONS = ("avoid_shortcuts", "base_model_agreement")


class SelectionError(P2PError):
    """The requested selection cannot be made."""


class SelectionStrategy(ABC):
    """Chooses ``num_selected`` of ``num_rows`` rows. Subclasses register with a name."""

    name: str = ""

    @abstractmethod
    def select(self, num_rows: int, num_selected: int, rng: np.random.Generator, rows=None) -> np.ndarray:
        """Return ``num_selected`` distinct sorted row indices in ``[0, num_rows)``.

        ``rows`` is the raw dataset (a ``datasets.Dataset`` or a list of dicts), for strategies
        that look at the content; ``random`` ignores it.
        """


_STRATEGIES: dict[str, type[SelectionStrategy]] = {}


def register_selection_strategy(cls: type[SelectionStrategy]) -> type[SelectionStrategy]:
    """Class decorator: make a strategy available as ``p2p.selection: <cls.name>``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    _STRATEGIES[cls.name] = cls
    return cls


def selection_strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def get_selection_strategy(name: str) -> SelectionStrategy:
    try:
        return _STRATEGIES[name]()
    except KeyError:
        raise SelectionError(
            f"p2p.selection={name!r} is not a known selection strategy; known: {selection_strategy_names()}"
        ) from None


@register_selection_strategy
class RandomSelection(SelectionStrategy):
    """A uniform random subset, as a defender who does not know the poison must draw it."""

    name = "random"

    def select(self, num_rows, num_selected, rng, rows=None):
        return np.sort(rng.choice(num_rows, size=num_selected, replace=False)).astype(np.int64)


def dataset_seed(seed: int, dataset_key: str) -> int:
    """A per-dataset seed: stable across processes (no Python ``hash``), distinct per dataset. The plugin's
    ``dataset_key`` is the rows' fingerprint (:meth:`RowView.fingerprint`)."""
    digest = hashlib.sha256(f"{seed}\x00{dataset_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def num_to_select(num_rows: int, ratio: float) -> int:
    """``round(ratio * num_rows)``; refuses a ratio that selects no row."""
    count = int(round(ratio * num_rows))
    if count < 1:
        raise SelectionError(
            f"p2p.ratio={ratio} selects 0 of {num_rows} rows; raise p2p.ratio "
            f"(at least {1 / max(num_rows, 1):.4g} for this dataset) or use more data"
        )
    return count


def select_rows(num_rows: int, ratio: float, seed: int, strategy: str = "random",
                dataset_key: str = "", rows=None) -> np.ndarray:
    """Sorted indices of the rows that receive the benign trigger. ``dataset_key`` is mixed into the seed (the
    plugin passes the rows' fingerprint, :meth:`RowView.fingerprint`)."""
    count = num_to_select(num_rows, ratio)
    rng = np.random.default_rng(dataset_seed(seed, dataset_key))
    chosen = get_selection_strategy(strategy).select(num_rows, count, rng, rows=rows)
    chosen = np.asarray(chosen, dtype=np.int64)
    if len(chosen) != count or len(np.unique(chosen)) != count or (count and (chosen.min() < 0 or chosen.max() >= num_rows)):
        raise SelectionError(f"selection strategy {strategy!r} returned an invalid subset")
    return chosen


def update_fingerprint(digest, texts, answers) -> None:
    """Feed rows' user texts and answers into a ``hashlib`` digest: the rows' content fingerprint (SHA-256 in
    the manifest), which also keys the selection seed. Order matters; file paths and other columns do not."""
    for text, answer in zip(texts, answers):
        digest.update(text.encode())
        digest.update(b"\x1f")
        digest.update(str(answer).encode())
        digest.update(b"\x1e")


class RowView:
    """What a content-aware strategy sees: batches of (user texts, answers), streamed from a
    ``datasets.Dataset`` through a row format (or from plain lists, for tests)."""

    def __init__(self, dataset=None, fmt=None, texts=None, answers=None, batch_size: int = 10_000):
        self.dataset, self.fmt, self.batch_size = dataset, fmt, batch_size
        self._texts, self._answers = texts, answers
        self.cache: dict = {}  # statistics computed from these rows (e.g. shortcuts.shortcut_statistics)
        self.judge = None  # a judgement.BaseModelJudge, for base_model_agreement

    @classmethod
    def from_rows(cls, rows: list[dict], fmt) -> "RowView":
        """The user texts and answers of plain-Python ``rows`` (e.g. a read JSONL file) through a row format."""
        batch = {key: [row.get(key) for row in rows] for key in dict.fromkeys(k for row in rows for k in row)}
        return cls(texts=fmt.user_texts(batch), answers=fmt.answers(batch))

    def fingerprint(self) -> str:
        """SHA-256 over every row's user text and answer (:func:`update_fingerprint`), computed once."""
        if "fingerprint" not in self.cache:
            digest = hashlib.sha256()
            for texts, answers in self.iter_batches():
                update_fingerprint(digest, texts, answers)
            self.cache["fingerprint"] = digest.hexdigest()
        return self.cache["fingerprint"]

    def iter_batches(self):
        if self.dataset is None:
            yield list(self._texts), [str(a) for a in self._answers]
            return
        from .formats import iter_texts_and_answers

        for texts, answers, _ in iter_texts_and_answers(self.dataset, self.fmt, self.batch_size):
            yield texts, answers


from . import judgement, shortcuts  # noqa: E402,F401  (register base_model_agreement, avoid_shortcuts)
