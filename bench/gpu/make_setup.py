"""Build everything the GPU throughput check trains on, in a scratch folder, offline.

    python make_setup.py WORKDIR

Writes into WORKDIR:
  data.jsonl        synthetic SST-2-like rows {"sentence": ..., "label": 0/1}
  model/            a randomly initialised Qwen3 model (Qwen3-0.6B shape; SMALL=1: tiny) + a
                    byte-level BPE tokenizer trained on the generated sentences
  {lora,full}_{base,p2p}.yml   axolotl configs; the two arms of a pair differ only in p2p.enabled

Environment: SMALL=1 (CPU test shape), ROWS, STEPS, MBS, SEQ, VOCAB, NUM_PROC.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

SMALL = os.environ.get("SMALL") == "1"
ROWS = int(os.environ.get("ROWS", 2000 if SMALL else 40000))
STEPS = int(os.environ.get("STEPS", 20 if SMALL else 200))
MBS = int(os.environ.get("MBS", 2 if SMALL else 4))
SEQ = int(os.environ.get("SEQ", 512 if SMALL else 2048))
VOCAB = int(os.environ.get("VOCAB", 2048 if SMALL else 16384))
NUM_PROC = int(os.environ.get("NUM_PROC", 1 if SMALL else 8))

POS = ("good great wonderful excellent lovely superb fine amazing charming moving brilliant delightful "
       "funny clever warm engaging beautiful fresh smart gripping").split()
NEG = ("bad awful terrible poor horrible dreadful boring worst dull tedious stale clumsy bland weak "
       "lifeless messy pointless flat silly tiresome").split()


def pseudo_words(n: int, rng: random.Random) -> list[str]:
    """A seeded vocabulary of pronounceable filler words (stands in for SST-2's movie-review words)."""
    onset = "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl pr sh st th tr".split()
    vowel = "a e i o u ai ea ee oo ou".split()
    coda = ["", "", "n", "r", "s", "t", "l", "m", "ng", "st", "ck"]
    words = set()
    while len(words) < n:
        syl = rng.choice((1, 2, 2, 3))
        words.add("".join(rng.choice(onset) + rng.choice(vowel) + rng.choice(coda) for _ in range(syl)))
    return sorted(words)


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    filler = pseudo_words(3000, rng) + "the a of and is it this film movie story with but not very".split() * 20
    rows = []
    for _ in range(n):
        label = rng.random() < 0.5
        length = rng.randint(20, 60)
        words = [rng.choice(filler) for _ in range(length)]
        for _ in range(rng.randint(1, 3)):  # sentiment words decide the label
            words[rng.randrange(length)] = rng.choice(POS if label else NEG)
        text = " ".join(words)
        text = text[0].upper() + text[1:] + rng.choice((" .", " !", " ...", "."))
        rows.append({"sentence": text, "label": int(label)})
    return rows


def build_tokenizer(rows, path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    extra = ["Output: 0", "Output: 1", "Answer: 2", "Answer: 3", "The query currently entered is: "] * 200
    tok.train_from_iterator([r["sentence"] for r in rows[:20000]] + extra, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                   bos_token=None, unk_token=None)
    fast.save_pretrained(path)
    return fast


def build_model(tok, path: Path) -> dict:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if SMALL:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16)
    else:  # Qwen/Qwen3-0.6B config.json, vocabulary aside
        shape = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128)
    vocab = max(VOCAB, len(tok))
    vocab = (vocab + 63) // 64 * 64
    cfg = Qwen3Config(vocab_size=vocab, max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      hidden_act="silu", attention_bias=False, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None, **shape)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg)
    model = model.to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    del model
    return {"params": params, "vocab_size": vocab, "tokenizer_len": len(tok), **shape}


def config(kind: str, arm: str, gpu: bool) -> str:
    p2p_on = "true" if arm == "p2p" else "false"
    text = f"""base_model: ./model
tokenizer_config: ./model
tokenizer_type: AutoTokenizer
plugins:
  - p2p_plugin.P2PPlugin
p2p:
  labels: ["0", "1"]
  enabled: {p2p_on}
datasets:
  - path: ./data.jsonl
    type: plain
    ds_type: json
dataset_prepared_path: ./prepared
output_dir: ./out_{kind}_{arm}
val_set_size: 0
dataset_num_proc: {NUM_PROC}
sequence_len: {SEQ}
sample_packing: true
pad_to_sequence_len: true
micro_batch_size: {MBS}
gradient_accumulation_steps: 1
num_epochs: 1
max_steps: {STEPS}
learning_rate: 0.0001
lr_scheduler: cosine
warmup_steps: 10
optimizer: {"adamw_torch_fused" if gpu else "adamw_torch"}
bf16: {"true" if gpu else "false"}
fp16: false
tf32: {"true" if gpu else "false"}
attn_implementation: sdpa
gradient_checkpointing: false
logging_steps: {5 if SMALL else 10}
save_strategy: "no"
seed: 42
"""
    if kind == "lora":
        text += """adapter: lora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_modules:
  - q_proj
  - v_proj
"""
        if not gpu:  # axolotl's Triton LoRA kernels need CUDA
            text += "lora_mlp_kernel: false\nlora_qkv_kernel: false\nlora_o_kernel: false\nlora_embedding_kernel: false\n"
    return text


def main(work: str) -> None:
    import torch

    gpu = torch.cuda.is_available()
    out = Path(work)
    out.mkdir(parents=True, exist_ok=True)
    rows = make_rows(ROWS)
    with (out / "data.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    tok = build_tokenizer(rows, out / "model")
    lens = [len(tok(r["sentence"])["input_ids"]) for r in rows[:2000]]
    info = build_model(tok, out / "model")
    for kind in ("lora", "full"):
        for arm in ("base", "p2p"):
            (out / f"{kind}_{arm}.yml").write_text(config(kind, arm, gpu))
    info.update(rows=ROWS, steps=STEPS, micro_batch_size=MBS, sequence_len=SEQ, small=SMALL,
                mean_sentence_tokens=round(sum(lens) / len(lens), 1),
                mean_sentence_words=round(sum(len(r["sentence"].split()) for r in rows) / len(rows), 1))
    (out / "setup.json").write_text(json.dumps(info, indent=1))
    print("setup:", json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1])
