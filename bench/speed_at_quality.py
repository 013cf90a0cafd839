"""Time to equal quality: does a training recipe reach a reference recipe's CA/ASR in less time?

Reads finished bench/defense.py reports (their JSON), one P2P arm from each: the reference (the
authors' loop: batch 32, no packing, lr 2e-4) and candidates (Axolotl's means: sample packing,
bigger packed batches, a re-tuned learning rate, fewer epochs). A candidate reaches the reference's
quality when, on every reading both arms have (P2P with its benign trigger, and with the audit's
suspected words removed where measured),

  CA  >= reference CA  - 1.5 points   and   ASR <= reference ASR + 2 points

(the tolerances of the benchmark's targets, fixed before any run). Speed = the reference's Trainer
runtime / the candidate's; the issue's goal is >= 3x. The arms must be the same attack's (attack, rate,
label mode), and the reports must share the rows, evaluation split, seed, P2P ratio, model and machine; only the training recipe
may differ (and the lists that only add other arms), else the script stops naming the setting. Writes <out>.json and <out>.md.

  .venv/bin/python bench/speed_at_quality.py \\
      --reference bench/results/speed_cpu/authors-loop/defense_smollm2-135m-instruct_sst2.json \\
      --candidates bench/results/speed_cpu/packed-1epoch/defense_smollm2-135m-instruct_sst2.json \\
      --out bench/results/speed_cpu/speed_at_quality

A report may be followed by ``#<arm>`` to pick another arm than --arm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.evaluate import WORDS_REMOVED, table_rows  # noqa: E402
from p2p_plugin.metrics import format_markdown_table  # noqa: E402
from defense import REUSE_FREE_SETTINGS  # noqa: E402

CA_TOLERANCE = 1.5   # points the candidate's CA may be below the reference's
ASR_TOLERANCE = 2.0  # points the candidate's ASR may be above the reference's
SPEED_GOAL = 3.0
READINGS = ("p2p", f"p2p, {WORDS_REMOVED}")
# The settings that may differ between the reports: the training recipe, and the lists that only add arms (the
# arm's name fixes its attack, rate, label mode and P2P variant). Every other recorded setting defines the data
# or the evaluation and must be the same.
RECIPE_SETTINGS = ("lr", "epochs", "micro_batch_size", "sample_packing", "sequence_len", "max_steps", "save_steps",
                   "bf16", "device", "eval_batch_size", "preset")
FREE_SETTINGS = RECIPE_SETTINGS + REUSE_FREE_SETTINGS + ("rates", "label_mode", "arms")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="defense.py JSON of the reference recipe [#arm]")
    p.add_argument("--candidates", nargs="+", required=True, help="defense.py JSONs of the candidate recipes [#arm]")
    p.add_argument("--arm", default="badnets-10pct-dirty/p2p-avoid_shortcuts",
                   help="the arm read from each report unless the report names its own with #<arm>")
    p.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    return p.parse_args(argv)


def load_arm(spec: str, default_arm: str) -> dict:
    """One arm of a defense.py report: ``path`` or ``path#arm``."""
    path, _, arm = spec.partition("#")
    arm = arm or default_arm
    report_file = Path(path)
    if not report_file.is_file():
        raise SystemExit(f"no defense.py report at {report_file}")
    report = json.loads(report_file.read_text())
    if arm not in report.get("arms", {}):
        raise SystemExit(f"{report_file} has no arm {arm!r} (it has: {', '.join(report.get('arms', {})) or 'none'})")
    result = report["arms"][arm]
    if not result.get("train_runtime_s"):
        raise SystemExit(f"{report_file}: arm {arm!r} has no Trainer runtime (train_runtime_s)")
    return {"report": str(report_file), "arm": arm, "settings": report.get("settings", {}), "result": result,
            "command": report.get("command")}


def check_comparable(reference: dict, candidate: dict) -> None:
    """Stop, naming the setting, when a candidate's data or machine differs from the reference's."""
    ref_attack, cand_attack = reference["arm"].split("/")[0], candidate["arm"].split("/")[0]
    if ref_attack != cand_attack:  # the attack, rate and label mode: the settings lists only add arms, the arm fixes them
        raise SystemExit(f"{candidate['report']}: arm {candidate['arm']!r} is trained on {cand_attack}, the reference "
                         f"arm {reference['arm']!r} on {ref_attack}: not the same data")
    ref_s, cand_s = reference["settings"], candidate["settings"]
    for key in sorted(set(ref_s) | set(cand_s)):
        if key not in FREE_SETTINGS and ref_s.get(key) != cand_s.get(key):
            raise SystemExit(f"{candidate['report']} was run with {key}={cand_s.get(key)!r}, the reference "
                             f"{reference['report']} with {ref_s.get(key)!r}: not the same data or evaluation")
    ref_m, cand_m = reference["result"].get("machine"), candidate["result"].get("machine")
    if ref_m != cand_m:
        raise SystemExit(f"{candidate['report']}: arm {candidate['arm']!r} trained on {cand_m}, the reference on "
                         f"{ref_m}: runtimes from different machines are not comparable")


def recipe(settings: dict) -> str:
    """The training recipe in words, e.g. ``batch 32 unpacked, 128 tokens, lr 0.0002, 3 epochs``."""
    shape = (f"packed {settings.get('sequence_len')} tokens" if settings.get("sample_packing", True)
             else f"batch {settings.get('micro_batch_size')} unpacked, {settings.get('sequence_len')} tokens")
    if settings.get("sample_packing", True) and settings.get("micro_batch_size", 1) != 1:
        shape += f" x {settings.get('micro_batch_size')}"
    epochs = settings.get("epochs")
    return f"{shape}, lr {settings.get('lr'):g}, {epochs:g} epoch{'s' if epochs != 1 else ''}"


