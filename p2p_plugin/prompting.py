"""Token-level prompt encoding shared by training and inference, so both see the same ids.

Duck-typed on a Hugging Face tokenizer (``__call__``, ``bos_token_id``, ``eos_token_id``); no
import of transformers here.
"""

from __future__ import annotations

IGNORE_INDEX = -100


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a BOS token in front of a text by itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Prompt ids: BOS (when the tokenizer uses one) + the text, never an EOS."""
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if adds_bos(tokenizer):
        return [[tokenizer.bos_token_id] + x for x in ids]
    return ids


def encode_completions(tokenizer, completions: list[str], add_eos: bool = True) -> list[list[int]]:
    """Answer ids, tokenized on their own (as at inference, where they follow the prompt ids)."""
    ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is not None:
        return [x + [eos] for x in ids]
    return ids


class PromptCompletionTokenizer:
    """Batched ``prompt``/``completion`` -> ``input_ids``/``attention_mask``/``labels``.

    Loss on the completion tokens only unless ``train_on_inputs``. Picklable for ``num_proc``.
    """

    def __init__(self, tokenizer, train_on_inputs: bool = False):
        self.tokenizer = tokenizer
        self.train_on_inputs = train_on_inputs

    def __call__(self, batch):
        prompts = encode_prompts(self.tokenizer, batch["prompt"])
        completions = encode_completions(self.tokenizer, batch["completion"])
        input_ids, labels, masks = [], [], []
        for p, c in zip(prompts, completions):
            ids = p + c
            input_ids.append(ids)
            masks.append([1] * len(ids))
            labels.append(list(ids) if self.train_on_inputs else [IGNORE_INDEX] * len(p) + c)
        return {"input_ids": input_ids, "attention_mask": masks, "labels": labels}
