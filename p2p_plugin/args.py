"""The ``p2p:`` config block: the single source of the plugin's defaults.

Merged into Axolotl's config schema through ``P2PPlugin.get_input_args``; ``axolotl
config-schema`` shows every field with its description.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .labels import LabelError, LabelSpace
from .judgement import DEFAULT_JUDGE_PROMPT
from .recipe import P2PRecipe
from .selection import AUDITING_SELECTIONS, selection_strategy_names
from .triggers import DEFAULT_TRIGGER

#: generation: what the benign rows' answers start with
DEFAULT_SAFE_PREFIX = "Safe response:\n"


class P2PEvalConfig(BaseModel):
    """Live CA / ASR during training on small held-out clean and triggered sets (plain format rows)."""

    model_config = ConfigDict(extra="forbid")

    clean: str = Field(description="JSON/JSONL file of clean test rows ({text_field, label_field}).")
    triggered: str = Field(description="JSON/JSONL file of triggered non-target test rows (e.g. from `p2p attack`).")
    target: str = Field(description="The attacker's target label (for ASR).")
    steps: int = Field(default=50, ge=1, description="Evaluate every this many optimizer steps (and at the end).")
    max_rows: int = Field(default=64, ge=1, description="Rows used from each file (keeps it cheap).")
    batch_size: int = Field(default=16, ge=1, description="Inference batch size.")

    @field_validator("target", mode="before")
    @classmethod
    def _target_as_string(cls, value):
        return str(value)


class P2PJudgeConfig(BaseModel):
    """What the base model is asked when ``selection: base_model_agreement`` judges each row's label."""

    model_config = ConfigDict(extra="forbid")

    label_names: dict[str, str] | None = Field(
        default=None,
        description="The word the base model reads for each label, e.g. {'0': negative, '1': positive}. "
        "Default: the labels themselves (fine for named labels; digits mean nothing to the model).",
    )
    prompt: str = Field(
        default=DEFAULT_JUDGE_PROMPT,
        description="The question, with {text} (the row's user text) and optionally {choices} (the label "
        "names, 'a, b or c'); sent through the tokenizer's chat template when it has one.",
    )
    model: str | None = Field(
        default=None,
        description="The judging model (a local folder or hub id); default: base_model. A smaller instruct model "
        "of the same family judges a big base model's data at a fraction of the cost.",
    )
    batch_size: int = Field(default=16, ge=1, description="Rows per forward pass of the judge.")
    max_length: int = Field(default=256, ge=8, description="Prompt tokens kept (longer prompts lose their start).")

    @field_validator("label_names", mode="before")
    @classmethod
    def _names_as_strings(cls, value):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"must map each label to a name, e.g. {{'0': negative, '1': positive}}; got {value!r}")
        return {str(k): str(v) for k, v in value.items()}


