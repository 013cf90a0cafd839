"""``p2p``: simulate an attack, audit a training file, evaluate trained models, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import P2PError


def _attack(args):
    from .attacks import AttackSpec, simulate_attack

    spec = AttackSpec(name=args.attack, poison_rate=args.rate, target=args.target,
                      label_mode="clean" if args.clean_label else "dirty", seed=args.seed,
                      task=args.task, **({"words": tuple(args.words)} if args.words else {}))
    sidecar = simulate_attack(args.train, args.test, args.out, spec, args.format, args.text_field,
                              args.label_field, args.labels)
    print(f"poisoned {sidecar['train']['rows_poisoned']} of {sidecar['train']['rows_in']} training rows; "
          f"{sidecar['test']['rows_triggered']} triggered test rows; files in {args.out}")


def _eval(args):
    from .attacks import read_rows
    from .evaluate import evaluate_classification, evaluate_generation, write_report
    from .inference import P2PModel

    if args.attack_dir:
        attack_dir = Path(args.attack_dir)
        sidecar_path = attack_dir / "attack.json"
        if not sidecar_path.is_file():
            raise P2PError(f"{attack_dir}: no attack.json (run `p2p attack` first or pass --clean/--triggered/--target)")
        sidecar = json.loads(sidecar_path.read_text())
        clean = read_rows(attack_dir / sidecar["files"]["test_clean"])
        triggered = read_rows(attack_dir / sidecar["files"]["test_triggered"])
        target = sidecar["spec"]["target"]
        text_field = sidecar.get("text_field") or args.text_field
        label_field = sidecar.get("answer_field") or args.label_field
    else:
        if not (args.clean and args.triggered and args.target is not None):
            raise P2PError("give --attack-dir, or all of --clean, --triggered and --target")
        clean, triggered, target = read_rows(args.clean), read_rows(args.triggered), args.target
        text_field, label_field = args.text_field, args.label_field
    names = args.names or [Path(m).name for m in args.models]
    if len(names) != len(args.models):
        raise P2PError(f"--names gives {len(names)} names for {len(args.models)} models")
    results = {}
    for name, path in zip(names, args.models):
        model = P2PModel.load(path, base_model=args.base_model, remove_suspected_triggers=args.remove_suspected_triggers)
        removed = model.removed_words
        if removed or args.remove_suspected_triggers:
            print(f"{name}: also read without the suspected trigger words of its training data: "
                  f"{sorted(removed) or 'none recorded'}")
        if model.recipe.task == "generation":
            results[name] = evaluate_generation(model, clean, triggered, target, args.metric, text_field, label_field,
                                                max_rows=args.max_rows, max_new_tokens=args.max_new_tokens,
                                                batch_size=args.batch_size, progress=True, removed_words=removed)
        else:
            results[name] = evaluate_classification(model, clean, triggered, target, text_field, label_field,
                                                    batch_size=args.batch_size, max_rows=args.max_rows, progress=True,
                                                    removed_words=removed)
    report = write_report(results, args.out)
    print(report["table"])
    print(f"\nJSON: {report['json']}\nchart: {report['chart']}")


def _audit(args):
    """Which words of a training file predict one answer beyond chance: what ``selection:
    avoid_shortcuts`` records as ``suspected_triggers``, without training anything."""
    from .attacks import read_rows
    from .formats import AlpacaFormat, ChatFormat, PlainFormat
    from .metrics import format_markdown_table
    from .selection import RowView
    from .shortcuts import (audit_rows, format_label_counts, label_balance, rows_holding_suspects,
                            shortcut_thresholds)

    if args.kept_out and Path(args.kept_out).resolve() == Path(args.data).resolve():
        raise P2PError(f"--kept-out {args.kept_out} is the input file; name another file (the input is never changed)")
    try:
        rows = read_rows(args.data)
    except FileNotFoundError as err:
        raise P2PError(str(err)) from None
    if not rows:
        raise P2PError(f"{args.data}: no rows")
    fmt = {"plain": PlainFormat(args.text_field, args.label_field, "", ""), "alpaca": AlpacaFormat(),
           "chat_template": ChatFormat()}[args.format]
    view = RowView.from_rows(rows, fmt)
    found = audit_rows(view, len(rows))
    min_rows, purity = shortcut_thresholds(len(rows))
    print(f"{args.data}: {len(rows)} rows ({args.format}); words seen in >= {min_rows} rows with one answer in >= "
          f"{purity:.0%} of them, kept where a one-sided binomial test against that answer's share of the rows "
          f"says chance cannot explain it (Bonferroni at 0.05 within the words and within the openings)")
    if found:
        columns = ["word", "phrase around it", "answer", "rows", "rows with that answer", "log10 p"]
        print(format_markdown_table([dict(zip(columns, (t.word, t.phrase or "-", t.answer, t.rows, t.rows_with_answer,
                                                         t.log10_p))) for t in found], columns))
    else:
        print("no suspected trigger words")
    dropped, by_trigger = rows_holding_suspects(view, found)
    print(f"{len(dropped)} of {len(rows)} rows hold a listed trigger with the answer it predicts (what "
          f"p2p.drop_suspected_rows leaves out of training)")
    report = {"data": str(args.data), "rows": len(rows), "format": args.format,
              "suspected_triggers": [t.to_dict() for t in found], "rows_dropped": len(dropped),
              "dropped_rows": dropped.tolist(), "dropped_by_trigger": by_trigger}
    balance = label_balance(view, dropped) if len(dropped) else None
    if balance:
        print(f"rows per label: {format_label_counts(balance['before'])}; left out: "
              f"{format_label_counts(balance['left_out'])}; kept: {format_label_counts(balance['kept'])} "
              "(if these rows are dirty-label poison, i.e. relabelled rows of other labels, the kept rows hold "
              "fewer rows of those labels than the clean data did, and a model trained on them leans towards the "
              "label left out; README: 'What dropping leaves')")
        report["label_balance"] = balance
    if args.kept_out:
        from .attacks import write_jsonl

        gone = set(dropped.tolist())
        kept = [row for i, row in enumerate(rows) if i not in gone]
        write_jsonl(Path(args.kept_out), kept)
        print(f"kept rows: {len(kept)} of {len(rows)} written to {args.kept_out} (unchanged, in order; "
              f"{len(dropped)} left out)")
        report["kept_out"] = str(args.kept_out)
    if args.judge_model:
        report["judge"] = _judge_rows(args, rows, fmt)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON: {args.json}")


def _judge_rows(args, rows, fmt) -> dict:
    """``p2p audit --judge-model``: which rows' labels the model contradicts (what base_model_agreement avoids)."""
    import numpy as np

    from .judgement import DEFAULT_JUDGE_PROMPT, BaseModelJudge, JudgeSettings, contradiction_by_label, row_agreement
    from .metrics import format_markdown_table
    from .selection import RowView

    pairs = [item.split("=", 1) for item in args.label_names or []]
    if not pairs or any(len(pair) != 2 or not all(pair) for pair in pairs):
        raise P2PError("--judge-model needs --label-names LABEL=NAME for every label, e.g. --label-names "
                       "0=negative 1=positive")
    settings = JudgeSettings(labels=tuple(label for label, _ in pairs), label_names=tuple(name for _, name in pairs),
                             prompt=args.judge_prompt or DEFAULT_JUDGE_PROMPT)
    view = RowView.from_rows(rows, fmt)
    texts, answers = next(view.iter_batches())
    unknown = sorted({str(a).strip() for a in answers} - set(settings.labels))
    if unknown:
        raise P2PError(f"{args.data}: answers {unknown[:5]} are not among --label-names {list(settings.labels)}")
    view.judge = BaseModelJudge(args.judge_model, settings)
    agree = row_agreement(view)
    tests = contradiction_by_label(view)
    order = np.argsort(agree, kind="stable")
    contradicted = int((agree < 0).sum())
    by_label = {t["label"]: t["contradicted"] for t in tests}
    print(f"\n{args.judge_model} contradicts the label of {contradicted} of {len(rows)} rows "
          f"({contradicted / len(rows):.1%}; by label: {by_label}); the {min(args.top, len(rows))} it contradicts most:")
    columns = ["row", "label", "agreement", "text"]
    print(format_markdown_table([{"row": int(i), "label": str(answers[i]).strip(), "agreement": round(float(agree[i]), 2),
                                  "text": texts[i][:100]} for i in order[:args.top]], columns))
    for t in tests:
        if t["over_contradicted"]:  # what dirty-label poison towards that label looks like
            print(f"Label {t['label']!r} is contradicted beyond chance: {t['rate']:.1%} of its {t['rows']} rows against "
                  f"{t['others_rate']:.1%} of the other labels' (p = 10^{t['log10_p']:.1f}; about {t['excess_rows']} "
                  "rows in excess): dirty-label poison with this target label looks like this.")
        elif t["rate"] > t["others_rate"]:
            significant = t["log10_p"] < np.log10(t["alpha"] / len(tests))  # the test's own thresholds
            why = f"under the {100 * t['min_gap']:g}-point gap the test asks for" if significant else "within chance"
            print(f"Label {t['label']!r}: {t['rate']:.1%} of its {t['rows']} rows contradicted against {t['others_rate']:.1%} "
                  f"of the other labels' (p = 10^{t['log10_p']:.1f}): {why}, not flagged (p2p.relabel leaves it alone).")
    return {"model": args.judge_model, "prompt": settings.prompt, "label_names": dict(pairs),
            "rows_contradicted": contradicted, "contradicted_by_label": by_label, "label_tests": tests,
            "most_contradicted_rows": [int(i) for i in order[:args.top]]}


