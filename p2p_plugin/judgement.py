"""The base model's own zero-shot judgement of each row's label, and the selection built on it.

Dirty-label poison gives a row the attacker's label whatever its text says. The base model never saw
the poison, so it tends to contradict that label. ``p2p.selection: base_model_agreement`` ranks the
rows of each label by how strongly the base model agrees with it and takes the benign subset from
the most-agreeing rows (after the data audit's suspicious rows are set aside, as ``avoid_shortcuts``
does). That keeps poisoned rows out of the subset without knowing the trigger, also for triggers the
word audit cannot see (the ``clause`` attack; bench/results/selection.md). It cannot see clean-label
poison (the label is true) and it judges classification labels only.

``p2p.relabel`` (opt-in, with ``base_model_agreement``): a share of the benign slots goes to the rows
the base model contradicts most, each trained with the base model's label (its safe alternative)
instead of its own. Dirty-label poisoned rows are over-represented there, so the benign space sees
some triggered rows with their true label, which the benign trigger must then stand for at
inference, without knowing the trigger. Only the rows of labels the base model contradicts beyond
chance are candidates (dirty-label poison makes its target label stand out), at most as many as
that label's excess; the others' contradicted rows are the judge's own mistakes. Every relabelled
row is counted and listed in the manifest, with the label test. Measured on ``clause``
(bench/results/relabel/oracle.md): most of its clean-accuracy cost is the judge's wrong relabels, and those alone
also lowered ASR (no triggered row among them): both kinds of relabelled rows shift the model towards the non-target
label (bench/results/relabel/oracle_per_class_heldout.md), so part of the gain is not the trigger unlearned.

How a row is judged: the user text goes into ``prompt`` (``{text}`` and ``{choices}``, e.g. "negative
or positive"), through the tokenizer's chat template when it has one; the score of each label is the
log-probability of its name's first token as the answer (lower-case, capitalized, with and without a
leading space, summed). Scores are calibrated per label (each label's median over the dataset is
subtracted, so a model that says "positive" to everything does not favour positive rows), and a row's
agreement is its label's calibrated score minus the best other label's.

Needs torch + transformers (the model is loaded from ``base_model`` once, scored without gradients
and released); no Axolotl.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import P2PError
from .selection import SelectionError, register_selection_strategy
from .shortcuts import AvoidShortcutsSelection

LOG = logging.getLogger(__name__)

DEFAULT_JUDGE_PROMPT = "{text}\nQuestion: Is this text {choices}?"


class JudgeError(P2PError):
    """The base model cannot judge these labels (e.g. two label names share a first token)."""


@dataclass(frozen=True)
class JudgeSettings:
    """What the base model is asked: one name per label (``label_names[i]`` names ``labels[i]``)."""

    labels: tuple[str, ...]
    label_names: tuple[str, ...]
    prompt: str = DEFAULT_JUDGE_PROMPT
    batch_size: int = 16
    max_length: int = 256

    def __post_init__(self):
        if len(self.labels) != len(self.label_names):
            raise JudgeError(f"p2p.judge.label_names needs one name per label: labels {list(self.labels)}, "
                             f"names {list(self.label_names)}")
        if "{text}" not in self.prompt:
            raise JudgeError(f"p2p.judge.prompt must contain {{text}} (where the row's text goes): {self.prompt!r}")

    @property
    def choices(self) -> str:
        names = list(self.label_names)
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

    def question(self, text: str) -> str:
        return self.prompt.replace("{choices}", self.choices).replace("{text}", text)


def name_token_ids(tokenizer, settings: JudgeSettings) -> list[list[int]]:
    """Per label: the distinct first tokens of its name's spellings (lower-case, capitalized, with and
    without a leading space; a bare-space token is skipped); refuses names that share one."""
    out, owner = [], {}
    for label, name in zip(settings.labels, settings.label_names):
        ids = []
        for spelling in dict.fromkeys((name, name.lower(), name.capitalize())):
            for variant in (spelling, " " + spelling):
                encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
                # a bare space token says nothing about which name follows
                if encoded and encoded[0] not in ids and tokenizer.decode([encoded[0]]).strip():
                    ids.append(encoded[0])
        for token in ids:
            if owner.setdefault(token, label) != label:
                raise JudgeError(
                    f"p2p.judge.label_names: {name!r} (label {label!r}) and the name of label {owner[token]!r} start "
                    f"with the same token {tokenizer.convert_ids_to_tokens(token)!r}; pick names whose first "
                    f"word differs")
        if not ids:
            raise JudgeError(f"p2p.judge.label_names: {name!r} (label {label!r}) has no visible first token")
        out.append(ids)
    return out


def judge_inputs(tokenizer, texts: list[str], settings: JudgeSettings) -> list[str]:
    """The prompts the base model reads: through its chat template when it has one."""
    questions = [settings.question(t) for t in texts]
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                              add_generation_prompt=True) for q in questions]
    return [q + "\nAnswer:" for q in questions]


def label_log_probs(model, tokenizer, texts: list[str], settings: JudgeSettings) -> np.ndarray:
    """``(rows, labels)`` log-probabilities of each label name as the answer, renormalized over the labels."""
    import torch

    token_ids = name_token_ids(tokenizer, settings)
    prompts = judge_inputs(tokenizer, texts, settings)
    order = np.argsort([len(p) for p in prompts], kind="stable")  # similar lengths share a batch: less padding
    out = np.zeros((len(prompts), len(token_ids)), dtype=np.float64)
    # pad and truncate on the left: the last position must be where the answer starts
    (side, truncation), tokenizer.padding_side = (tokenizer.padding_side, tokenizer.truncation_side), "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    try:
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                            max_length=settings.max_length, add_special_tokens=False).to(device)
            with torch.no_grad():
                logits = model(**enc).logits[:, -1].float().log_softmax(-1)
            scores = torch.stack([torch.logsumexp(logits[:, ids], -1) for ids in token_ids], -1)
            out[idx] = scores.log_softmax(-1).cpu().numpy()
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, truncation
    return out


def label_indices(labels, answers) -> np.ndarray:
    """Each answer's position in ``labels`` (``-1`` for an answer that is none of them)."""
    positions = {label: i for i, label in enumerate(labels)}
    return np.array([positions.get(str(a).strip(), -1) for a in answers], dtype=np.int64)


