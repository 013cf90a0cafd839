"""Ablation: where does ``p2p.relabel``'s clean-accuracy cost come from?

``relabel: 0.25`` took the `clause` attack under its floor on three seeds but cost 4.5-8.7 points of CA
(bench/results/relabel). Of the rows it relabels at seed 0 about half are poisoned (their new label is the
true one) and half are clean rows the judge misreads (their new label is wrong). This trains the same arm
three times, changing only which of the rows relabel chose keep the judge's label:

  all       the plugin as it is (the control, retrained beside the others: a rerun of a committed arm on this
            CPU is not bit-identical, so the comparison is made within one run)
  poisoned  only the chosen rows that are poisoned (an oracle: a perfect judge among relabel's picks)
  clean     only the chosen rows that are clean (the judge's mistakes alone)

Each chosen row keeps its place in the benign subset only if kept (the others are not swapped in), so an
arm's subset differs from the control's by the rows dropped. Knowing which rows are poisoned is what a
defender cannot do: this is a bench-only diagnosis, never a setting. The oracle runs inside Axolotl's
training process as a second plugin (:class:`RelabelOraclePlugin`, this module on ``PYTHONPATH``), told
which rows to keep through the ``P2P_RELABEL_ORACLE`` environment variable.

  .venv/bin/python bench/relabel_oracle.py            # clause, 10% dirty, seed 0, dev + held-out
  .venv/bin/python bench/relabel_oracle.py --train-seeds 0 1 --keep poisoned,clean   # also training seed 1

Other flags are bench/defense.py's (its defaults here: the committed relabel matrix's settings).

Writes bench/results/relabel/oracle.{json,md}; arms and their per-split results live under --work
(resumable: a finished arm is not trained or evaluated again).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import defense  # noqa: E402  (puts the repository on sys.path)
from p2p_plugin import judgement  # noqa: E402
from p2p_plugin.errors import P2PError  # noqa: E402

ENV = "P2P_RELABEL_ORACLE"
KEEPS = ("all", "poisoned", "clean")


def oracle_relabel(keep: str, poisoned_indices) -> callable:
    """A stand-in for :func:`judgement.relabel_contradicted` that relabels only the chosen rows that are
    ``keep`` ("poisoned" or "clean") by ``poisoned_indices``."""
    if keep not in KEEPS[1:]:
        raise P2PError(f"{ENV}: keep must be one of {KEEPS[1:]}, got {keep!r}")
    poisoned = np.asarray(sorted(poisoned_indices), dtype=np.int64)

    def relabel(view, selected, share):
        chosen = judgement.rows_to_relabel(view, selected, share)
        is_poisoned = np.isin(chosen, poisoned)
        return judgement.swap_in_relabelled(view, selected, chosen[is_poisoned if keep == "poisoned" else ~is_poisoned])

    return relabel


def install_from_env() -> None:
    """Patch the relabel step as ``$P2P_RELABEL_ORACLE`` (``{"keep": ..., "poisoned_indices": [...]}``) asks."""
    spec = os.environ.get(ENV)
    if not spec:
        raise P2PError(f"RelabelOraclePlugin is a benchmark diagnosis and needs ${ENV} (set by bench/relabel_oracle.py)")
    spec = json.loads(spec)
    judgement.relabel_contradicted = oracle_relabel(spec["keep"], spec["poisoned_indices"])


try:
    from axolotl.integrations.base import BasePlugin
except ImportError:  # the tests import the filter without Axolotl
    BasePlugin = object


class RelabelOraclePlugin(BasePlugin):
    """Listed after ``p2p_plugin.P2PPlugin`` in an arm's ``plugins``: patches the relabel step when Axolotl
    loads it, before any dataset is prepared."""

    def __init__(self):
        super().__init__()
        install_from_env()


def arm_name(tag: str, relabel: float, keep: str, seed_suffix: str = "") -> str:
    """bench/defense.py's name for the relabel arm (``seed_suffix``: ``-seed<N>`` for a training seed other than
    ``--seed``), with ``-oracle-<keep>`` for an oracle arm."""
    return (f"{tag}/p2p-base_model_agreement-relabel{relabel:g}" + ("" if keep == "all" else f"-oracle-{keep}")
            + seed_suffix)


def seed_suffix(args, seed: int) -> str:
    return "" if seed == args.seed else f"-seed{seed}"


def train_oracle_arm(args, model, work: Path, tag: str, poisoned: Path, poisoned_indices, keep: str,
                     seed: int) -> Path:
    """Train one arm (or reuse it); ``keep`` other than "all" adds the oracle plugin and its own prepared-data
    folder (the plugin's data cache keys on the recipe, which the oracle does not change), seeded with the
    control's judgement cache so the base model judges the rows once."""
    name = arm_name(tag, args.relabel[0], keep, seed_suffix(args, seed))
    arm_dir = work / name
    cfg = defense.arm_config(model, poisoned, arm_dir, work, args, True, "base_model_agreement", seed=seed,
                             relabel=args.relabel[0])
    if keep != "all":
        prepared = work / f"prepared-oracle-{keep}"
        judged = Path(defense.judgement_cache_dir(str(work / "prepared")))
        if judged.is_dir() and not prepared.exists():
            shutil.copytree(judged, Path(defense.judgement_cache_dir(str(prepared))))
        cfg["dataset_prepared_path"] = str(prepared)
        cfg["plugins"] = cfg["plugins"] + ["relabel_oracle.RelabelOraclePlugin"]
        os.environ[ENV] = json.dumps({"keep": keep, "poisoned_indices": list(poisoned_indices)})
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths if str(BENCH) in paths else [str(BENCH), *paths])
    (work / name).parent.mkdir(parents=True, exist_ok=True)
    try:
        defense.train_arm(cfg, work, name)
    finally:
        os.environ.pop(ENV, None)
    return arm_dir


