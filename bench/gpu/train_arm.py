"""Run one ``axolotl.cli.train`` in-process and measure it.

    python train_arm.py CONFIG.yml RESULT.json

Wraps ``Trainer.training_step`` (on-device token / row / loss counters, no extra host syncs)
and adds a callback that synchronises CUDA only at the begin, at step WARM and at the last
step. Writes RESULT.json with: non-padding tokens, packed rows, steady-state tokens/s (steps
WARM..max_steps), whole-run tokens/s, HF's train_runtime / train_samples_per_second,
peak GPU memory, the per-step losses and how many were NaN/Inf (HF's logging_nan_inf_filter
hides those in the logged loss, so they are counted here from the raw step losses).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import torch
from transformers import Trainer, TrainerCallback

WARM = int(os.environ.get("WARM", 20))  # steady-state window: steps WARM..max_steps
CUDA = torch.cuda.is_available()
S: dict = {"losses": [], "logs": [], "marks": {}}


def _sync():
    if CUDA:
        torch.cuda.synchronize()


def _counters():
    return {k: int(S[k].item()) if torch.is_tensor(S[k]) else int(S[k]) for k in ("nonpad", "slots", "rows", "trainable")}


_orig_step = Trainer.training_step


def training_step(self, model, inputs, *args, **kwargs):
    ids = inputs["input_ids"]
    pid = inputs.get("position_ids")
    labels = inputs.get("labels")
    pad = getattr(self.processing_class, "pad_token_id", None)
    if "nonpad" not in S:
        zero = torch.zeros((), dtype=torch.int64, device=ids.device)
        S.update(nonpad=zero.clone(), slots=0, rows=zero.clone(), trainable=zero.clone())
        S["batch"] = {k: [list(v.shape), str(v.dtype)] for k, v in inputs.items() if torch.is_tensor(v)}
        S["batch"]["pad_token_id"] = pad
    # axolotl's packed batches (sdpa): no attention_mask; position_ids restart at 0 for every
    # packed row; the tail of each bin is filled with pad_token_id
    real = ids != pad if pad is not None else torch.ones_like(ids, dtype=torch.bool)
    S["slots"] += ids.numel()
    S["nonpad"] += real.sum()
    S["rows"] += ((pid == 0) & real).sum() if pid is not None else ids.shape[0]
    if labels is not None:
        S["trainable"] += (labels != -100).sum()
    loss = _orig_step(self, model, inputs, *args, **kwargs)
    S["losses"].append(loss.detach().float().reshape(()))
    return loss


class Probe(TrainerCallback):
    def _mark(self, name, state):
        _sync()
        S["marks"][name] = {"t": time.perf_counter(), "step": state.global_step,
                            **(_counters() if "nonpad" in S else {})}

    def on_train_begin(self, args, state, control, **kw):
        if CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        S["warm"] = min(WARM, max(1, state.max_steps // 4))
        self._mark("begin", state)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == S["warm"]:
            self._mark("warm", state)
        if state.global_step == state.max_steps:
            self._mark("end", state)
            if CUDA:  # read here: the peak counters are reset again before on_train_end
                S["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
                S["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30

    def on_log(self, args, state, control, logs=None, **kw):
        S["logs"].append({"step": state.global_step, **{k: v for k, v in (logs or {}).items()
                                                        if isinstance(v, (int, float, str))}})

    def on_train_end(self, args, state, control, **kw):
        self._mark("train_end", state)


_orig_init = Trainer.__init__


def __init__(self, *args, **kwargs):
    _orig_init(self, *args, **kwargs)
    self.add_callback(Probe())


Trainer.training_step = training_step
Trainer.__init__ = __init__


def rate(a: dict, b: dict, key: str):
    dt = b["t"] - a["t"]
    return (b[key] - a[key]) / dt if dt > 0 else None


def summarize() -> dict:
    losses = torch.stack(S["losses"]).cpu().tolist() if S["losses"] else []
    bad = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
    m = S["marks"]
    final = next((l for l in reversed(S["logs"]) if "train_runtime" in l), {})
    out = {
        "steps": len(losses),
        "warm_step": S.get("warm"),
        "nonfinite_loss_steps": bad,
        "zero_loss_steps": sum(1 for v in losses if v == 0.0),
        "loss_first10": sum(losses[:10]) / max(1, len(losses[:10])) if losses else None,
        "loss_last10": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else None,
        "losses": [round(v, 4) for v in losses],
        "train_runtime": final.get("train_runtime"),
        "train_samples_per_second": final.get("train_samples_per_second"),
        "train_loss": final.get("train_loss"),
        "peak_allocated_gib": S.get("peak_allocated_gib"),
        "peak_reserved_gib": S.get("peak_reserved_gib"),
        "axolotl_logged_max_allocated_gib": max((l["memory/max_allocated (GiB)"] for l in S["logs"]
                                                 if "memory/max_allocated (GiB)" in l), default=None),
        "marks": m,
        "logs": S["logs"],
        "device": torch.cuda.get_device_name(0) if CUDA else "cpu",
        "batch": S.get("batch"),
    }
    if "begin" in m and "end" in m and "nonpad" in m["end"]:
        end = m["end"]
        out.update(nonpad_tokens=end["nonpad"], token_slots=end["slots"], packed_rows=end["rows"],
                   trainable_tokens=end["trainable"], fill=end["nonpad"] / max(1, end["slots"]),
                   loop_seconds=end["t"] - m["begin"]["t"],
                   tokens_per_s_whole=end["nonpad"] / (end["t"] - m["begin"]["t"]))
        if out["train_runtime"]:
            out["tokens_per_s_hf_runtime"] = end["nonpad"] / out["train_runtime"]
        if "warm" in m and "nonpad" in m["warm"]:
            w = m["warm"]
            out.update(steady_seconds=end["t"] - w["t"], steady_steps=end["step"] - w["step"],
                       tokens_per_s_steady=rate(w, end, "nonpad"), rows_per_s_steady=rate(w, end, "rows"),
                       steps_per_s_steady=(end["step"] - w["step"]) / (end["t"] - w["t"]))
    return out


def main(cfg_path: str, result_path: str) -> int:
    from axolotl.cli.train import do_cli

    sys.argv = [sys.argv[0]]  # do_cli parses TrainerCliArgs from argv
    t0 = time.perf_counter()
    error = None
    try:
        do_cli(config=cfg_path)
    except BaseException as exc:  # still write what was measured
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        res = summarize()
        res.update(config=cfg_path, process_seconds=time.perf_counter() - t0, error=error)
        with open(result_path, "w") as fh:
            json.dump(res, fh, indent=1)
        print("ARM_RESULT", json.dumps({k: v for k, v in res.items() if k not in ("losses", "logs", "marks")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
