"""Collect the per-arm results of throughput.sh into gpu_throughput.json and gpu_throughput.md.

    python summarize.py WORKDIR OUTDIR [ELAPSED_S]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from statistics import mean

TARGET = 0.98
KEYS = ("tokens_per_s_steady", "tokens_per_s_whole", "tokens_per_s_hf_runtime", "rows_per_s_steady",
        "steps_per_s_steady", "train_samples_per_second", "train_runtime", "steps", "nonpad_tokens",
        "token_slots", "fill", "packed_rows", "trainable_tokens", "peak_allocated_gib", "peak_reserved_gib", "axolotl_logged_max_allocated_gib",
        "loss_first10", "loss_last10", "train_loss", "nonfinite_loss_steps", "zero_loss_steps",
        "process_seconds", "error", "skipped", "device")


def _r(v, n=1):
    return round(v, n) if isinstance(v, float) else v


def load_arms(work: Path) -> list[dict]:
    arms = []
    for path in sorted((work / "logs").glob("*.json")):
        order, kind, arm = path.stem.split("_", 2)
        data = json.loads(path.read_text())
        entry = {"order": int(order), "kind": kind, "arm": arm}
        entry.update({k: data[k] for k in KEYS if k in data})
        log = path.with_suffix(".log")
        if log.exists():  # the plugin's own report, present when this arm prepared the data
            entry["p2p_log"] = [line.split("] ", 3)[-1].strip() for line in log.read_text(errors="replace").splitlines()
                                if "[axolotl.integrations.p2p_plugin] P2P " in line]
        if "losses" in data:
            entry["losses_every10"] = data["losses"][::10]
        arms.append(entry)
    return arms


def compare(arms: list[dict], kind: str, key: str = "tokens_per_s_steady") -> dict | None:
    done = [a for a in arms if a["kind"] == kind and a.get(key)]
    base = [a[key] for a in done if a["arm"] == "base"]
    p2p = [a[key] for a in done if a["arm"] == "p2p"]
    if not base or not p2p:
        return None
    pairs = [round(p / b, 4) for b, p in zip(base, p2p)]
    ratio = mean(p2p) / mean(base)
    return {"metric": key, "base": [round(v) for v in base], "p2p": [round(v) for v in p2p],
            "base_mean": round(mean(base)), "p2p_mean": round(mean(p2p)), "ratio": round(ratio, 4),
            "pair_ratios": pairs, "target": TARGET, "meets_target": ratio >= TARGET}


def main(work: str, out: str, elapsed: str | None = None) -> None:
    work, out = Path(work), Path(out)
    arms = load_arms(work)
    setup = json.loads((work / "setup.json").read_text()) if (work / "setup.json").exists() else {}
    versions = (out / "versions.txt").read_text() if (out / "versions.txt").exists() else ""
    device = next((a["device"] for a in arms if a.get("device")), None)
    nan_arms = [f"{a['order']:02d}_{a['kind']}_{a['arm']}" for a in arms if a.get("nonfinite_loss_steps")]
    result = {
        "device": device,
        "versions": versions.strip().splitlines(),
        "setup": setup,
        "elapsed_s": int(elapsed) if elapsed else None,
        "command": os.environ.get("RUN_COMMAND", "bash bench/gpu/throughput.sh"),
        "comparisons": {kind: {k: compare(arms, kind, k) for k in ("tokens_per_s_steady", "tokens_per_s_whole",
                                                                   "tokens_per_s_hf_runtime")}
                        for kind in ("lora", "full")},
        "nan_or_inf_loss_arms": nan_arms,
        "arms": arms,
    }
    (out / "gpu_throughput.json").write_text(json.dumps(result, indent=1))

    lines = [f"# P2P training throughput on {device}", "",
             f"Command: `{result['command']}`", "",
             "Versions: " + "; ".join(l.strip() for l in result["versions"]), "",
             f"Setup: {json.dumps(setup)}", "",
             "| # | kind | arm | tok/s steady | tok/s whole | tok/s (HF runtime) | rows/s | HF samples/s "
             "| fill | peak alloc GiB | peak reserved GiB | loss first10 | loss last10 | NaN/Inf steps | zero-loss steps |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for a in arms:
        if a.get("skipped"):
            lines.append(f"| {a['order']} | {a['kind']} | {a['arm']} | skipped (time budget) |||||||||||||")
            continue
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            a["order"], a["kind"], a["arm"], _r(a.get("tokens_per_s_steady"), 0), _r(a.get("tokens_per_s_whole"), 0),
            _r(a.get("tokens_per_s_hf_runtime"), 0), _r(a.get("rows_per_s_steady")), a.get("train_samples_per_second"),
            _r(a.get("fill"), 3), _r(a.get("peak_allocated_gib"), 2), _r(a.get("peak_reserved_gib"), 2),
            _r(a.get("loss_first10"), 3), _r(a.get("loss_last10"), 3), a.get("nonfinite_loss_steps", a.get("error")),
            a.get("zero_loss_steps")))
    lines.append("")
    for kind, comps in result["comparisons"].items():
        c = comps["tokens_per_s_steady"]
        if c:
            lines.append(f"- **{kind}**: steady tokens/s base {c['base']} (mean {c['base_mean']}), p2p {c['p2p']} "
                         f"(mean {c['p2p_mean']}); ratio p2p/base **{c['ratio']}** (pairs {c['pair_ratios']}), "
                         f"target >= {TARGET}: {'met' if c['meets_target'] else 'NOT met'}")
    lines.append(f"- NaN/Inf losses: {nan_arms or 'none'}")
    lines.append("")
    (out / "gpu_throughput.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:4])
