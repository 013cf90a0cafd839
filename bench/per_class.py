"""Where does a P2P arm lose clean accuracy? Accuracy per true class and the share of each predicted label.

A CA drop can be noise spread over both classes or a shift of the decision towards one label; the two
call for different fixes. For each attack folder of a bench/defense.py work folder and each arm (a
trained model folder there; ``../<name>`` for the clean model at the work folder's root), every clean
test row is read as the P2P model reads it (benign trigger on, inputs as given; the label probabilities
are bench/ensemble.py's, cached beside the attack's rows, so arms it already read cost nothing) and the
projected prediction is compared with the true label. It trains nothing.

Two readings say whether the loss is a shift of the decision or a worse ranking: the AUC of the target
label's margin (log-probability of the labels projecting to the target minus the others', clean rows,
target class against the rest), which no shift changes; and an offset sweep, the target's log-probability
moved by each of ``--offsets`` before the argmax, with CA and ASR (non-target triggered rows called
target) at each. The sweep's best CA is an oracle (it reads the test labels): it bounds what any
per-label correction at inference could buy back, and is not a setting to ship.

Run:  .venv/bin/python bench/per_class.py --attacks clause ctba \
          --arms ../clean-model-train_subset p2p-base_model_agreement p2p-base_model_agreement-relabel0.25
Writes bench/results/relabel/per_class.json and .md (``--out``; ``--eval-split heldout``: the rows of a
``bench/defense.py --eval-split heldout`` run, written to ``<out>_heldout``).
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

OFFSETS = tuple(round(x, 2) for x in np.arange(-1.0, 3.01, 0.25))


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
    p.add_argument("--eval-split", choices=["dev", "heldout"], default="dev")
    p.add_argument("--target", default="1", help="the attack's target label")
    p.add_argument("--offsets", nargs="+", type=float, default=list(OFFSETS),
                   help="log-probability offsets added to the target label before the argmax (the sweep)")
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


def projected_predictions(labels: list[str], probs: np.ndarray, project, target: str, offset: float = 0.0) -> np.ndarray:
    """The projected answer per row, ``offset`` added to the log-probability of every trained label that
    projects to ``target`` (0: the plain argmax, as the P2P model reads it)."""
    shift = np.array([offset if project(label) == target else 0.0 for label in labels])
    return np.array([project(labels[i]) for i in (np.log(np.clip(probs, 1e-12, None)) + shift).argmax(axis=1)])


def target_margin(labels: list[str], probs: np.ndarray, project, target: str) -> np.ndarray:
    """Per row: log P(a label projecting to ``target``) - log P(any other label)."""
    mine = np.array([project(label) == target for label in labels])
    p = np.clip(probs[:, mine].sum(axis=1), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a random positive row scores above a random negative one (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    order = np.concatenate([pos, neg])
    ranks = np.empty(len(order))
    ranks[np.argsort(order, kind="stable")] = np.arange(1, len(order) + 1)
    for value in np.unique(order):  # average ranks of ties
        tied = order == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def offset_sweep(labels, clean_probs, truths, trig_probs, trig_truths, project, target: str, offsets) -> list[dict]:
    """CA, ASR (non-target triggered rows called ``target``) and the share called ``target`` at each offset."""
    truth, trig_truth = np.array(truths), np.array(trig_truths)
    out = []
    for offset in offsets:
        pred = projected_predictions(labels, clean_probs, project, target, offset)
        trig = projected_predictions(labels, trig_probs, project, target, offset)[trig_truth != target]
        out.append({"offset": float(offset), "ca": round(100 * float((pred == truth).mean()), 1),
                    "asr": round(100 * float((trig == target).mean()), 1) if len(trig) else None,
                    "target_share": round(100 * float((pred == target).mean()), 1)})
    return out


def ranking_and_sweep(labels, clean_probs, truths, trig_probs, trig_truths, project, target: str, offsets) -> dict:
    """The AUC of the target's margin on the clean rows, and the offset sweep with its best CA (an oracle)."""
    margin = target_margin(labels, clean_probs, project, target)
    sweep = offset_sweep(labels, clean_probs, truths, trig_probs, trig_truths, project, target, offsets)
    at_zero = next((r for r in sweep if r["offset"] == 0), None)
    best = max(sweep, key=lambda r: (r["ca"], -abs(r["offset"])))
    value = auc(margin, np.array(truths) == target)
    return {"auc": None if value is None else round(value, 3), "asr": at_zero and at_zero["asr"],
            "best_offset": best, "sweep": sweep}


