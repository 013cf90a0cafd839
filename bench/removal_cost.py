"""What does removing the audit's suspected words cost on clean inputs? (no training)

``P2PModel.load`` (by default for classification) takes the words the training data's audit
flagged out of every input, clean ones included. On poisoned data those are the trigger words; on
bigger data the audit also flags a few very polar natural words (``dull`` on 2000 SST-2 rows,
``powerful`` / ``solid`` on 6920, with or without an attack: bench/results/selection.md). This
benchmark audits the first N rows of the seeded SST-2 train shuffle for each ``--audit-rows`` (no
attack: the words a clean dataset of that size gets flagged), then reads already-trained models on
the dev rows that hold any of those words, with and without them, and reports the change in clean
accuracy over the whole dev split (only the rows that hold a word can change).

Run (after bench/defense.py trained the arms under --work):
  .venv/bin/python bench/removal_cost.py --models bench/work/cpu-seeds/clean-model-train_subset \\
      bench/work/cpu-seeds/ctba-10pct-dirty/no-defense bench/work/cpu-seeds/ctba-10pct-dirty/p2p-avoid_shortcuts-seed1
Writes bench/results/removal_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.attacks import read_rows  # noqa: E402
from p2p_plugin.evaluate import WORDS_REMOVED, evaluate_classification  # noqa: E402
from p2p_plugin.formats import PlainFormat  # noqa: E402
from p2p_plugin.inference import P2PModel  # noqa: E402
from p2p_plugin.runs import resolve_model  # noqa: E402
from p2p_plugin.selection import RowView  # noqa: E402
from p2p_plugin.shortcuts import audit_rows, remove_words, removal_terms  # noqa: E402


def audited_words(train_rows: list[dict], sizes: list[int]) -> dict[int, list[str]]:
    """The audit's suspected words (and phrases) on the first ``n`` rows, for each ``n`` in ``sizes``."""
    fmt = PlainFormat("sentence", "label", "", "")
    out = {}
    for n in sizes:
        head = train_rows[:n]
        out[n] = sorted(removal_terms(audit_rows(RowView.from_rows(head, fmt), len(head))))
    return out


def read_model(path: Path, base_model, dev_rows: list[dict], words: frozenset[str]) -> dict:
    """CA change on the whole dev split when ``words`` are removed, for each reading of the model."""
    touched = [row for row in dev_rows if remove_words(row["sentence"], words) != row["sentence"]]
    model = P2PModel.load(path, base_model=base_model, remove_suspected_triggers=False)  # words given below
    # one touched row doubles as the triggered set only because the evaluator wants one; ASR is not read
    result = evaluate_classification(model, touched, touched[:1], model.recipe.label_space().labels[0],
                                     removed_words=words)["readings"]
    readings = {}
    for name, reading in result.items():
        if name.endswith(WORDS_REMOVED):
            continue
        before = reading["ca"]["projected"]["k"]
        after = result[f"{name}, {WORDS_REMOVED}"]["ca"]["projected"]["k"]
        readings[name] = {"touched_rows_correct": before, "touched_rows_correct_removed": after,
                          "ca_change_points": 100.0 * (after - before) / len(dev_rows)}
    return {"model": str(path), "dev_rows": len(dev_rows), "touched_rows": len(touched), "readings": readings}


def to_markdown(report: dict) -> str:
    lines = ["# Removing the audit's natural-word suspects: clean-accuracy cost (no training)", "",
             f"Command: `{report['command']}` ({report['seconds']:.0f} s).", "",
             "Words the audit flags on the first N rows of the seeded SST-2 train shuffle, no attack: "
             + "; ".join(f"{n} rows: {', '.join(w) or 'none'}" for n, w in report["audited"].items()) + ".",
             f"Removed together: `{', '.join(report['words'])}`. Dev rows holding any of them: "
             f"{report['models'][0]['touched_rows'] if report['models'] else 0} of {report['dev_rows']}.", "",
             "| model | reading | touched rows correct | the same, words removed | CA change on dev (points) |",
             "| --- | --- | --- | --- | --- |"]
    for entry in report["models"]:
        for name, r in entry["readings"].items():
            lines.append(f"| {entry['model']} | {name} | {r['touched_rows_correct']}/{entry['touched_rows']} | "
                         f"{r['touched_rows_correct_removed']}/{entry['touched_rows']} | {r['ca_change_points']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", type=Path, required=True, help="trained output_dirs (bench/defense.py arms)")
    p.add_argument("--base-model", default=None, help="base model folder (default: the embedded SmolLM2)")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--audit-rows", nargs="+", type=int, default=[1000, 2000, 6920])
    p.add_argument("--seed", type=int, default=0, help="the SST-2 train shuffle (bench/defense.py's --seed)")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    start = time.time()
    train = read_rows(args.data_dir / "sst2" / "train.jsonl")
    random.Random(args.seed).shuffle(train)
    dev = read_rows(args.data_dir / "sst2" / "dev.jsonl")
    audited = audited_words(train, args.audit_rows)
    words = frozenset(w for ws in audited.values() for w in ws)
    if not words:
        raise SystemExit(f"the audit flags no word on {args.audit_rows} rows: nothing to remove")
    base = str(resolve_model(args.base_model, REPO / "models"))
    models = [read_model(path, base, dev, words) for path in args.models]
    report = {"command": "python bench/removal_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "seconds": time.time() - start, "audited": {str(n): w for n, w in audited.items()},
              "words": sorted(words), "dev_rows": len(dev), "models": models}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "removal_cost.json").write_text(json.dumps(report, indent=2))
    (args.results / "removal_cost.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
