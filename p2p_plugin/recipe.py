"""The P2P recipe: every setting that decides how a row is rewritten and how inference must
rebuild the prompt. Built from the validated ``p2p:`` config (the schema in ``args.py`` holds the
defaults), stored in ``p2p_manifest.json``, read back by inference and evaluation. Framework-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .labels import LabelSpace


@dataclass(frozen=True)
class P2PRecipe:
    """How P2P rewrites rows (training) and builds prompts (inference)."""

    task: str = "classification"
    """``classification`` (safe label ``i -> i+n``) or ``generation`` (safe prefix + answer)."""
    enabled: bool = True
    """False trains the same prompt format with no benign rows: the no-defense baseline."""
    trigger: str = "The query currently entered is: "
    extra_triggers: tuple[str, ...] = ()
    """Further benign triggers: the benign rows are dealt out over ``(trigger, *extra_triggers)`` in turn,
    and a classification model is read with each, its label probabilities averaged (see ``inference``)."""
    placement: str = "prefix"
    cue: str = "Output: "
    benign_cue: str = "Answer: "
    labels: tuple[str, ...] = ()
    safe_labels: tuple[str, ...] = ()
    safe_prefix: str = ""
    text_field: str = "sentence"
    answer_field: str = "label"
    ratio: float = 0.2
    seed: int = 42
    mode: str = "replace"
    selection: str = "avoid_shortcuts"
    decoys: float = 0.0
    """Share of the benign rows that also get decoy fragments (training only; see ``shortcuts``)."""
    relabel: float = 0.0
    """Share of the benign rows given to the rows the base model contradicts most, with its label (``judgement``)."""
    drop_suspected_rows: bool = False
    """Leave the rows that hold a trigger the data audit lists, with the answer it predicts, out of training
    (``shortcuts.rows_holding_suspects``; counted and listed in the manifest)."""
    judge: dict = field(default_factory=dict)
    """``selection: base_model_agreement``: the base model's question (``p2p.judge``, see ``judgement``)."""
    extra: dict = field(default_factory=dict)
    """Settings of later features (kept verbatim, so old manifests stay readable)."""

    @property
    def benign_triggers(self) -> tuple[str, ...]:
        """Every benign trigger: :attr:`trigger` first, then :attr:`extra_triggers`."""
        return (self.trigger, *self.extra_triggers)

    def label_space(self) -> LabelSpace | None:
        if self.task != "classification":
            return None
        return LabelSpace.build(self.labels, self.safe_labels or None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = list(self.labels)
        out["safe_labels"] = list(self.safe_labels)
        if self.extra_triggers:
            out["extra_triggers"] = list(self.extra_triggers)
        else:  # a one-trigger manifest stays readable by versions without extra_triggers
            del out["extra_triggers"]
        if not self.drop_suspected_rows:  # ... and one that keeps every row by versions without the option
            del out["drop_suspected_rows"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "P2PRecipe":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown P2P recipe keys {unknown}; known: {sorted(known)}")
        data = dict(data)
        data.setdefault("selection", "random")  # manifests written before `selection` existed drew at random
        for key in ("labels", "safe_labels", "extra_triggers"):
            if key in data and data[key] is not None:
                data[key] = tuple(str(v) for v in data[key])
        return cls(**data)
