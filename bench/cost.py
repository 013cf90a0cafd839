"""Training cost of P2P, side by side: what does the defense cost per token and per epoch?

Arms (same rows, same model, same LoRA, one epoch each, run interleaved so that a noisy shared
machine hits them alike):
  no-defense      p2p.enabled: false, packed (the baseline)
  replace         P2P, mode replace (the default): the benign rows are rewritten in place
  augment         P2P, mode augment: rewritten copies are added (more rows, more tokens)
  authors-batch32 P2P replace, the authors' loop shape: batch 32, no packing, padded batches
Measured: the Trainer's own ``train_runtime`` (data preparation excluded; `bench/preprocess.py`
measures that), real (unpadded) training tokens from the P2P manifest, tokens/s = tokens /
runtime. Ratios are medians over --repeats. Results: bench/results/cost_<model>.{json,md}.

  .venv/bin/python bench/cost.py --train-rows 200 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.attacks import read_rows  # noqa: E402
from p2p_plugin.manifest import read_manifest  # noqa: E402
from p2p_plugin.metrics import format_markdown_table  # noqa: E402
from p2p_plugin.runs import OFFLINE_ENV, resolve_model, train_arm, training_config  # noqa: E402

ARMS = ("no-defense", "replace", "augment", "authors-batch32")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--data-dir", default=os.environ.get("P2P_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--work", default=str(REPO / "bench" / "work" / "cost"))
    p.add_argument("--results", default=str(REPO / "bench" / "results"))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--train-rows", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sequence-len", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=1, help="packed arms (authors-batch32 uses 32)")
    p.add_argument("--seed", type=int, default=0)
    return p


def arm_config(arm: str, model: Path, data: Path, out: Path, prepared: Path, args) -> dict:
    settings = argparse.Namespace(ratio=args.ratio, seed=args.seed, sequence_len=args.sequence_len, epochs=1,
                                  lr=args.lr, micro_batch_size=args.micro_batch_size, max_steps=None, save_steps=0)
    cfg = training_config(model, data, out, prepared, settings, defended=arm != "no-defense",
                          mode="augment" if arm == "augment" else "replace", packing=arm != "authors-batch32")
    if arm == "authors-batch32":
        cfg.update(micro_batch_size=32)
    return cfg


def run_once(arm: str, repeat: int, model: Path, data: Path, work: Path, args) -> dict:
    name = f"{arm}-r{repeat}"
    out = work / name
    shutil.rmtree(out, ignore_errors=True)  # a timing is only valid for a complete, uninterrupted run
    trained = train_arm(arm_config(arm, model, data, out, work / "prepared", args), work, name)
    datasets = read_manifest(out).datasets
    tokens = sum(d.get("tokens_out") or 0 for d in datasets)
    runtime = trained["train_runtime"]
    return {"arm": arm, "repeat": repeat, "train_runtime_s": runtime, "tokens": tokens,
            "tokens_per_s": tokens / runtime, "rows_out": sum(d["rows_out"] for d in datasets),
            "final_loss": (trained.get("losses") or [None])[-1]}


def summarize(runs: list[dict]) -> dict:
    by_arm = {}
    for run in runs:
        by_arm.setdefault(run["arm"], []).append(run)
    summary = {arm: {"runtime_s": statistics.median(r["train_runtime_s"] for r in rs),
                     "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                     "tokens": rs[0]["tokens"], "rows_out": rs[0]["rows_out"], "runs": len(rs)}
               for arm, rs in by_arm.items()}
    base = summary.get("no-defense")
    if base:
        for values in summary.values():
            values["tokens_per_s_vs_no_defense"] = values["tokens_per_s"] / base["tokens_per_s"]
            values["epoch_time_vs_no_defense"] = values["runtime_s"] / base["runtime_s"]
    return summary


def _ratio(value):
    return None if value is None else f"{value:.3f}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = resolve_model(args.model, REPO / "models")
    rows = read_rows(Path(args.data_dir) / "sst2" / "train.jsonl")
    random.Random(args.seed).shuffle(rows)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.train_rows]))
    started, runs = time.time(), []
    for repeat in range(args.repeats):
        order = args.arms if repeat % 2 == 0 else list(reversed(args.arms))  # ABCD DCBA: no arm always runs first
        for arm in order:
            runs.append(run_once(arm, repeat, model, data, work, args))
    summary = summarize(runs)
    command = "python bench/cost.py " + " ".join(sys.argv[1:])
    out = {"command": command, "settings": {k: v for k, v in vars(args).items() if k not in ("work", "results")},
           "model": model.name, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d"), "elapsed_s": time.time() - started, "runs": runs, "summary": summary}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / f"cost_{model.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    table = format_markdown_table(
        [{"arm": arm, "rows": s["rows_out"], "tokens": s["tokens"], "epoch s": s["runtime_s"],
          "tokens/s": s["tokens_per_s"], "tokens/s vs no-defense": _ratio(s.get("tokens_per_s_vs_no_defense")),
          "epoch time vs no-defense": _ratio(s.get("epoch_time_vs_no_defense"))} for arm, s in summary.items()],
        ["arm", "rows", "tokens", "epoch s", "tokens/s", "tokens/s vs no-defense", "epoch time vs no-defense"])
    (res / f"cost_{model.name}.md").write_text(
        f"# Training cost: {model.name}\n\nCommand: `{command}`\n\nOne epoch each, medians of {args.repeats} "
        f"interleaved runs; Trainer runtime (data preparation excluded); tokens = real tokens (no padding).\n\n"
        f"{table}\n")
    print(table)


if __name__ == "__main__":
    main()