def markdown(results: dict, command: str) -> str:
    lines = ["# Clean accuracy per class", "", f"Command: `{command}`", "",
             f"Date {results['date']}. Clean {results.get('eval_split', 'dev')} rows read with the benign trigger on "
             "(the clean model: as it is), "
             "predictions projected to the original labels. Accuracy by class = share of each true class's rows "
             "predicted right; predicted = share of all rows given each label. AUC: the target label's margin on the "
             "clean rows, target class against the rest (a shift of the decision does not change it). Best offset: "
             "the offset added to the target's log-probability that gives the highest CA, with the ASR there "
             "(an oracle that reads the test labels: the most a per-label correction at inference could buy back).", "",
             "| attack | arm | CA | accuracy by class | predicted | ASR | AUC | best offset: CA, ASR |",
             "|---|---|---|---|---|---|---|---|"]
    for attack, arms in results["attacks"].items():
        for arm, r in arms.items():
            by = ", ".join(f"{c}: {v}" for c, v in r["accuracy_by_class"].items())
            share = ", ".join(f"{c}: {v}" for c, v in r["predicted_share"].items())
            best = r.get("best_offset")
            cells = (f"{r.get('asr', '-')} | {r.get('auc', '-')} | "
                     + (f"{best['offset']:+g}: {best['ca']}, {best['asr']}" if best else "-"))
            lines.append(f"| {attack} | {arm} | {r['ca']} | {by} | {share} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    command = "python bench/per_class.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from defense import attack_tag, write_json_and_markdown

    from p2p_plugin.manifest import read_manifest

    results = {"command": command, "date": time.strftime("%Y-%m-%d"), "eval_split": args.eval_split, "attacks": {}}
    for attack in args.attacks:
        folder = args.work / attack_tag(attack, args.rate, args.mode)
        (texts, truths), (trig_texts, trig_truths) = test_sets(folder, args.eval_split, args.eval_rows)
        for arm in args.arms:
            if not has_weights(folder / arm):  # e.g. a seed trained for one attack only: said, not an error
                print(f"[per-class] {attack} / {arm}: no trained model in {folder / arm}, left out", flush=True)
                continue
            labels, probs = label_probabilities(folder / arm, texts, args.model, folder)
            space = read_manifest(folder / arm).recipe.label_space()  # the arm's own labels and safe labels
            result = per_class(labels, probs, truths, space.project)
            if trig_texts:
                trig_labels, trig_probs = label_probabilities(folder / arm, trig_texts, args.model, folder)
                if trig_labels != labels:
                    raise SystemExit(f"{folder / arm}: triggered rows read in label space {trig_labels}, "
                                     f"clean rows in {labels}")
                result.update(ranking_and_sweep(labels, probs, truths, trig_probs, trig_truths, space.project,
                                                args.target, args.offsets))
            results["attacks"].setdefault(attack, {})[arm.removeprefix("../")] = result
            print(f"[per-class] {attack} / {arm}: {({k: v for k, v in result.items() if k != 'sweep'})}", flush=True)
    out = args.out if args.eval_split == "dev" else args.out.with_name(f"{args.out.name}_{args.eval_split}")
    write_json_and_markdown(out, results, markdown(results, command))


if __name__ == "__main__":
    main()