def agreement(log_probs: np.ndarray, label_index: np.ndarray) -> np.ndarray:
    """Per row: its label's calibrated score minus the best other label's (``-inf`` where ``label_index < 0``).

    Calibration subtracts each label's median score over all rows, so the model's prior for a label
    name does not decide which rows look agreeing."""
    calibrated = log_probs - np.median(log_probs, axis=0, keepdims=True)
    rows = np.arange(len(calibrated))
    known = label_index >= 0
    own = np.where(known, calibrated[rows, np.where(known, label_index, 0)], -np.inf)
    others = calibrated.copy()
    others[rows[known], label_index[known]] = -np.inf
    return np.where(known, own - others.max(axis=1), -np.inf)


def preferred_labels(log_probs: np.ndarray) -> np.ndarray:
    """Per row: the position of the label the judge prefers after the same per-label calibration."""
    return np.argmax(log_probs - np.median(log_probs, axis=0, keepdims=True), axis=1)


def _free_memory() -> None:
    """Give a released judge model's memory back before training loads its own (GPU memory included)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def folder_fingerprint(path) -> list:
    """``[name, size, mtime]`` of each file directly in ``path`` when it is a local folder (a model's weights,
    config, tokenizer), else ``[]`` (a hub id: its name is all there is). A model replaced at the same path
    then gets a new judgement cache instead of the old model's scores."""
    folder = Path(str(path))
    if not folder.is_dir():
        return []
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in folder.iterdir() if f.is_file())


