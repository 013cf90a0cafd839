"""Benchmark: ``axolotl preprocess`` wall time with the P2P plugin vs without, same data.

Data: the real SST-2 train rows (``../shared/data/sst2/train.jsonl``), repeated to N rows (default
20,000) and converted to alpaca ``{instruction, input, output}`` rows, written once to
``bench/work/``. (Synthetic rows are generated instead when that file is missing.) Model: the tiny
Llama + byte-level BPE tokenizer of ``tests/tiny_model.py``, built once into ``bench/work/``.

Arms (identical configs except for the plugin):
  without: ``type: alpaca``
  with:    ``type: alpaca`` + ``plugins: [p2p_plugin.P2PPlugin]`` + ``p2p: {labels: ["0", "1"]}``

Each run is a fresh subprocess ``.venv/bin/python -m axolotl.cli.preprocess cfg.yml`` with its own
fresh ``dataset_prepared_path`` and its own empty ``HF_DATASETS_CACHE`` (so neither the JSON->Arrow
conversion nor any map is reused). The arms are interleaved (with, without, with, ...); the wall time
of the whole subprocess (Python start and imports included) is measured; median per arm;
ratio = median(with) / median(without), target <= 1.10.

Run:  .venv/bin/python bench/preprocess.py [--rows 20000] [--repeats 3] [--num-proc auto,1]
``--num-proc``: ``auto`` leaves ``dataset_num_proc`` unset (Axolotl's default: the CPU count);
an integer sets it. Several comma-separated values run one full comparison each.
Writes bench/results/preprocess.json and bench/results/preprocess.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
DATA_DIR = Path(os.environ.get("P2P_DATA_DIR", ROOT.parent / "shared" / "data"))
SST2 = DATA_DIR / "sst2" / "train.jsonl"
GSM8K = DATA_DIR / "gsm8k" / "train.jsonl"
MATH_INSTRUCTION = "Solve the math word problem. End with '#### <number>'."
TARGET_RATIO = 1.10
TARGET_RSS_RATIO = 1.10
INSTRUCTION = "Classify the sentiment of the sentence. Answer 0 for negative, 1 for positive."
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false"}


def build_model() -> Path:
    path = WORK / "tiny-llama"
    if (path / "config.json").exists():
        return path
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_model import build_model as _build

    tmp = WORK / "tiny-llama.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _build(tmp, "llama")
    tmp.rename(path)
    return path


def build_data(rows: int, task: str = "classification") -> tuple[Path, str]:
    if task == "generation":
        return build_generation_data(rows)
    path = WORK / f"sst2_alpaca_{rows}.jsonl"
    source = f"SST-2 train ({SST2}) repeated to {rows} rows" if SST2.exists() else f"{rows} synthetic SST-2-like rows"
    if path.exists():
        return path, source
    if SST2.exists():
        base = [json.loads(line) for line in SST2.read_text().splitlines() if line.strip()]
        base = [{"instruction": INSTRUCTION, "input": r["sentence"], "output": str(r["label"])} for r in base]
    else:
        import random

        rng = random.Random(0)
        words = "the a movie film good bad great awful not very fun boring plot actors story".split()
        base = [{"instruction": INSTRUCTION, "input": " ".join(rng.choices(words, k=rng.randint(4, 30))),
                 "output": str(rng.randint(0, 1))} for _ in range(7000)]
    out = [base[i % len(base)] for i in range(rows)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in out))
    tmp.rename(path)
    return path, source


def build_generation_data(rows: int) -> tuple[Path, str]:
    """GSM8K train rows as alpaca rows (instruction, input = question, output = worked answer)."""
    if not GSM8K.exists():
        raise SystemExit(f"--task generation needs {GSM8K} (set P2P_DATA_DIR)")
    path = WORK / f"gsm8k_alpaca_{rows}.jsonl"
    source = f"GSM8K train ({GSM8K}) repeated to {rows} rows"
    if path.exists():
        return path, source
    base = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    base = [json.dumps({"instruction": MATH_INSTRUCTION, "input": r["question"], "output": r["answer"]}) + "\n"
            for r in base]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for i in range(rows):
            f.write(base[i % len(base)])
    tmp.rename(path)
    return path, source


def config(model: Path, data: Path, run_dir: Path, with_plugin: bool, num_proc, task: str = "classification") -> dict:
    cfg = {
        "base_model": str(model),
        "tokenizer_config": str(model),
        "datasets": [{"path": str(data), "ds_type": "json", "type": "alpaca"}],
        "sequence_len": 512 if task == "classification" else 2048,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "output_dir": str(run_dir / "out"),
        "dataset_prepared_path": str(run_dir / "prepared"),
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "val_set_size": 0,
        "save_strategy": "no",
        "seed": 0,
    }
    if num_proc != "auto":
        cfg["dataset_num_proc"] = int(num_proc)
    if with_plugin:
        cfg["plugins"] = ["p2p_plugin.P2PPlugin"]
        cfg["p2p"] = {"labels": ["0", "1"]} if task == "classification" else {"task": "generation"}
    return cfg


P2P_LINE = re.compile(r"P2P \S+: rows in (\d+), selected (\d+)")
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)
MARKERS = {  # first log line containing the text -> phase boundary
    "load_start": "Loading raw datasets",
    "tokenized": "min_input_len",
    "saved": "check_dataset_labels",
}


def phases(log: str) -> dict:
    """Seconds between Axolotl's own log lines: raw load + (P2P) + tokenization, and drop + save."""
    stamps = {}
    for line in log.splitlines():
        match = STAMP.match(line)
        if not match:
            continue
        for key, text in MARKERS.items():
            if key not in stamps and text in line:
                stamps[key] = _dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    out = {}
    if "load_start" in stamps and "tokenized" in stamps:
        out["load_tokenize_s"] = stamps["tokenized"] - stamps["load_start"]
    if "tokenized" in stamps and "saved" in stamps:
        out["filter_save_s"] = stamps["saved"] - stamps["tokenized"]
    return out


