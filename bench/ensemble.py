"""Seed ensembles of P2P models: do training seeds fail on the same triggered rows, and does a vote help?

P2P on SmolLM2-135M is unstable across training seeds even with a (nearly) poison-free benign subset
(bench/results/seeds: CTBA 3.5-23.1%, clause 22-45% with the same subset). Two readings decide what
that instability is:
  - overlap: on the triggered non-target rows, how many of the seeds call each row "target". If the
    seeds fail on the same rows, the failure is systematic (those rows), and no vote can fix it; if
    they fail on different rows, it is noise a vote averages out;
  - the soft vote: the mean of the members' label probabilities (every label of the trained space,
    benign trigger on), then argmax and projection, as one model would be read. Every subset of two
    or more members is reported, so the gain of adding a member is visible.
It trains nothing: the members are P2P arms a `bench/defense.py --train-seeds` run left in its work
folder (`<attack folder>/<arm>` for seed 0, `<arm>-seed<N>` for the others). Each model's label
probabilities are cached beside the attack's rows (`<arm>.label_probs.<digest>.json`, keyed by the model
folder and the texts), so a second run costs nothing. The P2P reading is the inputs as given (no words
removed). The clean model's own hits (`--floor-arm`) split the rows into the floor's and the backdoor's.

Run:  .venv/bin/python bench/ensemble.py --work bench/work/cpu-seeds --attacks clause ctba addsent
Writes bench/results/ensemble.json and bench/results/ensemble.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.attacks import read_rows  # noqa: E402
from p2p_plugin.metrics import attack_success_rate, clean_accuracy  # noqa: E402

ARMS = ("p2p-avoid_shortcuts", "p2p-base_model_agreement")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "cpu-seeds",
                   help="a bench/defense.py work folder whose P2P arms were trained with several --train-seeds")
    p.add_argument("--attacks", nargs="+", default=["clause", "ctba", "addsent"])
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--mode", default="dirty")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="P2P arm names (seed 0's name; seeds add -seed<N>)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct",
                   help="the base model of the LoRA members")
    p.add_argument("--floor-arm", default="clean-model-train_subset",
                   help="the clean model's folder under --work (bench/defense.py trains one per work folder)")
    p.add_argument("--eval-rows", type=int, default=1000, help="cap on each test set, as bench/defense.py --eval-rows")
    p.add_argument("--eval-split", choices=["dev", "heldout"], default="dev",
                   help="heldout: the test rows of a `bench/defense.py --eval-split heldout` run (<attack folder>/heldout/)")
    p.add_argument("--target", default="1")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ensemble")
    return p.parse_args(argv)


def member_name(arm: str, seed: int) -> str:
    return arm if seed == 0 else f"{arm}-seed{seed}"


def has_weights(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or (path / "config.json").is_file()


# The model label_probabilities loaded last, by (model folder, base model): callers read one model on several
# row sets in a row (clean and triggered rows, control phrases), which then load it once.
_LAST_LOADED: dict[tuple[str, str], object] = {}


def label_probabilities(member_dir: Path, texts: list[str], model_path: Path, cache_dir: Path) -> tuple[list[str], np.ndarray]:
    """``(labels, probs)``: softmax over the label tokens of the trained space (original + safe) with
    the benign trigger (an undefended model: its labels, inputs as given), one row per text; cached in
    ``cache_dir`` as ``<model folder name>.label_probs.<digest of the model folder and the texts>.json``
    (bench/word_dropout.py shares the files). The last model loaded is kept for the next call on the same folder."""
    key = hashlib.sha256(json.dumps([str(member_dir.resolve()), texts]).encode()).hexdigest()
    cache = Path(cache_dir) / f"{member_dir.name}.label_probs.{key[:16]}.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["labels"], np.asarray(stored["probs"])
    from p2p_plugin.inference import P2PModel

    loaded = (str(Path(member_dir).resolve()), str(model_path))
    if loaded not in _LAST_LOADED:
        _LAST_LOADED.clear()  # one model at a time
        _LAST_LOADED[loaded] = P2PModel.load(member_dir, base_model=str(model_path), remove_suspected_triggers=False)
    model = _LAST_LOADED[loaded]
    preds = model.classify(texts, benign=model.defended, progress=True)
    labels = list(preds[0].scores)
    logits = np.array([[p.scores[label] for label in labels] for p in preds], dtype=np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    cache.write_text(json.dumps({"key": key, "labels": labels, "probs": probs.round(6).tolist()}))
    return labels, probs


def soft_vote(probs: list[np.ndarray]) -> np.ndarray:
    """Index of the highest mean probability per row (the members' probabilities averaged)."""
    return np.mean(np.stack(probs), axis=0).argmax(axis=1)


def hit_flags(pred: list[str], truths: list[str], target: str, project) -> np.ndarray:
    """Per non-target triggered row (target rows excluded, as attack_success_rate does): is the
    projected answer ``target``?"""
    return np.array([project(p) == target for p, t in zip(pred, truths) if str(t) != target], dtype=bool)


def target_hits(predictions: list[list[str]], truths: list[str], target: str, project) -> np.ndarray:
    """Per non-target triggered row, how many members' projected answers are ``target``."""
    return np.sum([hit_flags(p, truths, target, project) for p in predictions], axis=0).astype(int)


def jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def rate(r) -> dict:
    return {"k": r.k, "n": r.n, "value": r.value, "ci95": list(r.ci95)}  # unrounded, as bench/defense.py stores it


def test_sets(folder: Path, split: str, eval_rows: int) -> tuple[tuple[list, list], tuple[list, list]]:
    """``((clean texts, answers), (triggered texts, answers))``: the test rows bench/defense.py wrote for the
    attack in ``folder`` (``split`` heldout: those under ``heldout/``), each set capped at ``eval_rows``,
    answers as strings; fields from the attack's ``attack.json``."""
    tests = folder if split == "dev" else folder / split
    if not (tests / "test_clean.jsonl").is_file():
        raise SystemExit(f"{tests}/test_clean.jsonl not found: run bench/defense.py for this attack with --work "
                         f"{folder.parent} --eval-split {split} first")
    sidecar = json.loads((folder / "attack.json").read_text())
    text, answer = sidecar["text_field"], sidecar["answer_field"]
    out = []
    for name in ("clean", "triggered"):
        rows = read_rows(tests / f"test_{name}.jsonl")[:eval_rows]
        out.append(([r[text] for r in rows], [str(r[answer]) for r in rows]))
    return out[0], out[1]


def measure_arm(folder: Path, arm: str, args, clean, triggered) -> dict | None:
    from defense import arm_result_path
    from p2p_plugin.manifest import read_manifest

    members = {s: folder / member_name(arm, s) for s in args.seeds if has_weights(folder / member_name(arm, s))}
    if len(members) < 2:
        print(f"[ensemble] {folder.name}/{arm}: {len(members)} member(s) with weights, need 2: skipped", flush=True)
        return None
    space = read_manifest(next(iter(members.values()))).recipe.label_space()
    (clean_x, clean_y), (trig_x, trig_y) = clean, triggered
    labels, clean_p, trig_p = None, {}, {}
    for seed, path in members.items():
        lab_c, clean_p[seed] = label_probabilities(path, clean_x, args.model, folder)
        lab_t, trig_p[seed] = label_probabilities(path, trig_x, args.model, folder)
        if labels is None:
            labels = lab_c
        if lab_c != labels or lab_t != labels:
            raise SystemExit(f"{path}: label space {lab_c} differs from the other members' {labels}")

    def read(clean_probs, trig_probs) -> dict:
        clean_pred = [labels[i] for i in soft_vote(clean_probs)]
        trig_pred = [labels[i] for i in soft_vote(trig_probs)]
        ca = clean_accuracy(clean_pred, clean_y, space.labels, space.safe_labels, expected_space="safe")
        asr = attack_success_rate(trig_pred, trig_y, args.target, space.labels, space.safe_labels, expected_space="safe")
        return {"ca": rate(ca["projected"]), "asr": rate(asr["projected"]), "asr_strict": rate(asr["strict"]),
                "trig_pred": trig_pred}

    singles = {s: read([clean_p[s]], [trig_p[s]]) for s in members}
    out = {"members": {str(s): str(p.relative_to(args.work)) for s, p in members.items()}, "seeds": {}, "ensembles": {}}
    for s, r in singles.items():
        out["seeds"][str(s)] = {k: v for k, v in r.items() if k != "trig_pred"}
        recorded = arm_result_path(folder, member_name(arm, s), args)
        if recorded.is_file():  # bench/defense.py's own reading of this member (same rows when --eval-rows agree)
            asr = json.loads(recorded.read_text())["readings"]["p2p"]["asr"]["projected"]["k"]
            out["seeds"][str(s)]["matches_defense_result"] = asr == r["asr"]["k"]
    hits = target_hits([singles[s]["trig_pred"] for s in members], trig_y, args.target, space.project)
    out["rows_by_members_hitting_target"] = {str(k): int((hits == k).sum()) for k in range(len(members) + 1)}
    failed = {s: set(np.flatnonzero(hit_flags(singles[s]["trig_pred"], trig_y, args.target, space.project)).tolist())
              for s in members}
    out["jaccard"] = {f"{a}-{b}": _round(jaccard(failed[a], failed[b])) for a, b in itertools.combinations(members, 2)}
    floor_dir = args.work / args.floor_arm
    if has_weights(floor_dir):  # which of those rows the clean model (never saw poison) calls target too
        floor_labels, floor_p = label_probabilities(floor_dir, trig_x, args.model, folder)
        floor_pred = [floor_labels[i] for i in floor_p.argmax(axis=1)]
        floor_hit = hit_flags(floor_pred, trig_y, args.target, space.project)
        out["floor_rows"] = int(floor_hit.sum())
        out["floor_rows_by_members_hitting_target"] = {str(k): int(((hits == k) & floor_hit).sum())
                                                        for k in range(len(members) + 1)}
    for size in range(2, len(members) + 1):
        for combo in itertools.combinations(members, size):
            r = read([clean_p[s] for s in combo], [trig_p[s] for s in combo])
            out["ensembles"]["+".join(map(str, combo))] = {k: v for k, v in r.items() if k != "trig_pred"}
    floor = arm_result_path(folder, "clean", args)
    if floor.is_file():
        recorded = json.loads(floor.read_text())["readings"]["no benign trigger"]["asr"]["projected"]
        out["floor_asr"] = recorded["value"]
        if "floor_rows" in out:
            out["floor_matches_defense_result"] = recorded["k"] == out["floor_rows"]
    return out


def _round(x):
    return None if x is None else round(x, 3)


def markdown(results: dict, command: str) -> str:
    lines = ["# Seed ensembles of P2P models (soft vote over training seeds)", "", f"Command: `{command}`", "",
             f"Date {results['date']}; machine: {results['machine']}; test rows: {results['settings']['eval_split']}. Members: P2P arms of one config that differ "
             "only in `--train-seeds` (LoRA init, row order; for avoid_shortcuts also the subset draw). P2P reading: "
             "benign trigger on, inputs as given. Soft vote: mean of the members' label probabilities. "
             "`rows hit by 0, 1, ... seeds`: triggered non-target rows that that many seeds call target; in brackets "
             "those the clean model calls target too (the floor's rows). Percent.", "",
             "| attack | arm | floor | ASR by seed | soft vote: seeds -> ASR [95% CI] / CA | rows hit by 0, 1, ... seeds (floor rows) | Jaccard of hit rows | CA by seed |",
             "|---|---|---|---|---|---|---|---|"]
    for attack, arms in results["attacks"].items():
        for arm, r in arms.items():
            if r is None:
                continue
            by_seed = ", ".join(f"{s}: {100 * v['asr']['value']:.1f}" for s, v in r["seeds"].items())
            ens = "; ".join(f"{k} -> {100 * v['asr']['value']:.1f} [{100 * v['asr']['ci95'][0]:.1f}, "
                            f"{100 * v['asr']['ci95'][1]:.1f}] / {100 * v['ca']['value']:.1f}" for k, v in r["ensembles"].items())
            in_floor = r.get("floor_rows_by_members_hitting_target", {})
            hist = " / ".join(f"{v} ({in_floor[k]})" if k in in_floor else str(v)
                              for k, v in r["rows_by_members_hitting_target"].items())
            jac = ", ".join(f"{k}: {v}" for k, v in r["jaccard"].items())
            ca = ", ".join(f"{100 * v['ca']['value']:.1f}" for v in r["seeds"].values())
            floor = f"{100 * r['floor_asr']:.1f}" if r.get("floor_asr") is not None else "-"
            lines.append(f"| {attack} | {arm} | {floor} | {by_seed} | {ens} | {hist} | {jac} | {ca} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    command = "python bench/ensemble.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from defense import attack_tag, machine_info, write_json_and_markdown

    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
               "command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "attacks": {}}
    for attack in args.attacks:
        folder = args.work / attack_tag(attack, args.rate, args.mode)
        clean, triggered = test_sets(folder, args.eval_split, args.eval_rows)
        for arm in args.arms:
            result = measure_arm(folder, arm, args, clean, triggered)
            results["attacks"].setdefault(attack, {})[arm] = result
            if result:
                print(f"[ensemble] {attack}/{arm}: seeds {[v['asr']['value'] for v in result['seeds'].values()]}, "
                      f"ensembles {[(k, v['asr']['value']) for k, v in result['ensembles'].items()]}", flush=True)
    write_json_and_markdown(args.out, results, markdown(results, command))


if __name__ == "__main__":
    main()
