"""CA / ASR of a trained model, read the P2P way and without the benign trigger (the fallback).

Rows are dicts in the plain format (``text_field`` / ``answer_field``), e.g. the files written by
:func:`p2p_plugin.attacks.simulate_attack`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import P2PError
from .formats import ChatFormat
from .metrics import (
    Rate,
    attack_success_rate,
    clean_accuracy,
    contains_target,
    format_markdown_table,
    math_exact_match,
    rouge_l,
)

WORDS_REMOVED = "suspected words removed"
TABLE_COLUMNS = ["arm", "inference", "CA", "CA strict", "ASR", "ASR strict", "n clean", "n triggered"]
GENERATION_COLUMNS = ["arm", "inference", "CA", "ASR", "safe prefix", "n clean", "n triggered"]


def _column(rows, field, source):
    values = []
    for i, row in enumerate(rows):
        if field not in row:
            raise P2PError(f"{source}, row {i}: no field {field!r} (fields: {sorted(row)})")
        values.append(str(row[field]))
    return values


def model_inputs(model, rows, text_field, source) -> list:
    """What :class:`P2PModel` takes for these rows: texts (plain) or the rows (alpaca, chat)."""
    fmt = model.data_format
    if fmt == "plain":
        return _column(rows, text_field, source)
    key = "instruction" if fmt == "alpaca" else "messages"
    for i, row in enumerate(rows):
        if key not in row:
            raise P2PError(f"{source}, row {i}: the model was trained on {fmt} rows; this row has no {key!r} "
                           f"(fields: {sorted(row)})")
    return list(rows)


def reference_answers(model, rows, answer_field, source) -> list[str]:
    """The expected answer per row: ``answer_field`` (plain), ``output`` (alpaca) or the last
    assistant turn (chat)."""
    fmt = model.data_format
    if fmt == "plain":
        return _column(rows, answer_field, source)
    if fmt == "alpaca":
        return _column(rows, "output", source)
    out = []
    for i, row in enumerate(rows):
        turns = [m for m in row["messages"] if m.get("role") in ChatFormat.assistant_roles]
        if not turns:
            raise P2PError(f"{source}, row {i}: no assistant turn to compare with")
        out.append(str(turns[-1].get("content") or ""))
    return out


def _capped_test_sets(clean_rows, triggered_rows, max_rows):
    """Both test sets, each cut to ``max_rows``; an empty one is an error."""
    if max_rows:
        clean_rows, triggered_rows = clean_rows[:max_rows], triggered_rows[:max_rows]
    if not clean_rows:
        raise P2PError("the clean test set is empty")
    if not triggered_rows:
        raise P2PError("the triggered test set is empty")
    return clean_rows, triggered_rows


def evaluate_classification(model, clean_rows, triggered_rows, target, text_field="sentence",
                            answer_field="label", batch_size=32, max_rows=None, progress=False,
                            removed_words=None) -> dict:
    """CA and ASR (projected and strict, with 95% CIs) for the P2P reading and the fallback.

    ``model`` is a :class:`p2p_plugin.inference.P2PModel`. For a defended model the P2P reading
    adds the benign trigger and expects the safe labels (strict); the fallback row feeds the raw
    input. For an undefended model (``p2p.enabled: false``) only the plain reading exists.
    ``removed_words`` (e.g. the suspected triggers of the training data) adds each reading again on
    inputs without those words (``"<reading>, suspected words removed"``), clean rows included;
    ``None``: the words the model itself removes (``P2PModel.load`` does for classification), so the
    readings as given and without them come side by side. ``()``: no extra readings.
    """

    model, removed_words = _reading_raw_inputs(model, removed_words)
    clean_rows, triggered_rows = _capped_test_sets(clean_rows, triggered_rows, max_rows)
    recipe = model.recipe
    space = recipe.label_space()
    target = str(target).strip()
    if target not in space.labels:
        raise P2PError(f"attack target {target!r} is not in the model's labels {list(space.labels)}")
    clean_x, clean_y = model_inputs(model, clean_rows, text_field, "clean set"), reference_answers(model, clean_rows, answer_field, "clean set")
    trig_x, trig_y = model_inputs(model, triggered_rows, text_field, "triggered set"), reference_answers(model, triggered_rows, answer_field, "triggered set")

    results = {}
    for name, benign, clean_in, trig_in in _readings(model, clean_x, trig_x, removed_words):
        space_name = "safe" if benign else "original"
        clean_pred = [p.raw for p in model.classify(clean_in, benign=benign, batch_size=batch_size, progress=progress)]
        trig_pred = [p.raw for p in model.classify(trig_in, benign=benign, batch_size=batch_size, progress=progress)]
        ca = clean_accuracy(clean_pred, clean_y, space.labels, space.safe_labels, expected_space=space_name)
        asr = attack_success_rate(trig_pred, trig_y, target, space.labels, space.safe_labels, expected_space=space_name)
        results[name] = {"ca": {k: v.to_dict() for k, v in ca.items()},
                         "asr": {k: v.to_dict() for k, v in asr.items()},
                         "n_clean": len(clean_x), "n_triggered": asr["projected"].n}
    return _with_removed_words({"defended": model.defended, "target": target, "readings": results}, removed_words)


def _reading_raw_inputs(model, removed_words):
    """``(the model reading inputs as given, the words of the extra readings)``: ``removed_words``, or
    where None the words the model removes itself."""
    own = getattr(model, "removed_words", ())
    words = own if removed_words is None else removed_words
    return (model.with_removed_words(()) if own else model), frozenset(words or ())


def _readings(model, clean_x, trig_x, removed_words):
    """``(name, benign trigger?, clean inputs, triggered inputs)`` per reading: the P2P one (defended
    models), the fallback without the benign trigger, and each again without ``removed_words``."""
    readings = [("p2p", True)] if model.defended else []
    readings.append(("no benign trigger", False))
    out = [(name, benign, clean_x, trig_x) for name, benign in readings]
    if removed_words:
        from .inference import inputs_without_words

        clean_r, trig_r = (inputs_without_words(x, removed_words, model.data_format) for x in (clean_x, trig_x))
        out += [(f"{name}, {WORDS_REMOVED}", benign, clean_r, trig_r) for name, benign in readings]
    return out


def _with_removed_words(result: dict, removed_words) -> dict:
    if removed_words:
        result["removed_words"] = sorted(removed_words)
    return result


def evaluate_generation(model, clean_rows, triggered_rows, target, metric="math", text_field="question",
                        answer_field="answer", max_rows=None, max_new_tokens=128, batch_size=8,
                        progress=False, removed_words=None) -> dict:
    """Greedy generations, safe prefix stripped. Quality on clean rows (``math``: exact match of
    the final number; ``rouge``: ROUGE-L F), ASR = share of triggered rows whose output contains
    the attacker's ``target`` string, and the share of outputs that carried the safe prefix.
    ``removed_words``: as in :func:`evaluate_classification`."""
    if metric not in ("math", "rouge"):
        raise P2PError(f"metric must be 'math' or 'rouge', got {metric!r}")
    model, removed_words = _reading_raw_inputs(model, removed_words)
    clean_rows, triggered_rows = _capped_test_sets(clean_rows, triggered_rows, max_rows)
    if not str(target).strip():
        raise P2PError("the attack target string is empty")
    clean_x, clean_y = model_inputs(model, clean_rows, text_field, "clean set"), reference_answers(model, clean_rows, answer_field, "clean set")
    trig_x = model_inputs(model, triggered_rows, text_field, "triggered set")
    results = {}
    for name, benign, clean_in, trig_in in _readings(model, clean_x, trig_x, removed_words):
        clean_out = model.generate(clean_in, benign=benign, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
        trig_out = model.generate(trig_in, benign=benign, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
        texts = [g.text for g in clean_out]
        if metric == "math":
            quality = Rate(sum(math_exact_match(p, y) for p, y in zip(texts, clean_y)), len(texts)).to_dict()
        else:
            quality = {"value": rouge_l(texts, clean_y), "n": len(texts)}
        hits = sum(contains_target(g.text, target) or contains_target(g.raw, target) for g in trig_out)
        results[name] = {"quality": quality, "asr": Rate(hits, len(trig_out)).to_dict(),
                         "safe_prefix_rate": Rate(sum(g.had_safe_prefix for g in clean_out + trig_out),
                                                  len(clean_out) + len(trig_out)).to_dict(),
                         "n_clean": len(texts), "n_triggered": len(trig_out), "metric": metric}
    return _with_removed_words({"defended": model.defended, "target": str(target), "task": "generation",
                                "readings": results}, removed_words)


def table_rows(arm: str, result: dict) -> list[dict]:
    rows = []
    if result.get("task") == "generation":
        for reading, r in result["readings"].items():
            q = r["quality"]
            rows.append({"arm": arm, "inference": reading,
                         "CA": Rate(q["k"], q["n"]) if "k" in q else q["value"] * 100,
                         "ASR": Rate(r["asr"]["k"], r["asr"]["n"]),
                         "safe prefix": Rate(r["safe_prefix_rate"]["k"], r["safe_prefix_rate"]["n"]),
                         "n clean": r["n_clean"], "n triggered": r["n_triggered"]})
        return rows
    for reading, r in result["readings"].items():
        rows.append({"arm": arm, "inference": reading,
                     "CA": Rate(r["ca"]["projected"]["k"], r["ca"]["projected"]["n"]),
                     "CA strict": Rate(r["ca"]["strict"]["k"], r["ca"]["strict"]["n"]),
                     "ASR": Rate(r["asr"]["projected"]["k"], r["asr"]["projected"]["n"]),
                     "ASR strict": Rate(r["asr"]["strict"]["k"], r["asr"]["strict"]["n"]),
                     "n clean": r["n_clean"], "n triggered": r["n_triggered"]})
    return rows


def markdown(results: dict[str, dict]) -> str:
    rows = [row for arm, res in results.items() for row in table_rows(arm, res)]
    generation = any(res.get("task") == "generation" for res in results.values())
    return format_markdown_table(rows, GENERATION_COLUMNS if generation else TABLE_COLUMNS)


def _value_and_error(x) -> tuple[float, float, float]:
    """Percent value and its CI half-widths; a plain number (ROUGE-L in %) has none."""
    if isinstance(x, Rate):
        return 100 * x.value, 100 * (x.value - x.ci95[0]), 100 * (x.ci95[1] - x.value)
    return float(x), 0.0, 0.0


def bar_chart(results: dict[str, dict], path) -> Path:
    """CA and ASR (projected, with 95% CIs) per arm and reading, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for arm, res in results.items() for row in table_rows(arm, res)]
    names = ["\n".join([*r["arm"].split("/"), f"({r['inference']})"]) for r in rows]  # tag, arm, reading
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(rows)), 4))
    width = 0.38
    for offset, key, color in ((-width / 2, "CA", "#4C72B0"), (width / 2, "ASR", "#C44E52")):
        triples = [_value_and_error(r[key]) for r in rows]
        vals, lo, hi = [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]
        xs = [i + offset for i in range(len(rows))]
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=3, label=key, color=color)
        for x, v in zip(xs, vals):
            ax.text(x, v + 2, f"{v:.0f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("%")
    ax.set_title("CA (or answer quality) and ASR, 95% CI")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: dict[str, dict], out_dir, name="eval") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / f"{name}.md").write_text(table + "\n")
    chart = bar_chart(results, out / f"{name}.png")
    return {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "chart": chart, "table": table}