def relabelled_counts(arm_dir: Path, poisoned_indices) -> dict:
    """What the arm's manifest says it did: relabelled rows (poisoned / clean) and benign rows selected."""
    entry = defense.read_manifest(arm_dir).datasets[0]
    relabelled = set(entry.get("relabeled_rows") or [])
    poisoned = set(poisoned_indices)
    return {"relabelled": len(relabelled), "relabelled_poisoned": len(relabelled & poisoned),
            "relabelled_clean": len(relabelled - poisoned), "rows_selected": entry["rows_selected"]}


def evaluate_arm(args, model, arm_dir: Path, split: str, clean, triggered) -> dict:
    """CA and ASR of the arm read as P2P reads it, on ``split`` (cached beside the arm)."""
    path = arm_dir.parent / f"{arm_dir.name}.{split}.oracle-result.json"
    if path.is_file():
        return json.loads(path.read_text())
    p2p_model = defense.P2PModel.load(arm_dir, base_model=model, device=defense.eval_device(args.device))
    result = defense.evaluate_classification(p2p_model, clean, triggered, args.target, max_rows=args.eval_rows,
                                             progress=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def reading(result: dict, inference: str = "p2p") -> dict:
    """CA and ASR (projected, with their counts and 95% intervals) of one reading of an evaluation result."""
    got = result["readings"][inference]
    return {"ca": got["ca"]["projected"], "asr": got["asr"]["projected"]}


def committed_arms(results: Path, tag: str, relabel: float, suffix: str = "") -> dict:
    """The clean model, the plain judge arm and the relabel arm of the committed matrix (same settings and training
    seed: ``suffix``), per split, read from ``defense_<model>_sst2[-heldout].json`` in ``results``."""
    names = {"clean model": "clean", "judge, no relabel": f"p2p-base_model_agreement{suffix}",
             f"judge, relabel {relabel:g} (committed)": f"p2p-base_model_agreement-relabel{relabel:g}{suffix}"}
    out = {label: {} for label in names}
    for split, file_suffix in (("dev", ""), ("heldout", "-heldout")):
        path = results / f"defense_smollm2-135m-instruct_sst2{file_suffix}.json"
        arms = json.loads(path.read_text())["arms"] if path.is_file() else {}
        for label, arm in names.items():
            if f"{tag}/{arm}" in arms:
                out[label][split] = reading(arms[f"{tag}/{arm}"], "no benign trigger" if arm == "clean" else "p2p")
    return {label: splits for label, splits in out.items() if splits}


def split_keep_flag(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """``--keep a,b`` (this script's one flag; default: all three) and the rest, which are bench/defense.py's.
    An unknown value stops here, before any arm trains."""
    if "--keep" not in argv:
        return KEEPS, argv
    i = argv.index("--keep")
    if i + 1 == len(argv):
        raise SystemExit(f"--keep needs a value: a comma-separated subset of {','.join(KEEPS)}")
    keeps = tuple(argv[i + 1].split(","))
    unknown = [k for k in keeps if k not in KEEPS]
    if unknown:
        raise SystemExit(f"--keep {argv[i + 1]}: unknown {unknown}; choose from {','.join(KEEPS)}")
    return keeps, argv[:i] + argv[i + 2:]


def main(argv=None):
    keeps, argv = split_keep_flag(list(sys.argv[1:] if argv is None else argv))
    defaults = ["--attacks", "clause", "--rates", "0.1", "--train-rows", "1000", "--epochs", "3", "--lr", "1e-3",
                "--eval-rows", "1000", "--selections", "base_model_agreement", "--relabel", "0.25",
                "--work", str(BENCH / "work" / "cpu-seeds"), "--results", str(BENCH / "results" / "relabel")]
    args = defense.parse_args(defaults + argv)
    os.environ.update(defense.OFFLINE_ENV)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = defense.resolve_model(args.model, defense.REPO / "models")
    data_dir = Path(args.data_dir)
    subset, rows = defense.sst2_train_subset(args, work, data_dir)
    dev = data_dir / "sst2" / "dev.jsonl"
    heldout = defense.heldout_rows(rows, args)
    attack, rate, mode = args.attacks[0], args.rates[0], args.label_mode[0]
    tag = defense.attack_tag(attack, rate, mode)
    splits = {}
    for split, held in (("dev", None), ("heldout", heldout)):
        poisoned, poisoned_indices, clean, triggered = defense.attack_files(args, work, subset, dev, held, attack, rate,
                                                                            mode)
        splits[split] = (clean, triggered)
    arms, committed = {}, {}
    seeds = args.train_seeds or [args.seed]
    for seed in seeds:
        for keep in keeps:
            arm_dir = train_oracle_arm(args, model, work, tag, poisoned, poisoned_indices, keep, seed)
            arm = arms[f"seed {seed}, keep {keep}"] = {
                "arm": arm_name(tag, args.relabel[0], keep, seed_suffix(args, seed)), "seed": seed, "keep": keep,
                **relabelled_counts(arm_dir, poisoned_indices)}
            for split, (clean, triggered) in splits.items():
                arm[split] = reading(evaluate_arm(args, model, arm_dir, split, clean, triggered))
        for label, got in committed_arms(Path(args.results), tag, args.relabel[0], seed_suffix(args, seed)).items():
            if label != "clean model" or seed == seeds[0]:  # one clean model for every training seed
                committed[label if label == "clean model" else f"seed {seed}, {label}"] = got
    write_report(args, arms, committed, argv)


def write_report(args, arms: dict, committed: dict, argv) -> None:
    def cells(splits):
        return {f"{split} {what}": (f"{100 * splits[split][key]['value']:.1f}" if split in splits else "-")
                for split in ("dev", "heldout") for what, key in (("CA", "ca"), ("ASR", "asr"))}

    rows = [{"arm": label, "relabelled (poisoned / clean)": "-", **cells(splits)} for label, splits in committed.items()]
    for label, arm in arms.items():
        rows.append({"arm": f"{label} (relabel {args.relabel[0]:g})", "relabelled (poisoned / clean)":
                     f"{arm['relabelled']} ({arm['relabelled_poisoned']} / {arm['relabelled_clean']})", **cells(arm)})
    command = "python bench/relabel_oracle.py" + (" " + " ".join(argv) if argv else "")
    markdown = "\n".join([
        "# Where relabel's CA cost comes from (bench-only oracle)", "",
        f"Command: `{command}`", "",
        f"`{args.attacks[0]}` {100 * args.rates[0]:g}% {args.label_mode[0]} label, {args.train_rows} SST-2 rows, "
        f"data seed {args.seed}, {args.epochs:g} epochs, lr {args.lr:g}, `selection: base_model_agreement`; P2P arms read "
        "with the benign trigger, mapped back; the clean model without it (its ASR is the floor). CA and ASR in %, "
        "projected; `seed`: the training seed (LoRA init, row order, benign subset); dev = the SST-2 dev split, heldout = the last 872 shuffled train rows. The first rows are the "
        "committed matrix's arms (bench/results/relabel/defense_*), the others trained by this command. `keep "
        "poisoned` / `keep clean`: relabel only the chosen rows that are poisoned / clean (an oracle no defender "
        "has).", "",
        defense.format_markdown_table(rows, list(rows[0])), ""])
    defense.write_json_and_markdown(Path(args.results) / "oracle", {
        "command": command, "settings": vars(args), "arms": arms, "committed": committed}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