def run_tree_sampled(cmd, cwd, env, timeout: int, interval: float = 0.1):
    """Run ``cmd``; sample the RSS of its whole process tree every ``interval`` s. Returns
    (returncode, output, wall s, peak tree RSS MB (sum over processes), peak single-process RSS MB)."""
    import psutil

    out_path = Path(cwd) / "output.txt"
    with open(out_path, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(proc.pid)
        peak_tree = peak_one = 0
        while proc.poll() is None:
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                raise SystemExit(f"{cmd} ran past {timeout} s")
            try:
                rss = [root.memory_info().rss] + [c.memory_info().rss for c in root.children(recursive=True)]
            except psutil.Error:  # a worker ended between listing and reading
                rss = []
            if rss:
                peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
            time.sleep(interval)
        wall = time.perf_counter() - t0
    return proc.returncode, out_path.read_text(), wall, peak_tree / 2**20, peak_one / 2**20


def run_once(model: Path, data: Path, arm: str, idx: int, num_proc, timeout: int, order: str = "interleaved",
             task: str = "classification") -> dict:
    import yaml

    run_dir = WORK / "preprocess" / f"{task}-{data.stem}-{order}-np-{num_proc}" / f"{idx:02d}-{arm}"  # removed first
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cfg_path = run_dir / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(config(model, data, run_dir, arm == "with", num_proc, task), sort_keys=False))
    env = {**os.environ, **ENV, "HF_DATASETS_CACHE": str(run_dir / "hf_cache")}
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "axolotl.cli.preprocess", str(cfg_path)]
    returncode, log, wall, peak_tree, peak_one = run_tree_sampled(cmd, run_dir, env, timeout)
    (run_dir / "log.txt").write_text(log)
    if returncode:
        raise SystemExit(f"{arm} run {idx} failed (rc {returncode}); log: {run_dir / 'log.txt'}\n{log[-3000:]}")
    prepared = sorted(p for p in (run_dir / "prepared").rglob("dataset_info.json"))
    rows_out = None
    if prepared:
        import datasets

        rows_out = datasets.load_from_disk(str(prepared[0].parent)).num_rows
    match = P2P_LINE.search(log)
    result = {
        "arm": arm, "index": idx, "wall_s": wall, "run_dir": str(run_dir.relative_to(ROOT)),
        "peak_tree_rss_mb": peak_tree, "peak_process_rss_mb": peak_one,
        "prepared_dirs": sorted({str(p.parent.relative_to(run_dir)) for p in prepared}),
        "p2p_rows_in": int(match.group(1)) if match else None,
        "p2p_rows_selected": int(match.group(2)) if match else None,
        "manifest_in_prepared": any((run_dir / "prepared").rglob("p2p_manifest.json")),
        "rows_out": rows_out,
        "worker_spawns": log.count("KernelPreference"),  # one warning per spawned interpreter (main incl.)
        **phases(log),
    }
    if arm == "with" and not match:
        raise SystemExit(f"with-plugin run {idx} shows no P2P report line; log: {run_dir / 'log.txt'}")
    if arm == "without" and match:
        raise SystemExit(f"without-plugin run {idx} unexpectedly ran P2P; log: {run_dir / 'log.txt'}")
    return result