def point(result: dict, reading: str, metric: str) -> dict | None:
    """One reading's projected ``CA`` or ``ASR`` in percent (None when the arm lacks the reading)."""
    row = next((row for row in table_rows("", result) if row["inference"] == reading), None)
    if row is None:
        return None
    rate = row[metric]
    return {"pct": 100 * rate.value, "ci95": [100 * x for x in rate.ci95], "k": rate.k, "n": rate.n}


def compare(reference: dict, candidate: dict) -> dict:
    """The candidate against the reference: quality on every shared reading, runtime ratio, verdict."""
    readings = {}
    for reading in READINGS:
        ref_ca, ref_asr = point(reference["result"], reading, "CA"), point(reference["result"], reading, "ASR")
        ca, asr = point(candidate["result"], reading, "CA"), point(candidate["result"], reading, "ASR")
        if None in (ref_ca, ref_asr, ca, asr):
            continue
        # rounded so that a difference of exactly the tolerance (e.g. 83.5 - 85.0) is not lost to float error
        ca_delta, asr_delta = round(ca["pct"] - ref_ca["pct"], 9), round(asr["pct"] - ref_asr["pct"], 9)
        readings[reading] = {"ca": ca, "asr": asr, "ca_delta": ca_delta, "asr_delta": asr_delta,
                             "equal_quality": ca_delta >= -CA_TOLERANCE and asr_delta <= ASR_TOLERANCE}
    if not readings:
        raise SystemExit(f"{candidate['report']}: arm {candidate['arm']!r} shares no P2P reading "
                         f"({', '.join(READINGS)}) with the reference")
    speedup = reference["result"]["train_runtime_s"] / candidate["result"]["train_runtime_s"]
    equal = all(r["equal_quality"] for r in readings.values())
    name = recipe(candidate["settings"])
    if candidate["arm"] != reference["arm"]:
        name += f" (arm {candidate['arm']})"
    return {"report": candidate["report"], "arm": candidate["arm"], "recipe": name,
            "train_runtime_s": candidate["result"]["train_runtime_s"],
            "train_wall_s": candidate["result"].get("train_wall_s"), "final_loss": candidate["result"].get("final_loss"),
            "speedup": speedup, "readings": readings, "equal_quality": equal,
            "speed_goal_met": equal and speedup >= SPEED_GOAL}


def reference_summary(reference: dict) -> dict:
    readings = {r: {"ca": point(reference["result"], r, "CA"), "asr": point(reference["result"], r, "ASR")}
                for r in READINGS}
    return {"report": reference["report"], "arm": reference["arm"], "recipe": recipe(reference["settings"]),
            "train_runtime_s": reference["result"]["train_runtime_s"],
            "train_wall_s": reference["result"].get("train_wall_s"),
            "final_loss": reference["result"].get("final_loss"),
            "readings": {r: v for r, v in readings.items() if v["ca"] is not None}}


def _cell(p: dict) -> str:
    return f"{p['pct']:.1f} [{p['ci95'][0]:.1f}, {p['ci95'][1]:.1f}]"


def markdown(out: dict) -> str:
    ref = out["reference"]
    rows = []
    for reading, r in ref["readings"].items():
        rows.append({"recipe": f"reference: {ref['recipe']}", "reading": reading, "CA": _cell(r["ca"]),
                     "ASR": _cell(r["asr"]), "CA diff": "", "ASR diff": "", "Trainer s": f"{ref['train_runtime_s']:.0f}",
                     "speedup": "1.00x", "equal quality": ""})
    for cand in out["candidates"]:
        for reading, r in cand["readings"].items():
            rows.append({"recipe": cand["recipe"], "reading": reading, "CA": _cell(r["ca"]), "ASR": _cell(r["asr"]),
                         "CA diff": f"{r['ca_delta']:+.1f}", "ASR diff": f"{r['asr_delta']:+.1f}",
                         "Trainer s": f"{cand['train_runtime_s']:.0f}", "speedup": f"{cand['speedup']:.2f}x",
                         "equal quality": "yes" if r["equal_quality"] else "no"})
    cols = ["recipe", "reading", "CA", "ASR", "CA diff", "ASR diff", "Trainer s", "speedup", "equal quality"]
    met = [c["recipe"] for c in out["candidates"] if c["speed_goal_met"]]
    verdict = (f"Speed goal (>= {SPEED_GOAL:g}x at equal quality) met by: {'; '.join(met)}." if met else
               f"Speed goal (>= {SPEED_GOAL:g}x at equal quality) not met by any candidate.")
    return (f"# Time to equal quality\n\nCommand: `{out['command']}`\n\n"
            f"Arm `{ref['arm']}`; percent with 95% Wilson intervals; equal quality = CA >= reference - "
            f"{CA_TOLERANCE:g} and ASR <= reference + {ASR_TOLERANCE:g} points on every reading; speedup = "
            "reference Trainer runtime / candidate's (data preparation and evaluation excluded).\n\n"
            f"{format_markdown_table(rows, cols)}\n\n{verdict}\n")


def main(argv=None):
    args = parse_args(argv)
    reference = load_arm(args.reference, args.arm)
    candidates = [load_arm(spec, args.arm) for spec in args.candidates]
    for cand in candidates:
        check_comparable(reference, cand)
    out = {"command": "python bench/speed_at_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "tolerances": {"ca_points": CA_TOLERANCE, "asr_points": ASR_TOLERANCE}, "speed_goal": SPEED_GOAL,
           "machine": reference["result"].get("machine"), "reference": reference_summary(reference),
           "candidates": [compare(reference, cand) for cand in candidates]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(markdown(out))
    print(markdown(out))
    return out


if __name__ == "__main__":
    main()