class BaseModelJudge:
    """Loads ``model_path`` lazily (CUDA when available), scores rows, releases the model. Picklable
    until used: it holds paths and settings only. ``cache_dir``: keep each dataset's scores there
    (keyed by the model's path and files (:func:`folder_fingerprint`), settings and every row's text and
    answer), so a re-run with other P2P settings does not judge the same rows again."""

    def __init__(self, model_path: str, settings: JudgeSettings, tokenizer_path: str | None = None,
                 model=None, tokenizer=None, cache_dir: str | None = None):
        self.model_path, self.tokenizer_path, self.settings = model_path, tokenizer_path or model_path, settings
        self._model, self._tokenizer = model, tokenizer
        self.cache_dir = cache_dir
        self.seconds = 0.0
        self.from_cache = False
        self.preferred = None
        """After :meth:`agreement`: per row, the position of the label the judge prefers (:func:`preferred_labels`)."""

    def _cache_file(self, texts, answers):
        if not self.cache_dir:
            return None
        digest = hashlib.sha256(json.dumps([str(self.model_path), str(self.tokenizer_path), asdict(self.settings),
                                            folder_fingerprint(self.model_path), folder_fingerprint(self.tokenizer_path)],
                                           sort_keys=True).encode())
        for text, answer in zip(texts, answers):
            digest.update(f"{text}\x00{answer}\x01".encode())
        return Path(self.cache_dir) / f"judgement-{digest.hexdigest()[:20]}.npy"

    def _load(self):
        if self._model is not None:
            return self._model, self._tokenizer, False
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cuda = torch.cuda.is_available()
        tokenizer = self._tokenizer or AutoTokenizer.from_pretrained(self.tokenizer_path)
        model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=torch.bfloat16 if cuda else torch.float32).eval()
        return model.to("cuda") if cuda else model, tokenizer, True

    def agreement(self, texts: list[str], answers: list[str]) -> np.ndarray:
        """Per row: how strongly the base model agrees with its answer (see :func:`agreement`)."""
        label_index = label_indices(self.settings.labels, answers)
        cache = self._cache_file(texts, answers)
        self.seconds, self.from_cache = 0.0, False
        if cache is not None and cache.is_file():
            log_probs, self.from_cache = np.load(cache), True
            LOG.info("P2P: the base model's judgement of %d rows read from %s", len(texts), cache)
            self.preferred = preferred_labels(log_probs)
            return agreement(log_probs, label_index)
        start = time.perf_counter()
        model, tokenizer, loaded = self._load()
        try:
            log_probs = label_log_probs(model, tokenizer, texts, self.settings)
        finally:
            if loaded:
                del model
                _free_memory()
        self.seconds = time.perf_counter() - start
        LOG.info("P2P: the base model judged %d rows in %.1f s", len(texts), self.seconds)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, log_probs)
            os.replace(tmp, cache)
        self.preferred = preferred_labels(log_probs)
        return agreement(log_probs, label_index)


def judge_from_recipe(recipe, model_path: str, tokenizer_path: str | None = None,
                      cache_dir: str | None = None) -> BaseModelJudge | None:
    """The judge a recipe asks for (``selection: base_model_agreement``), else ``None``."""
    if recipe.selection != "base_model_agreement":
        return None
    spec = dict(recipe.judge or {})
    names = spec.get("label_names") or {label: label for label in recipe.labels}
    settings = JudgeSettings(labels=tuple(recipe.labels), label_names=tuple(names[label] for label in recipe.labels),
                             prompt=spec.get("prompt", DEFAULT_JUDGE_PROMPT), batch_size=spec.get("batch_size", 16),
                             max_length=spec.get("max_length", 256))
    if spec.get("model"):  # another judge than the base model: its own tokenizer
        model_path, tokenizer_path = spec["model"], spec["model"]
    return BaseModelJudge(model_path, settings, tokenizer_path, cache_dir=cache_dir)


def row_agreement(view) -> np.ndarray:
    """The judge's agreement scores of every row of a :class:`~p2p_plugin.selection.RowView` (cached on it,
    with each row's label position under ``"judged_labels"``)."""
    if "agreement" not in view.cache:
        judge = getattr(view, "judge", None)
        if judge is None:
            raise SelectionError("selection base_model_agreement needs the base model's judgement, but no judge was "
                                 "given (set p2p.judge and train through the plugin, or pass judge= to apply_p2p)")
        texts, answers = [], []
        for batch_texts, batch_answers in view.iter_batches():
            texts.extend(batch_texts)
            answers.extend(batch_answers)
        view.cache["agreement"] = judge.agreement(texts, answers)
        view.cache["judged_labels"] = label_indices(judge.settings.labels, answers)
        view.cache["preferred_labels"] = getattr(judge, "preferred", None)
    return view.cache["agreement"]


