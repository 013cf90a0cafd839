"""The P2P dataset transform: raw rows -> selected? -> rewritten (trigger, safe target).

Works on a ``datasets.Dataset`` with batched ``map`` (Arrow in, Arrow out). The selection is
computed once, up front, from the seed; the map only looks rows up in a boolean mask, so the
result does not depend on ``num_proc``. Labels are validated in one streaming pass before the map,
in the calling process, so a bad row fails with one clear message naming the row.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from .errors import P2PError
from .formats import Rewrite, RowError, RowFormat, decode_batch, encode_batch, iter_texts_and_answers, replace_answer
from .labels import LabelError
from .recipe import P2PRecipe
from .selection import AUDITING_SELECTIONS, RowView, dataset_seed, select_rows, update_fingerprint
from .shortcuts import assign_decoys, audit_rows, rows_holding_suspects
from .triggers import count_rows_containing

LOG = logging.getLogger(__name__)

SCAN_BATCH = 10_000


class DataError(P2PError):
    """The data cannot be transformed; the message names the source and the row."""


@dataclass
class TransformReport:
    """Rows in / selected / out, label histograms and a fingerprint of one dataset."""

    source: str
    format: str = ""
    """The row format (``plain``, ``alpaca``, ``chat_template``): inference builds its prompts with it."""
    rows_in: int = 0
    rows_selected: int = 0
    rows_out: int = 0
    mode: str = "replace"
    labels_before: dict = field(default_factory=dict)
    labels_after: dict = field(default_factory=dict)
    trigger_already_present: int = 0
    fingerprint: str = ""
    selected_digest: str = ""
    rows_with_decoys: int = 0
    """Benign rows that also got decoy fragments (``p2p.decoys``)."""
    decoy_sources: int = 0
    """Suspicious rows the decoy fragments were cut from (0: nothing looked like a shortcut)."""
    relabeled_rows: list = field(default_factory=list)
    """``p2p.relabel``: benign rows trained with the base model's label instead of their own (source indices)."""
    relabeled: dict = field(default_factory=dict)
    """... counted by change, e.g. ``{"1 -> 0": 40}``."""
    relabel_tests: list = field(default_factory=list)
    """... and per label, how often the judge contradicts its rows against the others' (which labels it may
    take rows from; :func:`p2p_plugin.judgement.contradiction_by_label`)."""
    rows_by_trigger: dict = field(default_factory=dict)
    """``p2p.extra_triggers``: benign rows per benign trigger (dealt out in turn; empty with one trigger)."""
    suspected_triggers: list = field(default_factory=list)
    """Words that predict one answer beyond chance (``selection: avoid_shortcuts`` / ``base_model_agreement``; dicts of
    :class:`p2p_plugin.shortcuts.SuspectedTrigger`): possible backdoor triggers, or very polar words."""
    rows_dropped: int = 0
    """``p2p.drop_suspected_rows``: rows left out of training (they hold a suspected trigger with its answer)."""
    dropped_rows: list = field(default_factory=list)
    """... their source indices."""
    dropped_by_trigger: dict = field(default_factory=dict)
    """... counted per suspected trigger (a row holding two counts for both)."""
    dropped_benign: int = 0
    """... of which the selection had put in the benign subset (their benign rows go too)."""
    rows_judge_contradicts: int | None = None
    """``selection: base_model_agreement``: rows whose label the base model's zero-shot judgement
    contradicts (a mix of hard, mislabelled and dirty-label poisoned rows)."""
    judge_seconds: float | None = None
    """... and the seconds it took the base model to judge every row (0 when read from its cache)."""
    judge_cached: bool | None = None
    """... and whether those scores came from the judgement cache (an earlier run on the same rows)."""
    tokens_out: int | None = None
    """Tokens in the tokenized output rows (before Axolotl's length filter)."""
    rows_too_long: int | None = None
    """Rows longer than ``sequence_len`` after tokenization (Axolotl drops or truncates them)."""
    triggered_too_long: int | None = None
    """... of which carry the benign trigger."""
    output_triggered: np.ndarray | None = field(default=None, repr=False)
    """Boolean mask over the output rows: which carry the benign trigger (not serialized)."""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "output_triggered"}

    def log(self, logger=LOG, **kwargs) -> None:
        logger.info(
            "P2P %s: rows in %d, selected %d (%s), rows out %d; labels before %s, after %s",
            self.source, self.rows_in, self.rows_selected, self.mode, self.rows_out,
            self.labels_before or "-", self.labels_after or "-", **kwargs,
        )
        if self.rows_by_trigger:
            logger.info("P2P %s: benign rows by trigger: %s", self.source,
                        ", ".join(f"{t!r}: {n}" for t, n in self.rows_by_trigger.items()), **kwargs)
        if self.suspected_triggers:
            logger.warning("P2P %s: %d word(s) or opening(s) (^: a text's first words) predict one answer beyond "
                           "chance (possible backdoor triggers, listed in p2p_manifest.json): %s", self.source, len(self.suspected_triggers),
                           ", ".join(f"{t['word']!r} -> {t['answer']} ({t['rows_with_answer']} of {t['rows']} rows"
                                     + (f", in {t['phrase']!r})" if t.get("phrase") else ")")
                                     for t in self.suspected_triggers[:10])
                           + (" ..." if len(self.suspected_triggers) > 10 else ""), **kwargs)
        if self.rows_dropped:
            logger.warning("P2P %s: p2p.drop_suspected_rows: %d of %d rows left out of training (each holds a "
                           "suspected trigger with the answer it predicts; listed in p2p_manifest.json): %s",
                           self.source, self.rows_dropped, self.rows_in,
                           ", ".join(f"{t!r}: {n}" for t, n in list(self.dropped_by_trigger.items())[:10])
                           + (" ..." if len(self.dropped_by_trigger) > 10 else ""), **kwargs)
        if self.rows_judge_contradicts is not None:
            how = "scores read from its cache" if self.judge_cached else f"judged in {self.judge_seconds or 0.0:.1f} s"
            logger.info("P2P %s: the base model contradicts the label of %d of %d rows (%s); the benign subset "
                        "holds the rows it agrees with most", self.source, self.rows_judge_contradicts, self.rows_in,
                        how, **kwargs)
        if self.relabel_tests:
            over = [t for t in self.relabel_tests if t["over_contradicted"]]
            logger.log(logging.INFO if over else logging.WARNING,
                       "P2P %s: p2p.relabel: %s", self.source,
                       "; ".join(f"label {t['label']!r}: the judge contradicts {t['rate']:.1%} of its {t['rows']} "
                                 f"rows against {t['others_rate']:.1%} of the other labels' (p = 10^{t['log10_p']:.1f}), "
                                 f"so up to {t['excess_rows']} of them may be relabelled" for t in over)
                       or "no label's rows are contradicted by the judge beyond chance, so no row is relabelled "
                          "(clean data, clean-label poison or too little poison to see)", **kwargs)
        if self.relabeled_rows:
            logger.warning("P2P %s: %d benign rows are trained with the base model's label instead of their own "
                           "(p2p.relabel; rows listed in p2p_manifest.json): %s", self.source, len(self.relabeled_rows),
                           ", ".join(f"{change}: {n}" for change, n in self.relabeled.items()), **kwargs)
        if self.rows_with_decoys:
            logger.info("P2P %s: %d benign rows got decoys cut from %d suspicious rows", self.source,
                        self.rows_with_decoys, self.decoy_sources, **kwargs)
        if self.rows_too_long:
            logger.warning(
                "P2P %s: %d rows (%d of them with the benign trigger) are longer than sequence_len after "
                "tokenization; Axolotl drops or truncates them (see excess_length_strategy)",
                self.source, self.rows_too_long, self.triggered_too_long or 0,
            )
        if self.trigger_already_present:
            logger.warning(
                "P2P %s: a benign trigger's text already occurs in %d rows; it weakens the defense "
                "(choose another p2p.trigger / p2p.extra_triggers)", self.source, self.trigger_already_present,
            )