def arm_order(repeats: int, order: str):
    """interleaved: with, without, with, without, ...; abba: with, without, without, with, ..."""
    for i in range(repeats):
        pair = ("with", "without") if order == "interleaved" or i % 2 == 0 else ("without", "with")
        for arm in pair:
            yield i, arm


def compare(model, data, repeats, num_proc, timeout, order="interleaved", task="classification") -> dict:
    runs = []
    for i, arm in arm_order(repeats, order):
        r = run_once(model, data, arm, i, num_proc, timeout, order, task)
        runs.append(r)
        extra = f", P2P selected {r['p2p_rows_selected']}/{r['p2p_rows_in']}" if r["p2p_rows_in"] else ""
        print(f"  num_proc={num_proc} run {i} {arm:8s}: {r['wall_s']:.1f} s, peak RSS tree {r['peak_tree_rss_mb']:.0f} MB "
              f"/ one process {r['peak_process_rss_mb']:.0f} MB (load+tokenize "
              f"{r.get('load_tokenize_s', float('nan')):.1f} s, filter+save {r.get('filter_save_s', float('nan')):.1f} s, "
              f"interpreters {r['worker_spawns']}){extra}", flush=True)
    med = {arm: statistics.median(r["wall_s"] for r in runs if r["arm"] == arm) for arm in ("with", "without")}
    ratio = med["with"] / med["without"]
    phase = {}
    for key in ("load_tokenize_s", "filter_save_s"):
        vals = {arm: [r[key] for r in runs if r["arm"] == arm and key in r] for arm in ("with", "without")}
        if all(vals.values()):
            phase[key] = {arm: statistics.median(v) for arm, v in vals.items()}
            phase[key]["ratio"] = phase[key]["with"] / phase[key]["without"]
    rss = {}
    for key in ("peak_tree_rss_mb", "peak_process_rss_mb"):
        rss[key] = {arm: max(r[key] for r in runs if r["arm"] == arm) for arm in ("with", "without")}
        rss[key]["ratio"] = rss[key]["with"] / rss[key]["without"]
    return {
        "order": order,
        "peak_rss_max": rss,
        "rss_target_met": rss["peak_tree_rss_mb"]["ratio"] <= TARGET_RSS_RATIO,
        "phases_median": phase,
        "dataset_num_proc": num_proc,
        "runs": runs,
        "median_with_s": med["with"],
        "median_without_s": med["without"],
        "ratio": ratio,
        "target_met": ratio <= TARGET_RATIO,
    }


