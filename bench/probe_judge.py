"""Can the judging model's hidden states judge labels better than its zero-shot answer? (no training)

``selection: base_model_agreement`` and ``relabel`` stand on a weak judge: SmolLM2-135M asked zero-shot
contradicts 32% of clean SST-2 rows (bench/results/judge.md), and the judge's wrong relabels carry most of
relabel's CA cost (bench/results/relabel/oracle.md). A linear probe on the same forward pass is the cheap
"stronger judge" at hand (no second model, nothing downloaded). The base model reads each training row in
the judge prompt (the SST-2 prompt of bench/judge.py); its hidden state at the prompt's last position, at one
layer, is the row's feature. Two probes, each an L2-regularized logistic regression scored out of fold (every
row by the probe fitted on the other ``--folds`` folds):

  data labels   fitted to the rows' own labels (what a supervised reader of the data would do); it can learn
                the trigger too, since every poisoned row pairs it with the target label
  judge labels  fitted to the zero-shot judge's preferred label of each row (never the data's labels, so
                the trigger cannot explain a label): the zero-shot judge's reading, smoothed over the
                representation

Each is read as bench/judge.py reads the zero-shot judge (calibrated agreement with the row's label) and
scored with the attack's poisoned-row list (which a defender does not have): how often it contradicts
clean and poisoned rows, and how many poisoned rows are among the rows it contradicts most, over all rows
and among the target label's rows (the pool ``relabel`` draws from). Layers and L2 strengths are a small
fixed grid, read side by side; choosing one on this table would use the poison's positions.

Run:  .venv/bin/python bench/probe_judge.py --work bench/work/cpu-seeds --attacks clause ctba
(the attack folders of bench/defense.py; features are cached in each folder; 173 s per 1000 rows here)
Writes bench/results/judge_probe.json and bench/results/judge_probe.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from p2p_plugin.attacks import read_rows  # noqa: E402
from p2p_plugin.judgement import (JudgeSettings, agreement, judge_inputs, label_indices,  # noqa: E402
                                  label_log_probs, preferred_labels)
from p2p_plugin.runs import SST2_JUDGE  # noqa: E402

from judge import MOST_CONTRADICTED, contradiction_reading  # noqa: E402

TARGET_MOST_CONTRADICTED = (25, 50, 100)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "cpu-seeds",
                   help="a bench/defense.py work folder (its attack folders)")
    p.add_argument("--attacks", nargs="+", default=["clause", "ctba"])
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--mode", default="dirty")
    p.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    p.add_argument("--layers", nargs="+", type=float, default=[0.5, 0.67, 0.77, 1.0],
                   help="hidden states read, as shares of the depth (1.0: the last layer)")
    p.add_argument("--l2", nargs="+", type=float, default=[100.0, 1000.0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="fold assignment")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "judge_probe")
    return p.parse_args(argv)


def layer_index(share: float, num_hidden_states: int) -> int:
    """The hidden state at ``share`` of the depth (transformers lists the embeddings first, then each layer)."""
    if not 0 < share <= 1:
        raise SystemExit(f"--layers {share}: a share of the depth must lie in (0, 1]")
    return max(1, min(num_hidden_states - 1, int(round(share * (num_hidden_states - 1)))))


class HiddenStateRecorder:
    """Wraps a causal LM for :func:`label_log_probs`: asks for hidden states and keeps, per forward pass, each
    layer's state at the last position (the judge pads on the left, so that is where the answer starts)."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def parameters(self):
        return self.model.parameters()

    def __call__(self, **inputs):
        out = self.model(**inputs, output_hidden_states=True)
        self.batches.append(np.stack([h[:, -1].float().cpu().numpy() for h in out.hidden_states], axis=1))
        return out


