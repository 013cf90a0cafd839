"""Query a P2P model the P2P way: benign trigger on every input, outputs projected back.

Loads a full model or a LoRA adapter from a training ``output_dir`` together with its
``p2p_manifest.json``. Needs torch + transformers (+ peft for adapters).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import P2PError
from .manifest import P2PManifest, check_model, read_manifest
from .prompting import encode_completions, encode_prompts
from .formats import ChatFormat
from .prompts import alpaca_prompt, chat_messages, plain_prompt
from .shortcuts import SuspectedTrigger, remove_words, removal_terms

LOG = logging.getLogger(__name__)


@dataclass
class Prediction:
    raw: str
    """The label the model chose, in the trained label space (may be a safe label)."""
    projected: str
    """``raw`` mapped back to the original label space."""
    scores: dict


@dataclass
class Generation:
    raw: str
    """The decoded output as generated."""
    text: str
    """The output with the safe prefix stripped (the answer to use)."""
    had_safe_prefix: bool
    """False means the model did not answer in the benign space for this input."""


def load_model_and_tokenizer(path, base_model=None, dtype="float32", device="cpu"):
    """A full checkpoint, or a PEFT adapter on top of its base model (``base_model`` overrides the
    adapter's recorded base path, e.g. after moving files)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    torch_dtype = getattr(torch, dtype)
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.is_file():
        from peft import PeftModel

        base = base_model or json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
        if not base or not Path(base).exists():
            raise P2PError(f"{path} is a LoRA adapter whose base model {base!r} is not a local folder; pass --base-model")
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, path)
    elif (path / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    else:
        raise P2PError(f"{path} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json)")
    tok_src = path if (path / "tokenizer_config.json").is_file() else (base_model or path)
    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    return model.to(device).eval(), tokenizer


class P2PModel:
    """A model trained with p2p_plugin, plus the manifest that says how to prompt it."""

    def __init__(self, model, tokenizer, manifest: P2PManifest, device="cpu", removed_words=()):
        self.model, self.tokenizer, self.manifest, self.device = model, tokenizer, manifest, device
        self.recipe = manifest.recipe
        self.removed_words = frozenset(w.lower() for w in removed_words)
        """Words (and phrases) taken out of every input before prompting (see :attr:`suspected_trigger_words`)."""

    @classmethod
    def load(cls, path, base_model=None, device="cpu", dtype="float32",
             remove_suspected_triggers: bool | None = None) -> "P2PModel":
        """``remove_suspected_triggers``: take the words (and phrases) the training data's audit flagged
        (:attr:`suspected_trigger_words`) out of every input, a second line of defense next to the
        benign trigger; it also removes them from clean inputs. ``None`` (default): on for
        classification, where it was measured (README, "Does it work?"), off for generation, where
        it was not. The words are logged when it is on; ``False`` keeps every input as given."""
        manifest = read_manifest(path)
        model, tokenizer = load_model_and_tokenizer(path, base_model, dtype, device)
        check_model(manifest, tokenizer, path)
        if remove_suspected_triggers is None:
            remove_suspected_triggers = manifest.recipe.task == "classification"
        words = suspected_trigger_words(manifest)
        if words and remove_suspected_triggers:
            LOG.info("P2P %s: removing the training data's %d suspected trigger word(s)/phrase(s) from every "
                     "input: %s (remove_suspected_triggers=False keeps inputs as given)", path, len(words),
                     ", ".join(repr(w) for w in sorted(words)))
        elif words:
            LOG.info("P2P %s: the training data's audit lists %d suspected trigger word(s)/phrase(s), left in "
                     "the inputs (remove_suspected_triggers=True removes them): %s", path, len(words),
                     ", ".join(repr(w) for w in sorted(words)))
        return cls(model, tokenizer, manifest, device, removed_words=words if remove_suspected_triggers else ())

    def with_removed_words(self, words) -> "P2PModel":
        """The same model (weights shared, nothing copied) removing ``words`` from inputs instead."""
        return type(self)(self.model, self.tokenizer, self.manifest, self.device, removed_words=words)

    @property
    def suspected_trigger_words(self) -> frozenset[str]:
        """Words the training data's audit found predicting one answer beyond chance (``selection:
        avoid_shortcuts`` records them in the manifest; empty otherwise)."""
        return suspected_trigger_words(self.manifest)

    # ------------------------------------------------------------------ prompts
    @property
    def defended(self) -> bool:
        return self.recipe.enabled

    @property
    def data_format(self) -> str:
        """The row format the model was trained on (from the manifest; ``plain`` when unrecorded).
        Inputs are then: ``plain`` a text; ``alpaca`` a row with ``instruction`` (and ``input``);
        ``chat_template`` a row with ``messages`` (the conversation up to the turn to answer)."""
        formats = [d.get("format") for d in self.manifest.datasets if d.get("format")]
        if not formats:
            return "plain"
        if len(set(formats)) > 1:
            raise P2PError(f"the model was trained on datasets of several formats {sorted(set(formats))}; "
                           f"build prompts yourself with p2p_plugin.prompts for the one you query")
        return formats[0]

    def encode_inputs(self, inputs: list, benign: bool | None = None, trigger: str | None = None) -> list[list[int]]:
        """Prompt token ids for each input, as training built them (trigger, placement, template);
        ``trigger``: which of the model's benign triggers (default: ``p2p.trigger``)."""
        benign = self.defended if benign is None else benign
        fmt = self.data_format
        inputs = inputs_without_words(inputs, self.removed_words, fmt)
        if fmt == "plain":
            return encode_prompts(self.tokenizer, [plain_prompt(self.recipe, _text(x), benign, trigger) for x in inputs])
        if fmt == "alpaca":
            prompts = [alpaca_prompt(self.recipe, _field(x, "instruction", i), x.get("input"), benign, trigger)
                       for i, x in enumerate(inputs)]
            return [self.tokenizer(p)["input_ids"] for p in prompts]  # as Axolotl's alpaca strategy
        texts = [self._chat_prompt(_conversation(x, i), benign, trigger) for i, x in enumerate(inputs)]
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def prompt(self, text: str, benign: bool | None = None, trigger: str | None = None) -> str:
        """The training prompt for ``text`` (benign trigger added unless ``benign`` is False; the
        :attr:`removed_words` taken out first)."""
        text = remove_words(text, self.removed_words)
        return plain_prompt(self.recipe, text, self.defended if benign is None else benign, trigger)

    def chat_prompt(self, messages: list[dict], benign: bool | None = None, trigger: str | None = None) -> str:
        """The rendered training prompt for a conversation (user turns without :attr:`removed_words`)."""
        return self._chat_prompt(inputs_without_words([messages], self.removed_words, "chat_template")[0], benign,
                                 trigger)

    def _chat_prompt(self, messages: list[dict], benign: bool | None, trigger: str | None = None) -> str:
        msgs = chat_messages(self.recipe, messages, self.defended if benign is None else benign, trigger)
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    # ------------------------------------------------------------------ classification
    def label_token_ids(self) -> dict[str, int]:
        """First token of each label in the trained space (original + safe when defended)."""
        space = self.recipe.label_space()
        if space is None:
            raise P2PError("classify() needs a classification manifest (p2p.task: classification)")
        labels = space.all_labels if self.defended else space.labels
        firsts = [ids[0] for ids in encode_completions(self.tokenizer, list(labels), add_eos=False)]
        if len(set(firsts)) != len(firsts):
            raise P2PError(f"labels {list(labels)} share a first token under this tokenizer; "
                           f"choose verbalizers (p2p.labels / p2p.safe_labels) that start differently")
        return dict(zip(labels, firsts))

    def classify(self, texts: list[str], benign: bool | None = None, batch_size: int = 32,
                 progress: bool = False) -> list[Prediction]:
        """Compare the label tokens' logits at the answer position (batched, no sampling). A model
        trained with ``p2p.extra_triggers`` is read once with each benign trigger and its label
        probabilities (softmax over the trained labels) averaged; ``scores`` are then the log of
        those mean probabilities instead of logits."""
        import torch

        label_ids = self.label_token_ids()
        labels, ids = list(label_ids), torch.tensor(list(label_ids.values()))
        space = self.recipe.label_space()
        benign = self.defended if benign is None else benign
        triggers = self.recipe.benign_triggers if benign else (None,)
        if len(triggers) == 1:
            scores = self._label_logits(texts, benign, None, ids, batch_size, progress)
        else:  # one model, a vote over its benign triggers
            probs = [self._label_logits(texts, True, t, ids, batch_size, progress).softmax(-1) for t in triggers]
            scores = (sum(probs) / len(probs)).log()
        out = []
        for row in scores:
            raw = labels[int(row.argmax())]
            out.append(Prediction(raw, space.project(raw), dict(zip(labels, row.tolist()))))
        return out

    def _label_logits(self, texts, benign: bool, trigger: str | None, ids, batch_size: int, progress: bool):
        """``[len(texts), len(ids)]`` float logits of the label tokens at the answer position, in input order."""
        import torch

        encoded = self.encode_inputs(texts, benign, trigger)
        # batch prompts of similar length together: left padding then costs little
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = torch.zeros((len(encoded), len(ids)))
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="classify" if trigger is None else f"classify ({trigger.strip()!r})",
                           unit="batch")
        for start in batches:
            idx = order[start:start + batch_size]
            out[idx] = self._last_logits([encoded[i] for i in idx])[:, ids].float()
        return out

    # ------------------------------------------------------------------ generation
    def generate(self, texts: list[str], benign: bool | None = None, max_new_tokens: int = 128,
                 batch_size: int = 8, progress: bool = False) -> list[Generation]:
        """Greedy decoding of the training-format prompt (see :attr:`data_format`); the safe prefix
        is stripped from the answer and its presence reported (its absence means the input left the
        benign space)."""
        import torch

        from .metrics import strip_safe_prefix

        prompts = self.encode_inputs(texts, benign)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Generation | None] = [None] * len(prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="generate", unit="batch")
        for start in batches:
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            input_ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx])
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
            with torch.inference_mode():
                generated = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            for i, row in zip(idx, generated[:, width:].tolist()):
                raw = self.tokenizer.decode(row, skip_special_tokens=True)
                text, had_prefix = strip_safe_prefix(raw, self.recipe.safe_prefix) if self.recipe.safe_prefix else (raw, False)
                out[i] = Generation(raw, text, had_prefix)
        return out

    def _last_logits(self, encoded: list[list[int]]):
        """Next-token logits after each prompt (left-padded batch; only the last position's
        logits are computed)."""
        import torch

        width = max(len(x) for x in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, x in enumerate(encoded):  # left padding: the answer position is the last column
            input_ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=position_ids.to(self.device), logits_to_keep=1).logits
        return logits[:, -1, :].cpu()


