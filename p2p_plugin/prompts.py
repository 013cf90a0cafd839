"""Inference-side prompts, built by the very row formats that rewrote the training data, so a
served or evaluated prompt is the training prompt (trigger, placement, cue). Framework-free."""

from __future__ import annotations

from .formats import AlpacaFormat, ChatFormat, PlainFormat, Rewrite
from .recipe import P2PRecipe


def _rewrite(recipe: P2PRecipe, trigger: str | None) -> Rewrite:
    """The benign rewrite with ``trigger`` (one of ``recipe.benign_triggers``; default ``recipe.trigger``)."""
    if trigger is not None and trigger not in recipe.benign_triggers:
        raise ValueError(f"{trigger!r} is not one of the model's benign triggers {list(recipe.benign_triggers)}")
    return Rewrite(trigger or recipe.trigger, recipe.placement)


def plain_prompt(recipe: P2PRecipe, text: str, benign: bool = True, trigger: str | None = None) -> str:
    """``"{trigger}{x}\\n{benign_cue}"`` (benign) or ``"{x}\\n{cue}"``: the plain format's prompt
    (``trigger``: which of the recipe's benign triggers; default the first)."""
    fmt = PlainFormat("text", "answer", recipe.cue, recipe.benign_cue)
    batch = {"text": [text], "answer": [""]}
    return fmt.rewrite(batch, [benign], [""], _rewrite(recipe, trigger))["prompt"][0]


def chat_messages(recipe: P2PRecipe, messages: list[dict], benign: bool = True,
                  trigger: str | None = None) -> list[dict]:
    """The conversation with the benign trigger placed as in training (first user turn or system).

    ``messages`` ends with the user turn to answer; the returned list is ready for
    ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.
    """
    if not benign:
        return [dict(m) for m in messages]
    fmt = ChatFormat()
    placeholder = list(messages) + [{"role": "assistant", "content": ""}]
    out = fmt.rewrite({"messages": [placeholder]}, [True], [""], _rewrite(recipe, trigger))
    return out["messages"][0][:-1]


def alpaca_fields(recipe: P2PRecipe, instruction: str, input_text: str | None, benign: bool = True,
                  trigger: str | None = None) -> tuple[str, str]:
    """``(instruction, input)`` of an alpaca row with the benign trigger placed as in training."""
    batch = {"instruction": [instruction], "input": [input_text or ""], "output": [""]}
    out = AlpacaFormat().rewrite(batch, [benign], [""], _rewrite(recipe, trigger))
    return out["instruction"][0], out["input"][0]


def alpaca_prompt(recipe: P2PRecipe, instruction: str, input_text: str | None, benign: bool = True,
                  trigger: str | None = None) -> str:
    """The text Axolotl's ``type: alpaca`` puts before the answer (its ``AlpacaPrompter``, instruct
    style), with the benign trigger placed as in training. Needs axolotl installed."""
    from axolotl.prompters import AlpacaPrompter

    instruction, input_text = alpaca_fields(recipe, instruction, input_text, benign, trigger)
    return next(AlpacaPrompter().build_prompt(instruction, input_text or None))