def _new_answers(recipe: P2PRecipe, label_space, answers, selected, relabels=None):
    """The selected rows' new answers; ``relabels[i]`` (classification), when set, is the label whose safe
    alternative row ``i`` gets instead of its own (``p2p.relabel``)."""
    if recipe.task == "classification":
        relabels = relabels or [None] * len(answers)
        return [replace_answer(a, label_space.safe(r if r is not None else a.strip())) if s else None
                for a, s, r in zip(answers, selected, relabels)]
    return [recipe.safe_prefix + a if s else None for a, s in zip(answers, selected)]


class RowMapper:
    """Picklable batched map function (``with_indices=True``).

    Given a ``pyarrow.Table`` batch (the dataset in ``arrow`` format, used for every format whose
    untouched rows pass through unchanged), only the selected rows are converted to Python and
    rewritten; they are then put back in place with one ``take``, so the other rows are never
    decoded and stay the exact Arrow values they were.
    """

    def __init__(self, fmt: RowFormat, recipe: P2PRecipe, selected_mask: np.ndarray | None, source: str = "dataset",
                 features=None, decoys: dict | None = None, relabels: dict | None = None):
        self.source = source
        self.features = features
        self.fmt = fmt
        self.recipe = recipe
        self.label_space = recipe.label_space()
        self.selected_mask = selected_mask
        self.decoys = decoys or {}
        """``{row index in the mapped dataset: ((fragment, where), ...)}``"""
        self.relabels = relabels or {}
        """``{row index in the mapped dataset: the label whose safe alternative it gets}`` (``p2p.relabel``)"""
        self.rewrite = Rewrite(recipe.trigger, recipe.placement,
                               recipe.safe_prefix if recipe.task == "generation" else None)
        several = len(recipe.benign_triggers) > 1 and selected_mask is not None
        self.rank = np.cumsum(selected_mask) - 1 if several else None
        """With several benign triggers, each row's place among the selected rows (which trigger it gets,
        :meth:`_triggers`; augment copies need none: their index is their place)."""

    def _selected(self, indices) -> np.ndarray:
        if self.selected_mask is None:  # augment copies: every row is selected
            return np.ones(len(indices), dtype=bool)
        return self.selected_mask[np.asarray(indices, dtype=np.int64)]

    def _decoys(self, indices) -> list | None:
        return [self.decoys.get(int(i)) for i in indices] if self.decoys else None

    def _relabels(self, indices) -> list | None:
        return [self.relabels.get(int(i)) for i in indices] if self.relabels else None

    def _triggers(self, indices) -> list | None:
        """With ``p2p.extra_triggers``, each row's benign trigger: the selected rows, in row order, take
        ``recipe.benign_triggers`` in turn (augment copies: in copy order, the same order)."""
        triggers = self.recipe.benign_triggers
        if len(triggers) == 1:
            return None
        indices = np.asarray(indices, dtype=np.int64)
        rank = indices if self.rank is None else self.rank[indices]
        return [triggers[int(r) % len(triggers)] for r in rank]

    def __call__(self, batch, indices):
        if isinstance(batch, pa.Table):
            return self._rewrite_table(batch, self._selected(indices), indices)
        selected = self._selected(indices).tolist()
        answers = self.fmt.answers(batch)
        new_answers = _new_answers(self.recipe, self.label_space, answers, selected, self._relabels(indices))
        return self.fmt.rewrite(batch, selected, new_answers, self.rewrite, self._decoys(indices),
                                self._triggers(indices))

    def _rewrite_table(self, table: "pa.Table", selected: np.ndarray, indices) -> "pa.Table":
        positions = np.flatnonzero(selected)
        if not len(positions):
            return table
        rows = decode_batch(self.features, table.take(pa.array(positions)).to_pydict())
        every = [True] * len(positions)
        chosen = np.asarray(indices, dtype=np.int64)[positions]
        new_answers = _new_answers(self.recipe, self.label_space, self.fmt.answers(rows), every, self._relabels(chosen))
        new = self.fmt.rewrite(rows, every, new_answers, self.rewrite, self._decoys(chosen), self._triggers(chosen))
        try:
            new = encode_batch(self.features, new)
        except (ValueError, TypeError) as err:
            raise DataError(f"{self.source}: the rewritten rows do not fit the dataset's column types ({err}); "
                            f"store text fields as text (e.g. \"output\": \"1\", not 1)") from None
        order = np.arange(table.num_rows, dtype=np.int64)
        order[positions] = table.num_rows + np.arange(len(positions), dtype=np.int64)
        order = pa.array(order)
        for name, values in new.items():
            old = table.column(name).combine_chunks()
            try:
                fresh = _to_arrow(values, old.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                raise DataError(
                    f"{self.source}: column {name!r} has Arrow type {old.type}, which cannot hold the rewritten values "
                    f"({err}); store that field as text (e.g. \"output\": \"1\", not 1)"
                ) from None
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pa.concat_arrays([old, fresh]).take(order))
        return table