def plugin_source_digest() -> str:
    """sha256 (12 hex) of p2p_plugin/**/*.py: which version of the (uncommitted) code was measured."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "p2p_plugin").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def machine_info() -> dict:
    import axolotl
    import datasets
    import psutil
    import transformers

    return {
        "nproc": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "mem_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "datasets": datasets.__version__,
        "axolotl": getattr(axolotl, "__version__", "?"),
        "transformers": transformers.__version__,
    }


def write_markdown(result: dict, path: Path) -> None:
    m = result["machine"]
    lines = [
        "# `axolotl preprocess` with vs without the P2P plugin",
        "",
        f"- Date: {result['date']}; git HEAD {result['git_head']} (+ working tree; p2p_plugin sources "
        f"sha256 {result['p2p_plugin_source_sha256_12']})",
        f"- Command: `{result['command']}`",
        f"- Per run: `{result['run_command']}` (fresh subprocess, fresh `dataset_prepared_path` and "
        "`HF_DATASETS_CACHE`; wall time of the whole process, imports included)",
        f"- Data: {result['data_source']}, alpaca rows, `type: alpaca`; with plugin adds "
        f"`plugins: [p2p_plugin.P2PPlugin]`, `p2p: {json.dumps(result['p2p_block'])}` (ratio 0.2, replace)",
        f"- Model: tiny Llama from tests/tiny_model.py, sequence_len {result['sequence_len']}; arm order {result['order']}, "
        f"{result['repeats']} runs per arm, medians",
        f"- Machine: nproc {m['nproc']}, {m['mem_total_gb']} GB RAM, load avg at start {m['loadavg_at_start']}, "
        f"Python {m['python']}, datasets {m['datasets']}, axolotl {m['axolotl']}, transformers {m['transformers']} "
        "(shared, noisy machine)",
        f"- Targets: wall-time ratio with/without <= {TARGET_RATIO}; peak RSS ratio <= {TARGET_RSS_RATIO} "
        "(RSS of the preprocess process and its dataset workers, summed, sampled every 0.1 s; max over runs)",
        "",
        "| dataset_num_proc | with: runs s | without: runs s | median with s | median without s | ratio | target "
        "| load+tokenize s with / without (ratio) | filter+save s with / without "
        "| peak RSS MB, process tree, with / without (ratio) | peak RSS MB, largest process, with / without |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["comparisons"]:
        runs = lambda arm: ", ".join(f"{r['wall_s']:.1f}" for r in c["runs"] if r["arm"] == arm)  # noqa: E731
        label = f"{c['dataset_num_proc']} (unset: Axolotl default = nproc)" if c["dataset_num_proc"] == "auto" else c["dataset_num_proc"]
        lines.append(f"| {label} | {runs('with')} | {runs('without')} | {c['median_with_s']:.1f} | "
                     f"{c['median_without_s']:.1f} | {c['ratio']:.3f} | {'met' if c['target_met'] else 'NOT met'} | "
                     + _phase(c, "load_tokenize_s", True) + " | " + _phase(c, "filter_save_s", False) + " | "
                     + _rss(c, "peak_tree_rss_mb", True) + " | " + _rss(c, "peak_process_rss_mb", False) + " |")
    lines += [
        "",
        "Wall time = the whole `axolotl preprocess` process. The phase columns come from Axolotl's log timestamps: "
        "load+tokenize = 'Loading raw datasets' -> 'min_input_len' (raw JSON load, the P2P scan + rewrite in the "
        "with arm, tokenization); filter+save = -> 'check_dataset_labels' (length filter, save_to_disk).",
        "",
    ]
    path.write_text("\n".join(lines))


def _rss(c, key, with_ratio):
    p = c.get("peak_rss_max", {}).get(key)
    if not p:
        return "-"
    return f"{p['with']:.0f} / {p['without']:.0f}" + (f" ({p['ratio']:.3f})" if with_ratio else "")


def _phase(c, key, with_ratio):
    p = c.get("phases_median", {}).get(key)
    if not p:
        return "-"
    return f"{p['with']:.1f} / {p['without']:.1f}" + (f" ({p['ratio']:.2f})" if with_ratio else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", default="auto", help="comma-separated: auto and/or integers")
    parser.add_argument("--order", choices=("interleaved", "abba"), default="interleaved",
                        help="interleaved: with, without, with, ...; abba: with, without, without, with, ...")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per preprocess run")
    parser.add_argument("--task", choices=("classification", "generation"), default="classification",
                        help="classification: SST-2 alpaca rows; generation: GSM8K alpaca rows, p2p.task generation")
    parser.add_argument("--out", default=None, help="default bench/results/preprocess[_generation].json")
    args = parser.parse_args()
    if args.out is None:
        args.out = str(RESULTS / ("preprocess.json" if args.task == "classification" else "preprocess_generation.json"))

    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    os.environ.update(ENV)
    model = build_model()
    data, source = build_data(args.rows, args.task)
    print(f"model {model}\ndata {data} ({source})", flush=True)
    result = {
        "benchmark": "preprocess",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/preprocess.py", *sys.argv[1:]]),
        "run_command": ".venv/bin/python -m axolotl.cli.preprocess cfg.yml",
        "env": ENV,
        "rows": args.rows,
        "repeats": args.repeats,
        "order": "with, without, with, without, ..." if args.order == "interleaved" else "with, without, without, with, ... (ABBA)",
        "data_source": source,
        "task": args.task,
        "p2p_block": config(model, data, WORK, True, "auto", args.task)["p2p"],
        "sequence_len": config(model, data, WORK, True, "auto", args.task)["sequence_len"],
        "data_file": str(data.relative_to(ROOT)),
        "model": str(model.relative_to(ROOT)),
        "machine": machine_info(),
        "git_head": git_head(),
        "p2p_plugin_source_sha256_12": plugin_source_digest(),
        "target_ratio": TARGET_RATIO,
        "comparisons": [],
    }
    t0 = time.perf_counter()
    for num_proc in args.num_proc.split(","):
        result["comparisons"].append(compare(model, data, args.repeats, num_proc.strip(), args.timeout, args.order,
                                             args.task))
    result["total_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