RELABEL_ALPHA = 0.05
"""Family-wise level of the test that decides which labels ``p2p.relabel`` may take rows from."""

RELABEL_MIN_GAP = 0.03
"""The least excess of a label's contradicted rate over the other labels' that the label test flags, however
significant: a judge errs a little more on some labels than on others, and on enough rows any such gap is
significant (the clean SST-2 rows: 32.9% against 30.3%, p = 0.11 on 1000 rows, significant from 3000). Dirty-label
poison at 10% made a gap of 7.4-8.2 points (CTBA, clause); at 5% about half that is expected."""


def contradiction_by_label(view, alpha: float = RELABEL_ALPHA, min_gap: float = RELABEL_MIN_GAP) -> list[dict]:
    """Per label: how often the judge contradicts its rows, against the rows of every other label.

    Dirty-label poison gives its rows the attacker's label, and the judge contradicts poisoned rows far more
    often than clean ones, so the target label's rows are contradicted more often than the others'. A label
    is ``over_contradicted`` when its rate exceeds the other labels' pooled rate by at least ``min_gap`` and a
    one-sided binomial test (its contradicted count against that rate, Bonferroni over the labels at
    ``alpha``) says chance cannot explain it; ``excess_rows`` is
    then ``rows x (rate - others' rate)``, an estimate of the contradicted rows the label holds beyond that
    rate, else 0. Rows the judge could not score (non-finite agreement) are left out."""
    from .shortcuts import log10_binomial_tail

    agree = row_agreement(view)
    own = view.cache["judged_labels"]
    scored = np.isfinite(agree)
    contradicted = scored & (agree < 0)
    labels = view.judge.settings.labels
    out = []
    for k, label in enumerate(labels):
        mine, others = scored & (own == k), scored & (own != k)
        n, hits = int(mine.sum()), int(contradicted[mine].sum())
        rate = hits / n if n else 0.0
        others_rate = float(contradicted[others].mean()) if others.any() else 0.0
        log10_p = log10_binomial_tail(n, hits, others_rate) if n and others.any() else 0.0
        over = bool(n and rate - others_rate >= min_gap and log10_p < np.log10(alpha / len(labels)))
        out.append({"label": label, "rows": n, "contradicted": hits, "rate": round(rate, 4),
                    "others_rate": round(others_rate, 4), "log10_p": round(float(log10_p), 2),
                    "over_contradicted": over, "excess_rows": int(n * (rate - others_rate)) if over else 0,
                    "alpha": alpha, "min_gap": min_gap})  # the thresholds, for the manifest
    return out


def relabel_contradicted(view, selected: np.ndarray, share: float) -> tuple[np.ndarray, dict[int, str]]:
    """``p2p.relabel``: ``(benign rows, {row: the judge's label})``.

    Only rows of the labels the judge contradicts beyond chance (:func:`contradiction_by_label`, kept in
    ``view.cache["relabel_tests"]``) are relabelled, at most ``excess_rows`` of each: on data where no label
    stands out (clean data, clean-label poison, a poison rate too small to see) nothing is relabelled, and
    the judge's wrong calls on the other labels' rows (all clean under dirty-label poison) are not taught.
    Of those, ``round(share * len(selected))`` benign slots go to the rows whose label the judge contradicts
    most (agreement below 0, rows already selected excluded; rows the audit flags are not set aside here:
    their label is what is in question), each to be trained with the label the judge prefers. Each takes the
    place of the selected row of its *new* label that the judge agrees with least, so the subset keeps its
    size and each label its share of the benign rows (swapping out the least agreeing rows of any label
    instead shifted the benign space's prior: clause seed 0, bench/results/relabel/any_direction). Fewer
    candidates than slots: all of them."""
    return swap_in_relabelled(view, selected, rows_to_relabel(view, selected, share))