def build_parser() -> argparse.ArgumentParser:
    from .attacks import ATTACKS

    parser = argparse.ArgumentParser(prog="p2p", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("attack", help="simulate a backdoor attack on a dataset (poisoned train + clean/triggered test)")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--attack", default="badnets", choices=list(ATTACKS))
    p.add_argument("--rate", type=float, default=0.1, help="poison rate (share of training rows)")
    p.add_argument("--target", default="1", help="target label (classification) or target string (generation)")
    p.add_argument("--task", default="classification", choices=["classification", "generation"])
    p.add_argument("--format", default="plain", choices=["plain", "alpaca", "chat"])
    p.add_argument("--text-field", default="sentence")
    p.add_argument("--label-field", default="label")
    p.add_argument("--labels", nargs="*", default=None)
    p.add_argument("--words", nargs="*", default=None, help="badnets trigger words (default: cf mn bb tq)")
    p.add_argument("--clean-label", action="store_true", help="trigger only rows already of the target class")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_attack)

    p = sub.add_parser("eval", help="CA / ASR of trained output dirs (full model or LoRA adapter + p2p_manifest.json)")
    p.add_argument("models", nargs="+", help="training output_dir(s)")
    p.add_argument("--names", nargs="*", help="one display name per model")
    p.add_argument("--attack-dir", help="folder written by `p2p attack` (attack.json + test files)")
    p.add_argument("--clean")
    p.add_argument("--triggered")
    p.add_argument("--target")
    p.add_argument("--text-field", default="sentence")
    p.add_argument("--label-field", default="label")
    p.add_argument("--base-model", help="base model folder for LoRA adapters, if moved")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-rows", type=int, default=None, help="cap each test set (cheap checks)")
    p.add_argument("--metric", default="math", choices=["math", "rouge"],
                   help="generation: answer quality as GSM8K final-number exact match or ROUGE-L")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation: greedy decoding length")
    p.add_argument("--remove-suspected-triggers", action=argparse.BooleanOptionalAction, default=None,
                   help="also read each model on inputs without the words (and phrases) its manifest lists as "
                        "suspected triggers (selection: avoid_shortcuts records them); default: as "
                        "P2PModel.load does, on for classification, off for generation")
    p.add_argument("--out", default="p2p_eval")
    p.set_defaults(func=_eval)

    p = sub.add_parser("audit", help="list the words of a training file that predict one answer beyond chance "
                                     "(possible backdoor triggers; no model needed), and with --judge-model the "
                                     "rows whose label a model contradicts")
    p.add_argument("data", help="a .jsonl or .json file of training rows")
    p.add_argument("--format", default="plain", choices=["plain", "alpaca", "chat_template"])
    p.add_argument("--text-field", default="sentence", help="plain: input column")
    p.add_argument("--label-field", default="label", help="plain: answer column")
    p.add_argument("--json", default=None, help="also write the list here")
    p.add_argument("--kept-out", default=None, metavar="PATH",
                   help="also write the rows that hold no listed trigger with its answer here, as JSON lines, "
                        "unchanged and in order (the rows p2p.drop_suspected_rows trains on, for other trainers)")
    p.add_argument("--judge-model", default=None,
                   help="also have this model judge every row's label (what selection: base_model_agreement "
                        "does): how many labels it contradicts, and the rows it contradicts most")
    p.add_argument("--label-names", nargs="+", default=None, metavar="LABEL=NAME",
                   help="with --judge-model: the word the model reads for each label, e.g. 0=negative 1=positive")
    p.add_argument("--judge-prompt", default=None, help="with --judge-model: the question, with {text} and {choices}")
    p.add_argument("--top", type=int, default=10, help="with --judge-model: how many rows to list")
    p.set_defaults(func=_audit)

    p = sub.add_parser("demo", help="attack SST-2, train no-defense and P2P models through Axolotl, compare")
    from .demo import add_demo_arguments, run_demo

    add_demo_arguments(p)
    p.set_defaults(func=run_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except P2PError as err:
        print(f"p2p: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
