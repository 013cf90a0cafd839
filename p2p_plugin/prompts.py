"""Inference-side prompts, built by the very row formats that rewrote the training data, so a
served or evaluated prompt is the training prompt (trigger, placement, cue). Framework-free."""

from __future__ import annotations

from .formats import ChatFormat, PlainFormat, Rewrite
from .recipe import P2PRecipe


def plain_prompt(recipe: P2PRecipe, text: str, benign: bool = True) -> str:
    """``"{trigger}{x}\\n{benign_cue}"`` (benign) or ``"{x}\\n{cue}"``: the plain format's prompt."""
    fmt = PlainFormat("text", "answer", recipe.cue, recipe.benign_cue)
    batch = {"text": [text], "answer": [""]}
    return fmt.rewrite(batch, [benign], [""], Rewrite(recipe.trigger, recipe.placement))["prompt"][0]


def chat_messages(recipe: P2PRecipe, messages: list[dict], benign: bool = True) -> list[dict]:
    """The conversation with the benign trigger placed as in training (first user turn or system).

    ``messages`` ends with the user turn to answer; the returned list is ready for
    ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.
    """
    if not benign:
        return [dict(m) for m in messages]
    fmt = ChatFormat()
    placeholder = list(messages) + [{"role": "assistant", "content": ""}]
    out = fmt.rewrite({"messages": [placeholder]}, [True], [""], Rewrite(recipe.trigger, recipe.placement))
    return out["messages"][0][:-1]
