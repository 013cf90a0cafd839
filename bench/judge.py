"""The base model as judge (``selection: base_model_agreement``): how well does it see dirty-label poison?

For each attack folder the defense benchmark made (``<work>/<attack>-<rate>pct-<mode>/train_poisoned.jsonl``
with its ``attack.json``, i.e. exactly the rows its arms trained on) and each judge prompt, the base
model judges every training row. Reported per prompt:
  - agreement with the data's own labels: what a defender can see, and how the SST-2 prompt was chosen
    (the higher, the better the judge reads the task; poisoned rows pull it down a little);
  - how often it contradicts the label of clean rows vs poisoned rows (needs the attack's sidecar);
  - poisoned rows in the benign subset (ratio 0.2, seed 0) of random, avoid_shortcuts and base_model_agreement.
Scores are cached where the plugin keeps them for that work folder (``<work>/prepared/p2p-judgements``),
so prompts the arms trained with cost nothing here.

Run:  .venv/bin/python bench/judge.py --work bench/work/cpu-seeds --attacks clause ctba addsent
Writes bench/results/judge.json and bench/results/judge.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.args import P2PConfig  # noqa: E402
from p2p_plugin.attacks import read_rows  # noqa: E402
from p2p_plugin.config_checks import judgement_cache_dir  # noqa: E402
from p2p_plugin.formats import PlainFormat  # noqa: E402
from p2p_plugin.judgement import DEFAULT_JUDGE_PROMPT, judge_from_recipe  # noqa: E402
from p2p_plugin.runs import SST2_JUDGE  # noqa: E402
from p2p_plugin.selection import RowView, select_rows  # noqa: E402

PROMPTS = {
    "sst2 (bench default)": SST2_JUDGE["prompt"],
    "generic (plugin default)": DEFAULT_JUDGE_PROMPT,
    "sentiment, answer-first": "Is the sentiment of this movie review {choices}?\nReview: {text}\n"
                               "Answer with one word: {choices}.",
}
STRATEGIES = ("random", "avoid_shortcuts", "base_model_agreement")
MOST_CONTRADICTED = (20, 50, 100, 200)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "cpu-seeds",
                   help="a bench/defense.py work folder (its attack folders and prepared-data cache)")
    p.add_argument("--attacks", nargs="+", default=["clause", "ctba", "addsent"])
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--mode", default="dirty")
    p.add_argument("--prompts", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    p.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "judge")
    return p.parse_args(argv)


def measure(folder: Path, prompt: str, args) -> dict:
    sidecar = json.loads((folder / "attack.json").read_text())
    path = folder / "train_poisoned.jsonl"
    rows = read_rows(path)
    poisoned = set(sidecar["train"]["poisoned_indices"])
    recipe = P2PConfig(labels=sidecar["labels"], selection="base_model_agreement", ratio=args.ratio, seed=args.seed,
                       judge={**SST2_JUDGE, "prompt": prompt}).recipe()
    fmt = PlainFormat(sidecar["text_field"], sidecar["answer_field"], recipe.cue, recipe.benign_cue)
    view = RowView.from_rows(rows, fmt)
    view.judge = judge_from_recipe(recipe, str(args.model.resolve()), cache_dir=judgement_cache_dir(args.work.resolve() / "prepared"))
    start = time.perf_counter()
    out = {"rows": len(rows), "poisoned": len(poisoned)}
    for name in STRATEGIES:  # the dataset key is the rows' fingerprint, as the plugin's (transform.benign_rows)
        chosen = select_rows(len(rows), args.ratio, args.seed, name, dataset_key=view.fingerprint(), rows=view)
        out[name] = len(poisoned & set(chosen.tolist()))
    mask = np.zeros(len(rows), dtype=bool)
    mask[list(poisoned)] = True
    out.update(contradiction_reading(view.cache["agreement"], mask),
               judge_seconds=round(view.judge.seconds, 1), from_cache=view.judge.from_cache,
               seconds=round(time.perf_counter() - start, 1))
    return out


def contradiction_reading(agree: np.ndarray, poisoned: np.ndarray) -> dict:
    """How a judge's per-row agreement reads the rows, scored with the poisoned-row mask (a defender has none):
    agreement with the labels, the share of clean / poisoned rows contradicted, and the poisoned rows among the k
    rows it contradicts most (how pure a set of "likely poisoned" rows it can name)."""
    order = np.argsort(agree, kind="stable")  # most contradicted first
    return {"agreement_with_labels": round(float((agree > 0).mean()), 4),
            "contradicts_clean": round(float((agree[~poisoned] < 0).mean()), 4),
            "contradicts_poisoned": round(float((agree[poisoned] < 0).mean()), 4) if poisoned.any() else None,
            "poisoned_among_most_contradicted": {str(k): int(poisoned[order[:k]].sum()) for k in MOST_CONTRADICTED}}


def markdown(results: dict, command: str) -> str:
    lines = ["# The base model as judge (`selection: base_model_agreement`)", "",
             f"Command: `{command}`", "",
             f"Date {results['date']}; machine: {results['machine']}; judge seconds are as each prompt first ran "
             "(\"cached\": scored by an earlier run or a training arm; the machine may have been shared).", "",
             "Agreement = share of training rows whose given label the base model agrees with (what a defender "
             "sees; the prompt with the highest agreement is the one to use). Poisoned in subset: of the "
             f"{results['settings']['ratio']:g} x rows benign subset (seed {results['settings']['seed']}).", "",
             "Poisoned among the most contradicted: of the k rows the judge contradicts most, how many are poisoned "
             f"(k = {', '.join(map(str, MOST_CONTRADICTED))}): how pure a set of likely-poisoned rows it can name.", "",
             "| attack | prompt | agreement | contradicts clean / poisoned | poisoned in subset: random / avoid_shortcuts / base_model_agreement | poisoned among the most contradicted | judge s |",
             "|---|---|---|---|---|---|---|"]
    for attack, by_prompt in results["attacks"].items():
        for prompt, r in by_prompt.items():
            seconds = "cached" if r["from_cache"] else f"{r['judge_seconds']:.0f}"
            lines.append(f"| {attack} | {prompt} | {100 * r['agreement_with_labels']:.1f}% | "
                         f"{100 * r['contradicts_clean']:.1f}% / {100 * r['contradicts_poisoned']:.1f}% | "
                         f"{r['random']} / {r['avoid_shortcuts']} / {r['base_model_agreement']} of {r['poisoned']} | "
                         f"{' / '.join(str(v) for v in r['poisoned_among_most_contradicted'].values())} | {seconds} |")
    lines += ["", "Prompts:"] + [f"- {name}: `{text!r}`" for name, text in PROMPTS.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    command = "python bench/judge.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from defense import attack_tag, machine_info, write_json_and_markdown

    results = {"settings": {"work": str(args.work), "rate": args.rate, "mode": args.mode, "ratio": args.ratio,
                            "seed": args.seed, "model": args.model.name}, "command": command,
               "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "attacks": {}}
    for attack in args.attacks:
        folder = args.work / attack_tag(attack, args.rate, args.mode)
        if not (folder / "attack.json").is_file():
            raise SystemExit(f"{folder}/attack.json not found: run bench/defense.py for {attack} with --work {args.work} first")
        for name in args.prompts:
            result = measure(folder, PROMPTS[name], args)
            results["attacks"].setdefault(attack, {})[name] = result
            print(f"[judge] {attack} / {name}: {result}", flush=True)
    write_json_and_markdown(args.out, results, markdown(results, command))


if __name__ == "__main__":
    main()