def judge_with_features(model, tokenizer, texts: list[str], settings: JudgeSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(zero-shot log-probs (rows, labels), features (rows, hidden states, width))`` from one forward pass per
    batch, rows in their input order."""
    recorder = HiddenStateRecorder(model)
    log_probs = label_log_probs(recorder, tokenizer, texts, settings)
    # label_log_probs batches the prompts by length (stable argsort); undo that order
    order = np.argsort([len(p) for p in judge_inputs(tokenizer, texts, settings)], kind="stable")
    features = np.empty((len(texts),) + recorder.batches[0].shape[1:], dtype=np.float32)
    features[order] = np.concatenate(recorder.batches)
    return log_probs, features


def fit_logistic(features: np.ndarray, labels: np.ndarray, num_labels: int, l2: float):
    """``(weights, bias, mean, scale)``: multinomial logistic regression on standardized features, mean
    cross-entropy plus ``l2 * |W|^2 / rows`` (L-BFGS, float64)."""
    import torch

    mean, scale = features.mean(0), features.std(0) + 1e-6
    x = torch.tensor((features - mean) / scale, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.long)
    weights = torch.zeros(x.shape[1], num_labels, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weights, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, y) + l2 / len(y) * (weights ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weights.detach().numpy(), bias.detach().numpy(), mean, scale


def out_of_fold_log_probs(features: np.ndarray, labels: np.ndarray, num_labels: int, folds: int, l2: float,
                          seed: int = 0) -> np.ndarray:
    """``(rows, num_labels)`` log-probabilities, each row's from the probe fitted on the other folds."""
    features = np.asarray(features, dtype=np.float64)
    counts = np.bincount(labels, minlength=num_labels)
    if folds < 2 or (counts < folds).any():
        raise SystemExit(f"the probe needs --folds >= 2 and at least that many rows of each label: {counts.tolist()}")
    fold = np.random.default_rng(seed).permutation(len(labels)) % folds
    out = np.zeros((len(labels), num_labels))
    for f in range(folds):
        weights, bias, mean, scale = fit_logistic(features[fold != f], labels[fold != f], num_labels, l2)
        z = (features[fold == f] - mean) / scale @ weights + bias
        z -= z.max(axis=1, keepdims=True)
        out[fold == f] = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def reading(log_probs: np.ndarray, label_index: np.ndarray, poisoned: np.ndarray, target: int) -> dict:
    """How a judge's log-probs read the rows: agreement, contradiction of clean / poisoned rows, and the poisoned
    rows among the most contradicted (all rows; the target label's rows)."""
    agree = agreement(log_probs, label_index)
    mine = np.flatnonzero(label_index == target)
    mine = mine[np.argsort(agree[mine], kind="stable")]
    return {**contradiction_reading(agree, poisoned),
            "target_label_most_contradicted": {str(k): int(poisoned[mine[:k]].sum()) for k in TARGET_MOST_CONTRADICTED}}


def features_for(folder: Path, texts: list[str], settings: JudgeSettings, model_path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """Zero-shot log-probs and features of the folder's training rows, cached beside them (keyed by the model
    folder, the settings and the rows)."""
    digest = hashlib.sha256(json.dumps([str(model_path.resolve()), settings.prompt, settings.label_names,
                                        settings.max_length]).encode())
    for text in texts:
        digest.update(text.encode() + b"\x00")
    cache = folder / f"probe-features-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["log_probs"], saved["features"], True
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    log_probs, features = judge_with_features(model, tokenizer, texts, settings)
    np.savez(cache, log_probs=log_probs, features=features)
    return log_probs, features, False


def measure(folder: Path, args) -> dict:
    sidecar = json.loads((folder / "attack.json").read_text())
    rows = read_rows(folder / "train_poisoned.jsonl")
    labels = tuple(sidecar["labels"])
    names = SST2_JUDGE["label_names"]
    settings = JudgeSettings(labels=labels, label_names=tuple(names.get(label, label) for label in labels),
                             prompt=SST2_JUDGE["prompt"])
    label_index = label_indices(labels, [r[sidecar["answer_field"]] for r in rows])
    poisoned = np.zeros(len(rows), dtype=bool)
    poisoned[sidecar["train"]["poisoned_indices"]] = True
    target = labels.index(str(sidecar["spec"]["target"]))
    start = time.perf_counter()
    log_probs, features, cached = features_for(folder, [r[sidecar["text_field"]] for r in rows], settings, args.model)
    out = {"rows": len(rows), "poisoned": int(poisoned.sum()), "features_cached": cached,
           "hidden_states": int(features.shape[1]), "readings": {}}
    out["readings"]["zero-shot"] = reading(log_probs, label_index, poisoned, target)
    judged = preferred_labels(log_probs)
    for share in args.layers:
        layer = layer_index(share, features.shape[1])
        for l2 in args.l2:
            for name, fit_to in (("data labels", label_index), ("judge labels", judged)):
                probe = out_of_fold_log_probs(features[:, layer], fit_to, len(labels), args.folds, l2, args.seed)
                out["readings"][f"probe on {name}, layer {layer}, l2 {l2:g}"] = reading(probe, label_index, poisoned,
                                                                                       target)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def markdown(results: dict, command: str) -> str:
    s = results["settings"]
    lines = ["# A linear probe on the judge's hidden states vs its zero-shot answer (no training)", "",
             f"Command: `{command}`", "",
             f"Date {results['date']}; model {s['model']}; {s['folds']} folds; the SST-2 judge prompt of bench/judge.py. "
             "Agreement: share of rows whose given label the reader agrees with. Contradicts clean / poisoned: share "
             "of each it contradicts. Poisoned among the most contradicted: of the k rows it contradicts most "
             f"(k = {', '.join(map(str, MOST_CONTRADICTED))}); target label: the same among the target label's rows "
             f"(k = {', '.join(map(str, TARGET_MOST_CONTRADICTED))}), the pool `relabel` draws from. Layer: index "
             "into the hidden states (0 = embeddings).", "",
             "| attack | reader | agreement | contradicts clean / poisoned | poisoned among the most contradicted | target label |",
             "|---|---|---|---|---|---|"]
    for attack, r in results["attacks"].items():
        for name, got in r["readings"].items():
            lines.append(f"| {attack} ({r['poisoned']} of {r['rows']} poisoned) | {name} | "
                         f"{100 * got['agreement_with_labels']:.1f}% | {100 * got['contradicts_clean']:.1f}% / "
                         f"{100 * got['contradicts_poisoned']:.1f}% | "
                         f"{' / '.join(str(v) for v in got['poisoned_among_most_contradicted'].values())} | "
                         f"{' / '.join(str(v) for v in got['target_label_most_contradicted'].values())} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    command = "python bench/probe_judge.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from defense import attack_tag, machine_info, write_json_and_markdown

    results = {"settings": {"work": str(args.work), "rate": args.rate, "mode": args.mode, "model": args.model.name,
                            "layers": args.layers, "l2": args.l2, "folds": args.folds, "seed": args.seed},
               "command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "attacks": {}}
    for attack in args.attacks:
        folder = args.work / attack_tag(attack, args.rate, args.mode)
        if not (folder / "attack.json").is_file():
            raise SystemExit(f"{folder}/attack.json not found: run bench/defense.py for {attack} with --work "
                             f"{args.work} first")
        results["attacks"][attack] = measure(folder, args)
        print(f"[probe] {attack}: {json.dumps(results['attacks'][attack]['readings'])}", flush=True)
    write_json_and_markdown(args.out, results, markdown(results, command))


if __name__ == "__main__":
    main()