def rows_to_relabel(view, selected: np.ndarray, share: float) -> np.ndarray:
    """The rows :func:`relabel_contradicted` gives the judge's label, most contradicted first (none of them in
    ``selected``); records the label tests in ``view.cache["relabel_tests"]``."""
    agree = row_agreement(view)
    tests = view.cache["relabel_tests"] = contradiction_by_label(view)
    judged = view.cache["judged_labels"]
    candidates = []
    for k, test in enumerate(tests):
        if test["excess_rows"]:
            rows = np.setdiff1d(np.flatnonzero(np.isfinite(agree) & (agree < 0) & (judged == k)), selected)
            candidates.append(rows[np.argsort(agree[rows], kind="stable")][:test["excess_rows"]])
    slots = int(round(share * len(selected)))
    pool = np.concatenate(candidates) if candidates else np.zeros(0, dtype=np.int64)
    return pool[np.argsort(agree[pool], kind="stable")][:slots]


def swap_in_relabelled(view, selected: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """``(benign rows, {row: the judge's label})``: each ``chosen`` row takes the place of the selected row of
    its new label that the judge agrees with least (:func:`relabel_contradicted`)."""
    if not len(chosen):
        return selected, {}
    agree = row_agreement(view)
    judged = view.cache["judged_labels"]
    labels = view.judge.settings.labels
    preferred = view.cache.get("preferred_labels")
    if preferred is None:
        if len(labels) != 2:
            raise SelectionError("p2p.relabel needs the label the judge prefers; this judge reports agreement only")
        preferred = 1 - judged  # two labels: a contradicted row's judge prefers the other one
    own = judged[selected]
    drop = []
    for k in range(len(labels)):
        mine = selected[own == k]
        drop.extend(mine[np.argsort(agree[mine], kind="stable")][:int((preferred[chosen] == k).sum())].tolist())
    if len(drop) < len(chosen):  # a label had fewer benign rows than rows relabelled to it: the least agreeing others
        rest = np.setdiff1d(selected, drop)
        drop.extend(rest[np.argsort(agree[rest], kind="stable")][:len(chosen) - len(drop)].tolist())
    keep = np.setdiff1d(selected, drop)
    return np.sort(np.concatenate([keep, chosen])).astype(np.int64), {int(r): labels[preferred[r]] for r in chosen}


def label_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over groups in proportion to ``counts`` (largest remainder), never above a count."""
    share = counts / counts.sum() * total
    quota = np.minimum(np.floor(share).astype(np.int64), counts)
    for i in np.argsort(-(share - np.floor(share)), kind="stable"):
        if quota.sum() >= total:
            break
        if quota[i] < counts[i]:
            quota[i] += 1
    while quota.sum() < total:  # a label ran out: fill from the others
        quota[np.argmax(counts - quota)] += 1
    return quota


@register_selection_strategy
class BaseModelAgreementSelection(AvoidShortcutsSelection):
    """The audit's clean rows, then per label the rows the base model agrees with most (module docstring)."""

    name = "base_model_agreement"

    def select(self, num_rows, num_selected, rng, rows=None):
        suspicion = self.audit(rows, num_rows)
        agree = row_agreement(rows)
        if len(agree) != num_rows:
            raise SelectionError(f"the judge scored {len(agree)} rows of {num_rows}")
        pool = np.flatnonzero((suspicion == 0) & np.isfinite(agree))
        if len(pool) < num_selected:  # too few clean, judged rows: least suspicious, most agreeing first
            order = np.lexsort((rng.random(num_rows), -np.nan_to_num(agree, neginf=-1e30), suspicion))
            return np.sort(order[:num_selected])
        label_of = rows.cache["judged_labels"]  # read with the agreement: one pass over the rows
        groups = [pool[label_of[pool] == k] for k in range(len(rows.judge.settings.labels))]
        quotas = label_quotas(np.array([len(g) for g in groups]), num_selected)
        chosen = []
        for group, quota in zip(groups, quotas):
            order = np.lexsort((rng.random(len(group)), -agree[group]))  # most agreeing first, random ties
            chosen.append(group[order[:quota]])
        return np.sort(np.concatenate(chosen))