def suspected_trigger_words(manifest: P2PManifest) -> frozenset[str]:
    """The words of every dataset's ``suspected_triggers`` in the manifest, and the phrases they grew
    into (entries with spaces, which :func:`~p2p_plugin.shortcuts.remove_words` removes as a whole)."""
    return removal_terms(SuspectedTrigger.from_dict(t) for d in manifest.datasets
                         for t in d.get("suspected_triggers") or [])


def inputs_without_words(inputs: list, words, fmt: str = "plain") -> list:
    """``inputs`` (texts, alpaca rows or chat rows, as :meth:`P2PModel.encode_inputs` takes them) with
    ``words`` removed from the user's text: the text, ``instruction``/``input``, or the user turns.
    The inputs themselves are not modified (new rows are returned)."""
    if not words:
        return inputs
    if fmt == "plain":
        return [remove_words(_text(x), words) for x in inputs]
    if fmt == "alpaca":
        return [{**x, **{k: remove_words(str(x[k]), words) for k in ("instruction", "input") if x.get(k)}}
                if isinstance(x, dict) else x for x in inputs]
    out = []
    for x in inputs:
        messages = x.get("messages") if isinstance(x, dict) else x
        if not isinstance(messages, list):
            out.append(x)  # encode_inputs names the problem
            continue
        cleaned = [{**m, "content": remove_words(m["content"], words)}
                   if m.get("role") == "user" and isinstance(m.get("content"), str) else m for m in messages]
        out.append({**x, "messages": cleaned} if isinstance(x, dict) else cleaned)
    return out


def _text(x) -> str:
    if isinstance(x, dict):
        raise P2PError("this model was trained on plain rows: pass texts, not dicts")
    return str(x)


def _field(row, key: str, i: int) -> str:
    if not isinstance(row, dict) or key not in row:
        raise P2PError(f"input {i}: the model was trained on alpaca rows; pass dicts with {key!r} (and 'input')")
    return str(row[key] or "")


def _conversation(row, i: int) -> list[dict]:
    """The messages to answer: a row's ``messages`` without its final assistant turn(s)."""
    messages = row.get("messages") if isinstance(row, dict) else row
    if not isinstance(messages, list) or not messages:
        raise P2PError(f"input {i}: the model was trained on chat rows; pass {{'messages': [...]}} or a message list")
    messages = list(messages)
    while messages and messages[-1].get("role") in ChatFormat.assistant_roles:
        messages.pop()
    if not messages:
        raise P2PError(f"input {i}: the conversation has no turn to answer")
    return messages