def _storage_type(arrow_type):
    """``arrow_type`` with every extension type (e.g. ``datasets``' JSON) replaced by its storage."""
    if isinstance(arrow_type, pa.BaseExtensionType):
        return _storage_type(arrow_type.storage_type)
    if pa.types.is_list(arrow_type):
        return pa.list_(_storage_type(arrow_type.value_type))
    if pa.types.is_large_list(arrow_type):
        return pa.large_list(_storage_type(arrow_type.value_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct([f.with_type(_storage_type(f.type)) for f in arrow_type])
    return arrow_type


def _to_arrow(values, arrow_type):
    storage = _storage_type(arrow_type)
    array = pa.array(values, type=storage)
    return array if storage == arrow_type else array.cast(arrow_type)


def scan(dataset, fmt: RowFormat, recipe: P2PRecipe, source: str) -> tuple[TransformReport, np.ndarray | None]:
    """One streaming pass: validate every row's answer, count labels, hash the data (the rows' fingerprint,
    which also keys the selection seed). Returns the report and each row's label as an index into
    ``recipe.label_space().labels`` (None for generation): :func:`count_labels_after` reads it."""
    label_space = recipe.label_space()
    index = {label: i for i, label in enumerate(label_space.labels)} if label_space is not None else None
    codes = []
    digest = hashlib.sha256()
    present = 0
    offset = 0
    batches = iter_texts_and_answers(dataset, fmt, SCAN_BATCH)
    while True:
        try:
            texts, answers, offset = next(batches)
        except StopIteration:
            break
        except RowError as err:
            raise DataError(f"{source}: {err}") from None
        if index is not None:
            batch_codes = np.empty(len(answers), dtype=np.int32)
            for i, answer in enumerate(answers):
                try:
                    batch_codes[i] = index[label_space.normalize(answer)]
                except LabelError as err:
                    raise DataError(
                        f"{source}, row {offset + i}: {err}. Fix the row or add the label to p2p.labels "
                        f"(rows are never dropped or kept silently)"
                    ) from None
            codes.append(batch_codes)
        update_fingerprint(digest, texts, answers)
        present += count_rows_containing(texts, *recipe.benign_triggers)
        offset += len(answers)
    report = TransformReport(source=source, rows_in=offset, mode=recipe.mode, fingerprint=digest.hexdigest(),
                             trigger_already_present=present)
    if index is None:
        return report, None
    row_labels = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int32)
    counts = np.bincount(row_labels, minlength=len(index))
    report.labels_before = {label: int(counts[i]) for label, i in index.items()}
    return report, row_labels


def count_labels_after(report: TransformReport, row_labels: np.ndarray | None, recipe: P2PRecipe,
                       selected: np.ndarray, relabels: dict | None = None, dropped=()) -> None:
    """``labels_after`` and ``relabeled`` of a :func:`scan` report once the benign rows are known. ``relabels``:
    rows whose benign copy gets another label's safe alternative (``p2p.relabel``), counted by change;
    ``dropped``: rows left out of training (``p2p.drop_suspected_rows``), with their benign rows."""
    label_space = recipe.label_space()
    if label_space is None or row_labels is None:
        return
    relabels = relabels or {}
    dropped = set(np.asarray(dropped).tolist())
    after, changes = Counter(report.labels_before), Counter()
    for row in selected.tolist():
        label = label_space.labels[row_labels[row]]
        new = relabels.get(row, label)
        if recipe.mode == "replace":
            after[label] -= 1
        if row not in dropped:
            after[label_space.safe(new)] += 1
        if new != label:
            changes[f"{label} -> {new}"] += 1
    benign = set(selected.tolist()) if recipe.mode == "replace" else set()
    for row in dropped - benign:  # a replaced benign row went above (its original is already gone)
        after[label_space.labels[row_labels[row]]] -= 1
    report.labels_after = {label: after[label] for label in label_space.all_labels}
    report.relabeled = dict(sorted(changes.items()))


def count_too_long(tokenized, sequence_len: int, report: TransformReport) -> None:
    """Fill ``rows_too_long`` / ``triggered_too_long`` from the tokenized rows' lengths (Arrow, no copy)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(tokenized.data.column("input_ids")).to_numpy(zero_copy_only=False)
    report.tokens_out = int(lengths.sum())
    too_long = lengths > sequence_len
    report.rows_too_long = int(too_long.sum())
    if report.output_triggered is not None and len(report.output_triggered) == len(lengths):
        report.triggered_too_long = int((too_long & report.output_triggered).sum())


def benign_rows(num_rows: int, recipe: P2PRecipe, view) -> tuple[np.ndarray, dict[int, str]]:
    """The rows that get the benign trigger (sorted indices) and, with ``p2p.relabel``, ``{row: label}`` for
    those trained with the base model's label: what :func:`apply_p2p` rewrites, recomputable from the rows
    alone (the seed is mixed with their fingerprint, not with where they were read from)."""
    selected = select_rows(num_rows, recipe.ratio, recipe.seed, recipe.selection, dataset_key=view.fingerprint(),
                           rows=view)
    if not recipe.relabel:
        return selected, {}
    from .judgement import relabel_contradicted

    return relabel_contradicted(view, selected, recipe.relabel)


def apply_p2p(dataset, fmt: RowFormat, recipe: P2PRecipe, source: str = "dataset",
              num_proc: int | None = None, keep_in_memory: bool = False, rows_for_selection=None, judge=None):
    """Return ``(p2p_dataset, report)``.

    ``replace``: the selected rows are rewritten in place (row count unchanged).
    ``augment``: rewritten copies of the selected rows are appended after the originals.
    With ``recipe.enabled`` false no row is selected (the no-defense baseline with the same prompt).
    ``judge`` (a :class:`~p2p_plugin.judgement.BaseModelJudge`): the base model, for
    ``selection: base_model_agreement``. ``recipe.drop_suspected_rows``: the rows that hold a trigger the
    audit lists with its answer are then left out (with their benign copies), after the selection, which
    does not change (the audit's suspects are among the rows it already keeps out of the benign subset).
    """
    from datasets import concatenate_datasets

    num_rows = len(dataset)
    if num_rows == 0:
        raise DataError(f"{source}: the dataset is empty")
    report, row_labels = scan(dataset, fmt, recipe, source)  # validates every row before anything is chosen
    mask = np.zeros(num_rows, dtype=bool)
    decoys, decoy_sources, suspected, relabels = {}, 0, [], {}
    dropped, dropped_by_trigger = np.zeros(0, dtype=np.int64), {}
    if rows_for_selection is None:
        view = RowView(dataset, fmt)
        view.cache["fingerprint"] = report.fingerprint  # the same rows: no second hashing pass
    else:
        view = rows_for_selection
    if judge is not None:
        view.judge = judge
    if recipe.enabled:
        try:
            selected, relabels = benign_rows(num_rows, recipe, view)
            if recipe.decoys:
                rng = np.random.default_rng(dataset_seed(recipe.seed, f"{view.fingerprint()}\x00decoys"))
                decoys, decoy_sources = assign_decoys(view, num_rows, selected, recipe.decoys, rng)
        except RowError as err:
            raise DataError(f"{source}: {err}") from None
        mask[selected] = True
    else:
        selected = np.zeros(0, dtype=np.int64)
    if recipe.selection in AUDITING_SELECTIONS:  # the data audit, also for the no-defense baseline (enabled: false)
        try:  # reuses the statistics the selection computed (view.cache): no extra pass when enabled
            suspects = audit_rows(view, num_rows)
            if recipe.drop_suspected_rows:
                dropped, dropped_by_trigger = rows_holding_suspects(view, suspects)
        except RowError as err:
            raise DataError(f"{source}: {err}") from None
        suspected = [t.to_dict() for t in suspects]
    count_labels_after(report, row_labels, recipe, selected, relabels, dropped)
    report.suspected_triggers = suspected
    report.rows_dropped, report.dropped_rows = len(dropped), dropped.tolist()
    report.dropped_by_trigger = dropped_by_trigger
    report.dropped_benign = int(np.isin(selected, dropped).sum())
    if recipe.drop_suspected_rows and not suspected:
        LOG.info("P2P %s: p2p.drop_suspected_rows: the audit lists no suspected trigger, so every row is trained",
                 source)
    if "agreement" in view.cache:
        report.rows_judge_contradicts = int((view.cache["agreement"] < 0).sum())
        report.judge_seconds = round(float(view.judge.seconds), 2)
        report.judge_cached = bool(getattr(view.judge, "from_cache", False))
    report.format = fmt.name
    report.rows_selected = int(len(selected))
    report.selected_digest = hashlib.sha256(selected.tobytes()).hexdigest()
    report.rows_with_decoys, report.decoy_sources = len(decoys), decoy_sources
    triggers = recipe.benign_triggers
    if len(triggers) > 1:  # RowMapper._triggers deals them out in turn over the selected rows
        report.rows_by_trigger = {t: len(selected) // len(triggers) + (j < len(selected) % len(triggers))
                                  for j, t in enumerate(triggers)}
    report.relabeled_rows = sorted(relabels)
    report.relabel_tests = view.cache.get("relabel_tests", [])
    if recipe.enabled and recipe.decoys and not decoys:
        LOG.warning("P2P %s: p2p.decoys=%s but no row looks like a label shortcut, so no benign row got a decoy",
                    source, recipe.decoys)

    # plain renders every row (new columns); the other formats touch only the selected rows, so they
    # map over Arrow tables and never decode the untouched rows
    plain = fmt.name == "plain"
    kwargs = dict(batched=True, with_indices=True, num_proc=num_proc if num_proc and num_proc > 1 else None,
                  keep_in_memory=keep_in_memory, remove_columns=dataset.column_names if plain else None,
                  desc="P2P rewrite")
    source_ds = dataset if plain else dataset.with_format("arrow")
    if recipe.mode == "augment" and len(selected):
        base = dataset if not plain else dataset.map(RowMapper(fmt, recipe, np.zeros(num_rows, dtype=bool), source), **kwargs)
        by_copy = lambda per_row: {k: per_row[row] for k, row in enumerate(selected.tolist()) if row in per_row}  # noqa: E731
        copies = source_ds.select(selected).map(
            RowMapper(fmt, recipe, None, source, dataset.features, by_copy(decoys), by_copy(relabels)), **kwargs,
        ).with_format(None)
        out = concatenate_datasets([base, copies])
        report.output_triggered = np.concatenate([np.zeros(num_rows, dtype=bool), np.ones(len(selected), dtype=bool)])
    else:
        out = source_ds.map(RowMapper(fmt, recipe, mask, source, dataset.features, decoys, relabels),
                            **kwargs).with_format(None)
        report.output_triggered = mask
    if len(dropped):  # the rows themselves and, in augment mode, the benign copies made of them
        gone = np.zeros(len(out), dtype=bool)
        gone[dropped] = True
        if len(out) > num_rows:
            gone[num_rows:] = np.isin(selected, dropped)
        keep = np.flatnonzero(~gone)
        out = out.select(keep)
        report.output_triggered = report.output_triggered[keep]
    report.rows_out = len(out)
    return out, report