class P2PConfig(BaseModel):
    """Settings of the P2P (Poison-to-Poison) backdoor defense."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="False keeps the P2P prompt format but selects no row: the no-defense baseline, "
        "trained and evaluated exactly like the defended model.",
    )
    task: Literal["classification", "generation"] = Field(
        default="classification",
        description="classification: the selected rows' label i becomes its safe alternative (i -> i+n); "
        "generation: the selected rows' answer y becomes safe_prefix + y.",
    )
    ratio: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="Share of each dataset's rows that get the benign trigger (the authors' rho).",
    )
    mode: Literal["replace", "augment"] = Field(
        default="replace",
        description="replace: selected rows are rewritten (row count unchanged, the authors' code); "
        "augment: rewritten copies are added after the original rows.",
    )
    selection: str = Field(
        default="avoid_shortcuts",
        description="How the benign subset is chosen (a registered selection strategy). "
        "avoid_shortcuts (default): a seeded random subset of the rows that hold no label shortcut, "
        "which keeps trigger rows out of it without knowing the trigger; base_model_agreement "
        "(classification): the same clean rows, then per label the ones whose label the base model's "
        "zero-shot judgement agrees with most (see p2p.judge), which also keeps out dirty-label poison "
        "whose trigger the audit cannot see; random: a seeded uniform subset, so poisoned rows land in it "
        "at the poison rate (which defeats P2P, bench/results).",
    )
    judge: P2PJudgeConfig | None = Field(
        default=None,
        description="selection: base_model_agreement: how the base model is asked about each row's label.",
    )
    decoys: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of the benign rows that also get decoys: the suspected trigger words of a "
        "random suspicious row (words avoid_shortcuts flags whose purity chance cannot explain, "
        "Bonferroni-tested) with two words either side, inserted at random word positions, so the "
        "benign space sees suspected triggers with every answer. Needs "
        "selection: avoid_shortcuts. Training only; 0 (default) turns it off.",
    )
    relabel: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="selection: base_model_agreement only. Share of the benign rows given to the rows whose label "
        "the base model contradicts most (not selected otherwise), each trained with the label the base model "
        "prefers (its safe alternative) instead of its own: dirty-label poisoned rows are over-represented "
        "there, so the benign space sees triggered rows with their true label, whatever the trigger. Only "
        "labels whose rows the base model contradicts beyond chance (a binomial test against the other "
        "labels, and by at least 3 points) give up rows, at most their excess: on data where no label stands "
        "out nothing changes. "
        "Changes those rows' training labels (counted, listed in p2p_manifest.json); the base model's wrong "
        "calls become wrong benign labels. 0 (default) turns it off.",
    )
    drop_suspected_rows: bool = Field(
        default=False,
        description="Leave out of training every row that holds a trigger the data audit lists (a word or opening "
        "that predicts one answer beyond chance, Bonferroni-tested) with the answer it predicts: the rows that make "
        "up the shortcut, poisoned ones included, and any clean row that happens to fit it. Counted per trigger and "
        "listed in p2p_manifest.json; rows of other answers stay. Needs selection: avoid_shortcuts or "
        "base_model_agreement (the audit). Works with enabled: false too (the audit alone, no benign rows). "
        "False (default): every row is trained.",
    )
    trigger: str = Field(
        default=DEFAULT_TRIGGER, min_length=1,
        description="The benign trigger text, inserted verbatim (keep its trailing space for a prefix).",
    )
    extra_triggers: list[str] = Field(
        default_factory=list,
        description="classification: further benign triggers (experimental). The benign rows are dealt out in "
        "turn over [trigger, *extra_triggers], each trigger with the same safe labels, and at inference the "
        "model is read once with each trigger and its label probabilities averaged (one model, a vote over "
        "triggers). Each must be visible text, distinct, and neither may contain another. Empty (default): one trigger.",
    )
    placement: Literal["prefix", "suffix", "system"] = Field(
        default="prefix",
        description="Where the benign trigger goes: prefix/suffix of the user input, or the system "
        "message (chat data only).",
    )
    seed: int = Field(default=42, description="Seed of the row selection (per dataset, mixed with a fingerprint of its rows).")
    labels: list[str] | None = Field(
        default=None,
        description="classification: the verbalized classes exactly as they appear in the data's answers, "
        'e.g. ["0", "1"]. Required for classification.',
    )
    safe_labels: list[str] | None = Field(
        default=None,
        description="classification: the safe alternative of each label (same order). Default for "
        "integer-like labels: i -> i + (max label + 1), i.e. i -> i+n for 0..n-1; required for named labels.",
    )
    cue: str = Field(
        default="Output: ",
        description="plain format only: answer cue of ordinary rows; the prompt is '{x}\\n{cue}'.",
    )
    benign_cue: str = Field(
        default="Answer: ",
        description="plain format only: answer cue of rows that carry the benign trigger.",
    )
    text_field: str = Field(default="sentence", description="plain format: the column holding the input text.")
    label_field: str = Field(default="label", description="plain format: the column holding the label / answer.")
    safe_prefix: str = Field(
        default=DEFAULT_SAFE_PREFIX, min_length=1,
        description="generation: the text put before the selected rows' answers (y -> safe_prefix + y). "
        "The default ends with a newline so that BPE never merges it with the answer's first word.",
    )

    eval: P2PEvalConfig | None = Field(
        default=None,
        description="Optional live evaluation: logs p2p/ca, p2p/asr (and the no-trigger fallback) to the "
        "trainer's loggers every `steps` steps.",
    )

    @field_validator("labels", "safe_labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value):
        if value is None:
            return None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a list of labels, got {value!r}")
        return [str(v) for v in value]

    @field_validator("selection")
    @classmethod
    def _known_selection(cls, value):
        if value not in selection_strategy_names():
            raise ValueError(f"unknown selection strategy {value!r}; known: {selection_strategy_names()}")
        return value

    @model_validator(mode="after")
    def _check_extra_triggers(self):
        if not self.extra_triggers:
            return self
        if self.task != "classification":
            raise ValueError("p2p.extra_triggers: several benign triggers are read as a vote over label "
                             "probabilities, which task: generation has none of; use one p2p.trigger")
        triggers = [self.trigger, *self.extra_triggers]
        for i, text in enumerate(self.extra_triggers):
            if not text.strip():
                raise ValueError(f"p2p.extra_triggers[{i}] must contain visible text, got {text!r}")
        for i, a in enumerate(triggers):
            for b in triggers[i + 1:]:
                if a.strip() in b or b.strip() in a:
                    raise ValueError(f"p2p.extra_triggers: the benign triggers {a!r} and {b!r} overlap (one "
                                     f"contains the other); each must be told apart from the rest")
        return self

    @model_validator(mode="after")
    def _check_decoys(self):
        if self.decoys and self.selection not in AUDITING_SELECTIONS:
            raise ValueError(f"p2p.decoys={self.decoys} needs p2p.selection: avoid_shortcuts or base_model_agreement "
                             f"(it cuts the decoys from the rows the audit flags), not {self.selection!r}")
        if self.drop_suspected_rows and self.selection not in AUDITING_SELECTIONS:
            raise ValueError(f"p2p.drop_suspected_rows needs p2p.selection: avoid_shortcuts or base_model_agreement "
                             f"(it drops the rows of the triggers the data audit lists), not {self.selection!r}")
        return self

    @model_validator(mode="after")
    def _check_judge(self):
        if self.relabel and self.selection != "base_model_agreement":
            raise ValueError(f"p2p.relabel={self.relabel} needs p2p.selection: base_model_agreement (it takes the "
                             f"base model's label), not {self.selection!r}")
        if self.selection != "base_model_agreement":
            if self.judge is not None:
                raise ValueError(f"p2p.judge is used by selection: base_model_agreement only, not {self.selection!r}")
            return self
        if self.task != "classification":
            raise ValueError("p2p.selection: base_model_agreement judges classification labels; task: generation "
                             "has none (use avoid_shortcuts)")
        judge = self.judge or P2PJudgeConfig()
        names = judge.label_names or {label: label for label in (self.labels or [])}
        missing = [label for label in (self.labels or []) if label not in names]
        extra = sorted(set(names) - set(self.labels or []))
        if missing or extra:
            raise ValueError(f"p2p.judge.label_names must name every label of p2p.labels {self.labels} and no other; "
                             f"missing {missing}, unknown {extra}")
        if all(name.strip().lstrip("-").isdigit() for name in names.values()):
            raise ValueError(f"p2p.judge.label_names: the base model cannot judge labels named {sorted(names.values())}; "
                             f"give words, e.g. label_names: {{'0': negative, '1': positive}}")
        self.judge = judge.model_copy(update={"label_names": names})
        return self

    @model_validator(mode="after")
    def _check_task(self):
        if self.task == "classification":
            if not self.labels:
                raise ValueError('p2p.labels is required for task: classification, e.g. labels: ["0", "1"]')
            try:
                space = LabelSpace.build(self.labels, self.safe_labels)
            except LabelError as err:
                raise ValueError(str(err)) from None
            self.safe_labels = list(space.safe_labels)
            if self.eval is not None and self.eval.target not in self.labels:
                raise ValueError(f"p2p.eval.target {self.eval.target!r} is not in p2p.labels {self.labels}")
        elif self.eval is not None:
            raise ValueError("p2p.eval (live CA/ASR) supports task: classification only; use `p2p eval` after training")
        elif not self.safe_prefix.strip():
            raise ValueError("p2p.safe_prefix must contain visible text for task: generation")
        return self

    def recipe(self) -> P2PRecipe:
        """The validated settings as the framework-free recipe (what the manifest stores)."""
        return P2PRecipe(
            task=self.task, enabled=self.enabled, trigger=self.trigger, extra_triggers=tuple(self.extra_triggers),
            placement=self.placement,
            cue=self.cue, benign_cue=self.benign_cue, labels=tuple(self.labels or ()),
            safe_labels=tuple(self.safe_labels or ()), safe_prefix=self.safe_prefix,
            text_field=self.text_field, answer_field=self.label_field, ratio=self.ratio,
            seed=self.seed, mode=self.mode, selection=self.selection, decoys=self.decoys, relabel=self.relabel,
            drop_suspected_rows=self.drop_suspected_rows,
            judge=self.judge.model_dump(mode="json") if self.judge is not None else {},
        )


class P2PArgs(BaseModel):
    """Top-level keys the plugin adds to Axolotl's config."""

    p2p: P2PConfig | None = Field(default=None, description="P2P backdoor defense settings.")
