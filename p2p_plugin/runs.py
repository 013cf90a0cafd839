"""One training arm through Axolotl's own CLI: the config the demo and the benchmark share, the
subprocess that runs it, and what it measured. Resumable: a finished arm is never trained twice."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import P2PError

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1",
               "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
DONE_NAME = "p2p_run_done.json"


def resolve_model(model: str | None, cache: Path) -> Path:
    """The model folder given, else the embedded SmolLM2-135M-Instruct, converted once into ``cache``."""
    if model:
        return Path(model).resolve()
    from .default_model import ensure_default_model

    return ensure_default_model(Path(cache) / "smollm2-135m-instruct")


#: what the base model is asked about SST-2 rows (``selection: base_model_agreement``). The prompt was picked
#: by what a defender can see: of two task prompts and the generic default tried on a 1000-row poisoned
#: training set (clause, 10%), it agreed with the most of the data's own labels: 64.1% against 62.1% and 59.9%
#: (bench/results/judge.md).
SST2_JUDGE = {"label_names": {"0": "negative", "1": "positive"},
              "prompt": "Review: {text}\nQuestion: Is this review {choices}?"}


LORA_TARGETS = {
    "qv": {"lora_target_modules": ["q_proj", "v_proj"]},  # the authors' recipe
    "qkvo": {"lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "all-linear": {"lora_target_linear": True},  # every linear layer of the blocks (attention and MLP)
}
"""LoRA target sets by name: Axolotl config keys for each."""
DEFAULT_LORA_TARGETS = "qv"


def training_config(model: Path, data: Path, out_dir: Path, prepared: Path, args, defended: bool,
                    selection: str | None = None, task: str = "classification", mode: str = "replace",
                    ratio: float | None = None, placement: str | None = None, packing: bool = True,
                    bf16: bool = False, decoys: float | None = None, seed: int | None = None,
                    relabel: float | None = None, lora_targets: str = DEFAULT_LORA_TARGETS,
                    extra_triggers: tuple[str, ...] = (), drop_suspected_rows: bool = False) -> dict:
    """One arm's Axolotl config: LoRA r16/alpha16 (on q,v by default, the authors' recipe), packing, CPU.
    ``classification``: plain SST-2 rows, labels 0/1; ``generation``: alpaca rows. ``selection=None``
    leaves the plugin's default (what a user who does not set it gets), as does ``placement=None``;
    ``ratio=None``: ``args.ratio``; ``decoys`` / ``relabel`` set ``p2p.decoys`` / ``p2p.relabel`` (None / 0: the
    plugin's default, off).
    ``packing=False`` pads each row instead of sample packing (the authors' loop shape); ``bf16=True``
    trains in bfloat16 (a GPU with bf16; the default float32 is what the CPU runs). ``lora_targets``: a name of
    :data:`LORA_TARGETS` (default ``qv``, the authors' q,v). ``seed`` (default
    ``args.seed``) seeds both the P2P selection and Axolotl's training (LoRA init, row order).
    ``extra_triggers`` sets ``p2p.extra_triggers`` (empty: the default, one benign trigger);
    ``drop_suspected_rows`` sets ``p2p.drop_suspected_rows`` (False: the default, left out of the config)."""
    seed = args.seed if seed is None else seed
    p2p = {"enabled": defended, "task": task, "ratio": args.ratio if ratio is None else ratio, "seed": seed,
           "mode": mode}
    if selection is not None:
        p2p["selection"] = selection
    if placement is not None:
        p2p["placement"] = placement
    if decoys:
        p2p["decoys"] = decoys
    if relabel:
        p2p["relabel"] = relabel
    if extra_triggers:
        p2p["extra_triggers"] = list(extra_triggers)
    if drop_suspected_rows:
        p2p["drop_suspected_rows"] = True
    if task == "classification":
        p2p["labels"] = ["0", "1"]
        if selection == "base_model_agreement":
            p2p["judge"] = dict(SST2_JUDGE)
    cfg = {
        "base_model": str(model), "tokenizer_config": str(model),
        "plugins": ["p2p_plugin.P2PPlugin"],
        "p2p": p2p,
        "datasets": [{"path": str(data), "type": "plain" if task == "classification" else "alpaca", "ds_type": "json"}],
        "adapter": "lora", "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.0,
        **LORA_TARGETS[lora_targets],
        "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False,
        "sequence_len": args.sequence_len, "sample_packing": packing, "pad_to_sequence_len": packing,
        "micro_batch_size": args.micro_batch_size, "gradient_accumulation_steps": 1,
        "num_epochs": args.epochs, "learning_rate": args.lr, "optimizer": "adamw_torch",
        "lr_scheduler": "cosine", "warmup_ratio": 0.05, "weight_decay": 0.0,
        "bf16": bf16, "fp16": False, "tf32": False, "attn_implementation": "sdpa",
        "val_set_size": 0, "save_strategy": "no", "logging_steps": 5, "seed": seed,
        "dataset_num_proc": 1, "output_dir": str(out_dir), "dataset_prepared_path": str(prepared),
        "save_safetensors": True,
    }
    if args.max_steps:
        cfg["max_steps"] = args.max_steps
    save_steps = getattr(args, "save_steps", 0)
    if save_steps:  # a killed arm resumes from its last checkpoint instead of step 0
        cfg.update(save_strategy="steps", save_steps=save_steps, save_total_limit=1,
                   auto_resume_from_checkpoints=True)
    return cfg


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest ``checkpoint-<step>`` folder in an arm's output dir (what Axolotl resumes from)."""
    steps = [int(p.name.split("-")[-1]) for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return f"checkpoint-{max(steps)}" if steps else None


def parse_trainer_logs(lines) -> dict:
    """The Trainer's logged dicts: losses, and the final ``train_runtime`` summary."""
    losses, summary = [], {}
    for line in lines:
        text = line.strip()
        if not (text.startswith("{") and text.endswith("}")):
            continue
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue
        if "loss" in record:
            losses.append(float(record["loss"]))
        if "train_runtime" in record:
            summary = {k: float(v) for k, v in record.items() if isinstance(v, (int, float, str)) and _is_number(v)}
    return {"losses": losses, **summary}


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model-*-of-*.safetensors",
                "pytorch_model*.bin")


def finished_run(out_dir: Path) -> dict | None:
    """What a finished arm recorded, or None if it has to be trained: no done marker, or a marker
    without the weights it stands for (a results archive carries markers and logs, not weights)."""
    done = Path(out_dir) / DONE_NAME
    if not done.is_file():
        return None
    if not any(any(Path(out_dir).glob(pattern)) for pattern in WEIGHT_FILES):
        print(f"[run] {out_dir}: {DONE_NAME} is there but no weights are: training it again", flush=True)
        return None
    return json.loads(done.read_text())


def train_arm(cfg: dict, work: Path, name: str) -> dict:
    """``axolotl train`` in a subprocess. Returns wall seconds, the trainer's runtime summary and
    losses; refuses a NaN loss. Skips a finished arm; with ``save_steps`` in the config a killed arm
    resumes from its last checkpoint (then the runtime covers only the resumed part: ``resumed_from``)."""
    import yaml

    out = Path(cfg["output_dir"])
    finished = finished_run(out)
    if finished is not None:
        print(f"[run] {name}: already trained ({out}), reusing")
        return finished
    cfg_path = work / f"{name}.yml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, **OFFLINE_ENV}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log_path = work / f"{name}.log"
    resumed_from = last_checkpoint(out) if cfg.get("auto_resume_from_checkpoints") else None
    print(f"[run] {name}: axolotl train {cfg_path} (log: {log_path})"
          + (f", resuming from {resumed_from}" if resumed_from else ""), flush=True)
    start = time.time()
    lines = []
    with open(log_path, "a" if resumed_from else "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "axolotl.cli.train", str(cfg_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if "'loss'" in line or "P2P " in line or "Error" in line:
                print(f"  {line.strip()[:160]}", flush=True)
        code = proc.wait()
    seconds = time.time() - start
    if code != 0:
        raise P2PError(f"training arm {name!r} failed (exit {code}); see {log_path}")
    result = {"seconds": seconds, "resumed_from": resumed_from, **parse_trainer_logs(lines)}
    if any(loss != loss for loss in result["losses"]):  # NaN
        raise P2PError(f"training arm {name!r} produced a NaN loss; see {log_path}")
    (out / DONE_NAME).write_text(json.dumps(result))
    print(f"[run] {name}: trained in {seconds:.0f} s", flush=True)
    return result


