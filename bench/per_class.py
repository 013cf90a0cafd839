"""Where does a P2P arm lose clean accuracy? Accuracy per true class and the share of each predicted label.

A CA drop can be noise spread over both classes or a shift of the decision towards one label; the two
call for different fixes. For each attack folder of a bench/defense.py work folder and each arm (a
trained model folder there; ``../<name>`` for the clean model at the work folder's root), every clean
test row is read as the P2P model reads it (benign trigger on, inputs as given; the label probabilities
are bench/ensemble.py's, cached beside the attack's rows, so arms it already read cost nothing) and the
projected prediction is compared with the true label. It trains nothing.

Run:  .venv/bin/python bench/per_class.py --attacks clause ctba \
          --arms ../clean-model-train_subset p2p-base_model_agreement p2p-base_model_agreement-relabel0.25
Writes bench/results/relabel/per_class.json and .md (``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ensemble import has_weights, label_probabilities, test_sets  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "cpu-seeds")
    p.add_argument("--attacks", nargs="+", default=["clause", "ctba"])
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--mode", default="dirty")
    p.add_argument("--arms", nargs="+", required=True,
                   help="model folders inside each attack folder (one an attack lacks is left out, and said so)")
    p.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    p.add_argument("--eval-rows", type=int, default=1000)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "relabel" / "per_class")
    return p.parse_args(argv)


def per_class(labels: list[str], probs: np.ndarray, truths: list[str], project) -> dict:
    """Accuracy per true class and the share of each projected prediction, in %."""
    pred = np.array([project(labels[i]) for i in probs.argmax(axis=1)])
    truth = np.array(truths)
    classes = sorted(set(truths))
    return {"rows": len(truths), "ca": round(100 * float((pred == truth).mean()), 1),
            "accuracy_by_class": {c: round(100 * float((pred[truth == c] == c).mean()), 1) for c in classes},
            "rows_by_class": {c: int((truth == c).sum()) for c in classes},
            "predicted_share": {c: round(100 * float((pred == c).mean()), 1) for c in classes}}


def markdown(results: dict, command: str) -> str:
    lines = ["# Clean accuracy per class", "", f"Command: `{command}`", "",
             f"Date {results['date']}. Clean dev rows read with the benign trigger on (the clean model: as it is), "
             "predictions projected to the original labels. Accuracy by class = share of each true class's rows "
             "predicted right; predicted = share of all rows given each label.", "",
             "| attack | arm | CA | accuracy by class | predicted |", "|---|---|---|---|---|"]
    for attack, arms in results["attacks"].items():
        for arm, r in arms.items():
            by = ", ".join(f"{c}: {v}" for c, v in r["accuracy_by_class"].items())
            share = ", ".join(f"{c}: {v}" for c, v in r["predicted_share"].items())
            lines.append(f"| {attack} | {arm} | {r['ca']} | {by} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    command = "python bench/per_class.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from defense import attack_tag, write_json_and_markdown

    from p2p_plugin.manifest import read_manifest

    results = {"command": command, "date": time.strftime("%Y-%m-%d"), "attacks": {}}
    for attack in args.attacks:
        folder = args.work / attack_tag(attack, args.rate, args.mode)
        (texts, truths), _ = test_sets(folder, "dev", args.eval_rows)
        for arm in args.arms:
            if not has_weights(folder / arm):  # e.g. a seed trained for one attack only: said, not an error
                print(f"[per-class] {attack} / {arm}: no trained model in {folder / arm}, left out", flush=True)
                continue
            labels, probs = label_probabilities(folder / arm, texts, args.model, folder)
            space = read_manifest(folder / arm).recipe.label_space()  # the arm's own labels and safe labels
            result = per_class(labels, probs, truths, space.project)
            results["attacks"].setdefault(attack, {})[arm.removeprefix("../")] = result
            print(f"[per-class] {attack} / {arm}: {result}", flush=True)
    write_json_and_markdown(args.out, results, markdown(results, command))


if __name__ == "__main__":
    main()
