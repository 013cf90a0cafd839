"""Defense benchmark: does P2P hold, on which attack, at what cost?

For a model, SST-2 and a list of attacks it trains (through Axolotl, with the plugin) and
evaluates (with the project's evaluator) these arms:
  clean        no poison, no defense: the ASR floor
  no-defense   poisoned data, p2p.enabled: false
  p2p-<sel>    poisoned data, P2P with each selection strategy (random = what a defender who does
               not know the poison draws; avoid_shortcuts = our trigger-agnostic filter)
and writes bench/results/defense_<model>_<data>.{json,md,png}. Resumable: finished arms are
reused (their per-arm JSON lives under --work). Example (the committed run):

  .venv/bin/python bench/defense.py --attacks badnets --rates 0.1 --train-rows 1000 --eval-rows 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.attacks import AttackSpec, read_rows, simulate_attack  # noqa: E402
from p2p_plugin.evaluate import bar_chart, evaluate_classification, table_rows  # noqa: E402
from p2p_plugin.inference import P2PModel  # noqa: E402
from p2p_plugin.manifest import read_manifest  # noqa: E402
from p2p_plugin.metrics import format_markdown_table  # noqa: E402
from p2p_plugin.runs import OFFLINE_ENV, train_arm, training_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--data-dir", default=os.environ.get("P2P_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--work", default=str(REPO / "bench" / "work" / "defense"))
    p.add_argument("--results", default=str(REPO / "bench" / "results"))
    p.add_argument("--attacks", nargs="+", default=["badnets"])
    p.add_argument("--rates", nargs="+", type=float, default=[0.1])
    p.add_argument("--label-mode", default="dirty", choices=["dirty", "clean"])
    p.add_argument("--selections", nargs="+", default=["random", "avoid_shortcuts"])
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--eval-rows", type=int, default=300)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--sequence-len", type=int, default=256)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--target", default="1")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def run_arm(name, data, model, args, work, clean_rows, triggered_rows, defended, selection="random"):
    arm_json = work / f"{name}.result.json"
    if arm_json.is_file():
        print(f"[bench] {name}: reusing {arm_json}", flush=True)
        return json.loads(arm_json.read_text())
    cfg = training_config(model, data, work / name, work / "prepared", args, defended, selection)
    trained = train_arm(cfg, work, name)
    manifest = read_manifest(work / name)
    tokens = sum(d.get("tokens_out") or 0 for d in manifest.datasets)
    runtime = trained.get("train_runtime")
    result = evaluate_classification(P2PModel.load(work / name, base_model=model), clean_rows, triggered_rows,
                                     args.target, max_rows=args.eval_rows, progress=True)
    result.update(train_wall_s=trained["seconds"], train_runtime_s=runtime,
                  tokens_per_s=(tokens * args.epochs / runtime) if runtime and not args.max_steps else None,
                  final_loss=(trained.get("losses") or [None])[-1], selection=selection if defended else None,
                  rows_selected=sum(d["rows_selected"] for d in manifest.datasets))
    arm_json.write_text(json.dumps(result, indent=2))
    return result


def main(argv=None):
    args = parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = Path(args.model).resolve()
    else:
        from p2p_plugin.default_model import ensure_default_model

        model = ensure_default_model(REPO / "models" / "smollm2-135m-instruct")
    data_dir = Path(args.data_dir)
    rows = read_rows(data_dir / "sst2" / "train.jsonl")
    random.Random(args.seed).shuffle(rows)
    subset = work / "train_subset.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.train_rows]))
    dev = data_dir / "sst2" / "dev.jsonl"

    results, started = {}, time.time()
    for attack in args.attacks:
        for rate in args.rates:
            tag = f"{attack}-{int(rate * 1000) / 10:g}pct-{args.label_mode}"
            attack_dir = work / tag
            spec = AttackSpec(name=attack, poison_rate=rate, target=args.target, seed=args.seed,
                              label_mode=args.label_mode, **({"words": ("mn",)} if attack == "badnets" else {}))
            sidecar = simulate_attack(subset, dev, attack_dir, spec, "plain", "sentence", "label", ["0", "1"])
            clean = read_rows(attack_dir / "test_clean.jsonl")
            triggered = read_rows(attack_dir / "test_triggered.jsonl")
            poisoned = attack_dir / "train_poisoned.jsonl"
            # no-defense first: if the attack does not take, the rest of the matrix says little
            arms = {f"{tag}/no-defense": (poisoned, False, "random")}
            for selection in args.selections:
                arms[f"{tag}/p2p-{selection}"] = (poisoned, True, selection)
            arms[f"{tag}/clean"] = (subset, False, "random")
            for name, (data, defended, selection) in arms.items():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                results[name] = run_arm(name, data, model, args, work, clean, triggered, defended, selection)
                results[name]["poisoned_rows"] = 0 if data == subset else sidecar["train"]["rows_poisoned"]

    settings = {k: v for k, v in vars(args).items() if k not in ("work", "results")}
    out = {"command": "python bench/defense.py " + " ".join(sys.argv[1:]), "settings": settings,
           "model": str(model), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d"), "elapsed_s": time.time() - started, "arms": results}
    stem = f"defense_{model.name}_sst2"
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    rows_md = []
    for name, res in results.items():
        floor_name = name.rsplit("/", 1)[0] + "/clean"
        floor = results.get(floor_name, {}).get("readings", {}).get("no benign trigger", {}).get("asr", {}).get("projected", {}).get("value")
        for row in table_rows(name, res):
            row["ASR - floor"] = None if floor is None else 100 * (row["ASR"].value - floor)
            row["train s"] = res.get("train_runtime_s")
            row["tokens/s"] = res.get("tokens_per_s")
            rows_md.append(row)
    cols = ["arm", "inference", "CA", "ASR", "ASR - floor", "CA strict", "ASR strict", "train s", "tokens/s"]
    table = format_markdown_table(rows_md, cols)
    (res_dir / f"{stem}.md").write_text(f"# Defense benchmark: {model.name} on SST-2\n\nCommand: `{out['command']}`\n\n"
                                        f"Settings: `{json.dumps(settings)}`\n\n{table}\n")
    bar_chart(results, res_dir / f"{stem}.png")
    print(table)
    print(f"\nresults: {res_dir / (stem + '.json')}")


if __name__ == "__main__":
    main()
