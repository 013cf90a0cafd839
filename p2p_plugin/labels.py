"""Label spaces for classification: the original verbalizers and their safe alternatives.

P2P doubles the label space: class ``i`` may also be answered as its safe alternative ``i + n``
(same meaning, benign space). Framework-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import P2PError


class LabelError(P2PError):
    """A label set or a data row's label is not usable."""


def _is_int_like(label: str) -> bool:
    return label.lstrip("-").isdigit()


def derive_safe_labels(labels: list[str]) -> list[str]:
    """Default safe alternatives: integer-like labels ``i`` map to ``i + offset``.

    ``offset = max(labels) + 1``, which is ``n`` for the usual ``0..n-1`` (the authors' rule
    ``i -> i + n``) and keeps the two spaces disjoint for any other integer labels.
    Named labels have no natural alternative: the caller must give ``safe_labels``.
    """
    if not all(_is_int_like(lbl) for lbl in labels):
        named = [lbl for lbl in labels if not _is_int_like(lbl)]
        raise LabelError(
            f"p2p.labels contains named labels {named!r}: give their safe alternatives explicitly "
            f"in p2p.safe_labels (one per label, same order, distinct from every label), e.g. "
            f"safe_labels: {[lbl + ' (safe)' for lbl in labels]!r}; only integer-like labels get "
            f"the default i -> i + n"
        )
    offset = max(int(lbl) for lbl in labels) + 1
    return [str(int(lbl) + offset) for lbl in labels]


@dataclass(frozen=True)
class LabelSpace:
    """Original labels and their safe alternatives, position by position."""

    labels: tuple[str, ...]
    safe_labels: tuple[str, ...]

    @classmethod
    def build(cls, labels, safe_labels=None) -> "LabelSpace":
        labels = [str(lbl) for lbl in labels]
        if len(labels) < 2:
            raise LabelError(f"p2p.labels needs at least two classes, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise LabelError(f"p2p.labels has duplicates: {labels!r}")
        safe = [str(s) for s in safe_labels] if safe_labels is not None else derive_safe_labels(labels)
        if len(safe) != len(labels):
            raise LabelError(
                f"p2p.safe_labels must have one entry per label: {len(labels)} labels {labels!r}, "
                f"{len(safe)} safe labels {safe!r}"
            )
        if len(set(safe)) != len(safe):
            raise LabelError(f"p2p.safe_labels has duplicates: {safe!r}")
        clash = sorted(set(safe) & set(labels))
        if clash:
            raise LabelError(f"p2p.safe_labels {clash!r} also appear in p2p.labels; the two spaces must be disjoint")
        return cls(tuple(labels), tuple(safe))

    @property
    def all_labels(self) -> tuple[str, ...]:
        """Original then safe labels: the doubled label space the model is trained on."""
        return self.labels + self.safe_labels

    def safe(self, label: str) -> str:
        """The safe alternative of an original label."""
        return self.safe_labels[self.labels.index(label)]

    def project(self, label: str) -> str:
        """Map a prediction back to the original space (safe ``i + n`` -> ``i``)."""
        if label in self.safe_labels:
            return self.labels[self.safe_labels.index(label)]
        return label

    def normalize(self, value) -> str:
        """The data's label as one of ``labels``; raise :class:`LabelError` when it is not one."""
        text = str(value).strip()
        if text not in self.labels:
            raise LabelError(f"label {value!r} is not in p2p.labels {list(self.labels)!r}")
        return text
