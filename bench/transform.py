"""Benchmark: the P2P transform (``apply_p2p``) alone, on N synthetic classification rows.

The input is generated in chunks straight into an Arrow stream file (``bench/work/``) and opened
memory-mapped with ``Dataset.from_file``, so it is never a Python list of the whole set. Every
timed repetition runs in a fresh ``spawn`` subprocess; that process opens the file, records its RSS,
then runs ``apply_p2p`` once (single process, ``keep_in_memory=False``, HF caching disabled so the
map really runs and writes its Arrow output to a temporary cache file) while a background thread
samples its RSS with psutil every few milliseconds.

Reported per format (``plain``: PlainFormat over {sentence, label}; ``alpaca``: AlpacaFormat over
{instruction, input, output}): rows/s of apply_p2p (median of the repetitions), the split between
the validation scan and the rewrite map, and RSS before / peak during / peak growth. RSS counts the
memory-mapped input pages the transform touches; ``anon`` (RSS minus file-backed shared pages) is
the growth of the process's own memory.

Run:  .venv/bin/python bench/transform.py [--rows 1000000] [--repeats 3]
Writes bench/results/transform.json and bench/results/transform.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"

TARGET_ROWS_PER_S = 100_000  # classification rows (SST-2-sized)
TARGET_GEN_ROWS_PER_S = 50_000  # generation rows (GSM8K-sized: ~240-char question, ~300-char answer)
TARGET_RSS_GROWTH_MB = 1024

CHUNK = 100_000
INSTRUCTION = "Classify the sentiment of the sentence. Answer 0 for negative, 1 for positive."


# --------------------------------------------------------------------------------------------- data
def _vocab(rng, size=5000):
    import numpy as np

    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size=size)
    return [
        "".join(letters[rng.integers(0, 26, size=n)]) for n in lengths
    ] + [",", ".", "'s", "n't", "the", "a", "film", "movie"]


def _sentences(rng, vocab, n):
    """n SST-2-like sentences (4..40 tokens, ~100 chars on average)."""
    import numpy as np

    words = np.array(vocab, dtype=object)
    lengths = rng.integers(4, 41, size=n)
    flat = words[rng.integers(0, len(vocab), size=int(lengths.sum()))]
    out, pos = [], 0
    for n_words in lengths.tolist():
        out.append(" ".join(flat[pos:pos + n_words]))
        pos += n_words
    return out


GENERATION_FORMATS = ("gen_plain", "gen_alpaca", "gen_chat")
MATH_INSTRUCTION = "Solve the math word problem. End with '#### <number>'."


def _gsm8k_rows() -> list[dict]:
    """The real GSM8K train rows (question/answer), read from $P2P_DATA_DIR (default ../shared/data)."""
    data_dir = Path(os.environ.get("P2P_DATA_DIR", ROOT.parent / "shared" / "data"))
    path = data_dir / "gsm8k" / "train.jsonl"
    if not path.is_file():
        raise SystemExit(f"generation formats need GSM8K rows: {path} not found (set P2P_DATA_DIR)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def generate_generation(path: Path, rows: int, fmt: str) -> Path:
    """``rows`` GSM8K-sized rows (the real train rows, cycled) in the plain / alpaca / chat layout."""
    import pyarrow as pa

    source = _gsm8k_rows()
    tmp = path.with_suffix(".tmp")
    writer = None
    with pa.OSFile(str(tmp), "wb") as sink:
        for start in range(0, rows, CHUNK):
            chunk = [source[i % len(source)] for i in range(start, min(rows, start + CHUNK))]
            q = [r["question"] for r in chunk]
            a = [r["answer"] for r in chunk]
            if fmt == "gen_plain":
                batch = pa.RecordBatch.from_pydict({"question": q, "answer": a})
            elif fmt == "gen_alpaca":
                batch = pa.RecordBatch.from_pydict({"instruction": [MATH_INSTRUCTION] * len(q), "input": q, "output": a})
            else:
                batch = pa.RecordBatch.from_pydict({"messages": [
                    [{"role": "user", "content": x}, {"role": "assistant", "content": y}] for x, y in zip(q, a)]})
            if writer is None:
                writer = pa.ipc.new_stream(sink, batch.schema)
            writer.write_batch(batch)
        writer.close()
    tmp.rename(path)
    return path


def generate(path: Path, rows: int, fmt: str, seed: int = 0) -> Path:
    """Write ``rows`` synthetic rows to an Arrow stream file, CHUNK rows at a time."""
    import numpy as np
    import pyarrow as pa

    if path.exists():
        return path
    if fmt in GENERATION_FORMATS:
        return generate_generation(path, rows, fmt)
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng)
    if fmt == "plain":
        schema = pa.schema([("sentence", pa.string()), ("label", pa.int64())])
    else:
        schema = pa.schema([("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())])
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        done = 0
        while done < rows:
            n = min(CHUNK, rows - done)
            sentences = _sentences(rng, vocab, n)
            labels = rng.integers(0, 2, size=n)
            if fmt == "plain":
                batch = pa.record_batch([pa.array(sentences, pa.string()), pa.array(labels, pa.int64())], schema=schema)
            else:
                batch = pa.record_batch([pa.array([INSTRUCTION] * n, pa.string()), pa.array(sentences, pa.string()),
                                         pa.array([str(v) for v in labels.tolist()], pa.string())], schema=schema)
            writer.write_batch(batch)
            done += n
    tmp.rename(path)
    return path


# ---------------------------------------------------------------------------------------- measuring
class RssSampler(threading.Thread):
    """Samples this process's RSS (and RSS minus file-backed shared pages) every ``interval`` s."""

    def __init__(self, interval=0.005):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak_rss = 0
        self.peak_anon = 0
        self.samples = 0
        self._halt = threading.Event()

    def sample(self):
        info = self.proc.memory_info()
        self.peak_rss = max(self.peak_rss, info.rss)
        self.peak_anon = max(self.peak_anon, info.rss - getattr(info, "shared", 0))
        self.samples += 1

    def run(self):
        while not self._halt.is_set():
            self.sample()
            time.sleep(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        self.sample()


def recipe_and_format(fmt_name: str, selection: str = "random"):
    """The default recipe of each benchmarked format (``gen_*``: task generation, default safe prefix),
    with the given selection strategy."""
    from p2p_plugin.args import P2PConfig
    from p2p_plugin.formats import AlpacaFormat, ChatFormat, PlainFormat

    if fmt_name in GENERATION_FORMATS:
        block = {"task": "generation"}
        if fmt_name == "gen_plain":
            block.update(text_field="question", label_field="answer")
    else:
        block = {"labels": ["0", "1"]}
    block["selection"] = selection
    recipe = P2PConfig.model_validate(block).recipe()
    if fmt_name in ("plain", "gen_plain"):
        return recipe, PlainFormat(recipe.text_field, recipe.answer_field, recipe.cue, recipe.benign_cue)
    return recipe, ChatFormat() if fmt_name == "gen_chat" else AlpacaFormat()


def _one_run(path: str, fmt_name: str, queue, selection: str = "random"):
    """Child process: open the data memory-mapped, run apply_p2p once, report time and memory."""
    import datasets
    import psutil

    datasets.disable_caching()  # random fingerprints: no cache hit, outputs go to a temp dir
    datasets.disable_progress_bars()
    from p2p_plugin import transform as tr

    recipe, fmt = recipe_and_format(fmt_name, selection)
    ds = datasets.Dataset.from_file(path)  # memory-mapped, no copy

    phases = {}
    real_scan = tr.scan

    def timed_scan(*args, **kwargs):
        t = time.perf_counter()
        out = real_scan(*args, **kwargs)
        phases["scan_s"] = time.perf_counter() - t
        return out

    tr.scan = timed_scan
    info = psutil.Process().memory_info()
    rss_before, anon_before = info.rss, info.rss - getattr(info, "shared", 0)
    sampler = RssSampler()
    sampler.sample()
    sampler.start()
    t0 = time.perf_counter()
    out, report = tr.apply_p2p(ds, fmt, recipe, source=f"bench-{fmt_name}", num_proc=None, keep_in_memory=False)
    elapsed = time.perf_counter() - t0
    sampler.stop()
    assert report.rows_out == len(ds) == report.rows_in
    first = out[0]
    out.cleanup_cache_files()
    queue.put({
        "seconds": elapsed,
        "rows_per_s": len(ds) / elapsed,
        "scan_s": phases.get("scan_s"),
        "map_s": elapsed - phases.get("scan_s", 0.0),  # selection + map (random selection is ~ms; avoid_shortcuts reads every row once)
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": sampler.peak_rss / 2**20,
        "rss_growth_mb": (sampler.peak_rss - rss_before) / 2**20,
        "anon_before_mb": anon_before / 2**20,
        "anon_peak_mb": sampler.peak_anon / 2**20,
        "anon_growth_mb": (sampler.peak_anon - anon_before) / 2**20,
        "rss_samples": sampler.samples,
        "rows_selected": report.rows_selected,
        "output_columns": list(out.column_names),
        "first_output_row": {k: (v[:120] if isinstance(v, str) else v) for k, v in first.items()},
    })


def measure(path: Path, fmt: str, repeats: int, selection: str = "random") -> dict:
    ctx = mp.get_context("spawn")
    runs = []
    for _ in range(repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_one_run, args=(str(path), fmt, queue, selection))
        proc.start()
        result = None
        while result is None:
            try:
                result = queue.get(timeout=1.0)
            except Exception:  # queue.Empty
                if not proc.is_alive():
                    raise SystemExit(f"{fmt} run died with exit code {proc.exitcode}") from None
        proc.join()
        runs.append(result)
        print(f"  {fmt}: {result['rows_per_s']:,.0f} rows/s ({result['seconds']:.2f} s; scan {result['scan_s']:.2f} s), "
              f"RSS {result['rss_before_mb']:.0f} -> peak {result['rss_peak_mb']:.0f} MB "
              f"(+{result['rss_growth_mb']:.0f}; anon +{result['anon_growth_mb']:.0f})", flush=True)
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {
        "format": fmt,
        "runs": runs,
        "median_rows_per_s": med("rows_per_s"),
        "median_seconds": med("seconds"),
        "median_scan_s": med("scan_s"),
        "median_map_s": med("map_s"),
        "max_rss_growth_mb": max(r["rss_growth_mb"] for r in runs),
        "max_anon_growth_mb": max(r["anon_growth_mb"] for r in runs),
        "rss_before_mb": med("rss_before_mb"),
        "max_rss_peak_mb": max(r["rss_peak_mb"] for r in runs),
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
    import numpy
    import psutil
    import pyarrow

    return {
        "nproc": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "mem_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "datasets": datasets.__version__,
        "axolotl": getattr(axolotl, "__version__", "?"),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
    }


def write_markdown(result: dict, path: Path) -> None:
    m = result["machine"]
    lines = [
        "# P2P transform benchmark (`apply_p2p` alone)",
        "",
        f"- Date: {result['date']}; git HEAD {result['git_head']} (+ working tree; p2p_plugin sources "
        f"sha256 {result['p2p_plugin_source_sha256_12']})",
        f"- Command: `{result['command']}`",
        f"- Settings: {result['rows']:,} rows per format (classification: synthetic SST-2-like; `gen_*`: the real "
        f"GSM8K train rows cycled, as plain question/answer, alpaca and user/assistant chat), Arrow stream file opened memory-mapped "
        f"(`Dataset.from_file`), single process (`num_proc=None`), `keep_in_memory=False`, HF caching disabled, "
        f"default recipe (ratio 0.2, replace, {result['selection']} selection; labels 0/1, or task generation with the default "
        f"safe prefix); each repetition in a fresh spawn "
        f"subprocess; median of {result['repeats']}.",
        f"- Machine: nproc {m['nproc']}, {m['mem_total_gb']} GB RAM, load avg at start {m['loadavg_at_start']}, "
        f"Python {m['python']}, datasets {m['datasets']}, axolotl {m['axolotl']}, pyarrow {m['pyarrow']} "
        "(shared, noisy machine)",
        f"- Targets: >= {TARGET_ROWS_PER_S:,} rows/s (classification), >= {TARGET_GEN_ROWS_PER_S:,} rows/s "
        f"(generation), RSS growth < {TARGET_RSS_GROWTH_MB} MB",
        "",
        "| format | rows/s (median) | runs rows/s | s (median) | scan s | rewrite map s | RSS before MB | RSS peak MB "
        "| RSS growth MB (max) | anon growth MB (max) | rows/s target | RSS target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in result["formats"]:
        runs = ", ".join(f"{r['rows_per_s']:,.0f}" for r in f["runs"])
        lines.append(
            f"| {f['format']} | {f['median_rows_per_s']:,.0f} | {runs} | {f['median_seconds']:.2f} | "
            f"{f['median_scan_s']:.2f} | {f['median_map_s']:.2f} | {f['rss_before_mb']:.0f} | {f['max_rss_peak_mb']:.0f} | "
            f"{f['max_rss_growth_mb']:.0f} | {f['max_anon_growth_mb']:.0f} | "
            f"{'met' if f['rows_per_s_target_met'] else 'NOT met'} | {'met' if f['rss_target_met'] else 'NOT met'} |"
        )
    lines += [
        "",
        "RSS includes the memory-mapped input pages the transform reads; anon = RSS minus file-backed shared "
        "pages. The scan is the label validation/histogram/fingerprint pass; the rewrite map includes selection "
        "and writing the output Arrow file.",
        "",
    ]
    path.write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="plain,alpaca," + ",".join(GENERATION_FORMATS))
    parser.add_argument("--out", default=str(RESULTS / "transform.json"))
    parser.add_argument("--selection", default="random", help="p2p.selection of the recipe (random, avoid_shortcuts)")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/transform.py", *sys.argv[1:]])
    result = {
        "benchmark": "transform",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "rows": args.rows,
        "repeats": args.repeats,
        "selection": args.selection,
        "machine": machine_info(),
        "git_head": git_head(),
        "p2p_plugin_source_sha256_12": plugin_source_digest(),
        "targets": {"rows_per_s": TARGET_ROWS_PER_S, "generation_rows_per_s": TARGET_GEN_ROWS_PER_S,
                    "rss_growth_mb": TARGET_RSS_GROWTH_MB},
        "formats": [],
    }
    for fmt in args.formats.split(","):
        path = WORK / f"transform_{fmt}_{args.rows}.arrow"
        t = time.perf_counter()
        generate(path, args.rows, fmt)
        print(f"{fmt}: data {path} ({path.stat().st_size / 2**20:.0f} MB, {time.perf_counter() - t:.1f} s)", flush=True)
        entry = measure(path, fmt, args.repeats, args.selection)
        entry["input_file_mb"] = path.stat().st_size / 2**20
        entry["rows_per_s_target"] = TARGET_GEN_ROWS_PER_S if fmt in GENERATION_FORMATS else TARGET_ROWS_PER_S
        entry["rows_per_s_target_met"] = entry["median_rows_per_s"] >= entry["rows_per_s_target"]
        entry["rss_target_met"] = entry["max_rss_growth_mb"] < TARGET_RSS_GROWTH_MB
        result["formats"].append(entry)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
