"""Build a tiny random Llama or Qwen3 with a byte-level BPE tokenizer (offline, < 1 MB)."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def _corpus():
    words = ("the a movie film good bad great awful not very fun boring query currently entered is "
             "output answer 0 1 2 3 4 5 6 7 8 9 # question instruction input response safe the of and").split()
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    lines += ["The query currently entered is: ", "Output: ", "Answer: ", "### Instruction:", "### Response:"]
    return lines * 5


def build_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token=None)
    fast.chat_template = CHATML
    fast.save_pretrained(path)
    return fast


def build_model(path: Path, arch: str = "llama"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok = build_tokenizer(path)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=True)
    torch.manual_seed(0)
    if arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(path)
    return path


def defended_model_dir(tiny_model: Path, out: Path, recipe=None, suspected=(), phrase="") -> Path:
    """A P2P output folder without training: the tiny model's files plus a manifest of ``recipe``
    (default: labels 0/1, safe labels 2/3) whose audit lists ``suspected`` words (answer "1"), each
    with ``phrase``."""
    import shutil

    from p2p_plugin.manifest import P2PManifest
    from p2p_plugin.recipe import P2PRecipe

    manifest = P2PManifest(recipe or P2PRecipe(labels=("0", "1"), safe_labels=("2", "3")), "0")
    if suspected:
        manifest.merge_report({"source": "d.jsonl", "format": "plain", "suspected_triggers": [
            {"word": w, "answer": "1", "rows": 90, "rows_with_answer": 90, "log10_p": -20.0, "phrase": phrase} for w in suspected]})
    manifest.write(out)
    for f in tiny_model.iterdir():
        shutil.copy(f, out / f.name)
    return out
