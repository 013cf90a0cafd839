"""Row formats: where a row's user text and answer live, and how a P2P rewrite changes them.

Each format rewrites a *batch* (``dict`` of column lists, as ``datasets.map(batched=True)`` gives)
and returns the new columns. Only the rows flagged as selected change; every other row's values are
passed through untouched (the plain format is the exception: it always renders the authors'
prompt, ``"{x}\\n{cue}"``, because it has no template of its own). Framework-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import P2PError
from .triggers import insert_fragments, insert_trigger


class RowError(P2PError):
    """A data row lacks a field the format needs, or holds an unusable value."""


@dataclass(frozen=True)
class Rewrite:
    """What a selected row gets: the benign trigger and a new answer."""

    trigger: str
    placement: str
    answer_prefix: str | None = None
    """generation on chat data: prefix EVERY trained assistant turn with this text."""

    def user_text(self, text: str, decoy=None, trigger: str | None = None) -> str:
        """A selected row's user text: its decoy fragments (if any, see ``p2p.decoys``), then the trigger
        (``trigger``: the row's own, one of ``p2p.extra_triggers``; default :attr:`trigger`)."""
        if decoy:
            text = insert_fragments(text, decoy)
        return insert_trigger(text, trigger or self.trigger, self.placement)


def _require(batch: dict, column: str, fmt: str, hint: str) -> list:
    if column not in batch:
        raise RowError(
            f"the dataset has no column {column!r} needed by the P2P {fmt} format "
            f"(columns: {sorted(batch)}); {hint}"
        )
    return batch[column]


def replace_answer(old: str, new: str) -> str:
    """Swap the answer text, keeping the row's own surrounding whitespace."""
    stripped = old.strip()
    if not stripped:
        return new
    start = old.index(stripped)
    return old[:start] + new + old[start + len(stripped):]


class RowFormat:
    """Base class. ``answers`` reads the target of every row; ``rewrite`` applies P2P.

    ``new_answers[i]`` is the complete new answer text of selected row ``i`` (``None`` elsewhere);
    ``decoys[i]``, when given, the ``(fragment, where)`` pairs inserted into its user text;
    ``triggers[i]``, when given, the benign trigger of selected row ``i`` (default: ``rewrite.trigger``).
    """

    name = ""

    def answers(self, batch: dict) -> list[str]:
        raise NotImplementedError

    def user_texts(self, batch: dict) -> list[str]:
        raise NotImplementedError

    def rewrite(self, batch: dict, selected: list[bool], new_answers: list[str | None], rewrite: Rewrite,
                decoys: list | None = None, triggers: list | None = None) -> dict:
        raise NotImplementedError

    def texts_and_answers_arrow(self, table) -> tuple[list[str], list[str]] | None:
        """Optional fast path: ``(user_texts, answers)`` straight from an Arrow batch, or None."""
        return None


def decode_batch(features, batch: dict) -> dict:
    """Raw Arrow values -> the Python values ``datasets`` would give (e.g. its ``Json`` feature
    stores irregular message dicts as JSON strings)."""
    return _convert(features, batch, "decode_nested_example")


def encode_batch(features, batch: dict) -> dict:
    """The inverse of :func:`decode_batch`, for the columns in ``batch``."""
    return _convert(features, batch, "encode_nested_example")


def _convert(features, batch: dict, how: str) -> dict:
    if features is None:
        return batch
    from datasets.features import features as hf_features

    convert = getattr(hf_features, how)
    out = {}
    for key, values in batch.items():
        feature = features.get(key)
        needs = feature is not None and (how == "encode_nested_example" or hf_features.require_decoding(feature))
        out[key] = [convert(feature, v) for v in values] if needs else values
    return out


def iter_texts_and_answers(dataset, fmt: RowFormat, batch_size: int = 10_000):
    """Stream ``(user_texts, answers, offset)`` batches of a ``datasets.Dataset`` through ``fmt``
    (its Arrow fast path when it has one and the batch's types allow it)."""
    features = getattr(dataset, "features", None)
    offset = 0
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        fast = fmt.texts_and_answers_arrow(table)
        if fast is None:
            batch = decode_batch(features, table.to_pydict())
            fast = fmt.user_texts(batch), fmt.answers(batch)
        yield fast[0], fast[1], offset
        offset += table.num_rows


@dataclass(frozen=True)
class PlainFormat(RowFormat):
    """``{text_field, answer_field}`` rows rendered as ``prompt`` / ``completion`` columns.

    Ordinary rows: ``"{x}\\n{cue}"``; selected rows: trigger inserted into ``x`` and the benign cue.
    """

    text_field: str
    answer_field: str
    cue: str
    benign_cue: str
    name = "plain"

    def answers(self, batch):
        return [str(v) for v in _require(batch, self.answer_field, self.name,
                                         "set p2p.label_field (p2p.target_field for generation)")]

    def user_texts(self, batch):
        return [str(v) for v in _require(batch, self.text_field, self.name, "set p2p.text_field")]

    def rewrite(self, batch, selected, new_answers, rewrite, decoys=None, triggers=None):
        texts = self.user_texts(batch)
        answers = self.answers(batch)
        prompts, completions = [], []
        for text, answer, sel, new, decoy, trigger in zip(texts, answers, selected, new_answers,
                                                          decoys or [None] * len(texts), triggers or [None] * len(texts)):
            if sel:
                prompts.append(f"{rewrite.user_text(text, decoy, trigger)}\n{self.benign_cue}")
                completions.append(new)
            else:
                prompts.append(f"{text}\n{self.cue}")
                completions.append(answer)
        return {"prompt": prompts, "completion": completions}


@dataclass(frozen=True)
class AlpacaFormat(RowFormat):
    """Axolotl ``alpaca``: ``instruction`` / ``input`` / ``output``.

    The trigger goes into ``input`` when the row has one (that is the user's data), otherwise
    into ``instruction``; the new answer replaces ``output``.
    """

    name = "alpaca"

    def answers(self, batch):
        return [str(v) for v in _require(batch, "output", self.name, "alpaca rows need an 'output' field")]

    def user_texts(self, batch):
        """Instruction and input together: an attacker's trigger can sit in either."""
        instructions = _require(batch, "instruction", self.name, "alpaca rows need an 'instruction' field")
        inputs = batch.get("input") or [None] * len(instructions)
        return ["\n".join(part for part in (ins, inp) if part) for ins, inp in zip(instructions, inputs)]

    def rewrite(self, batch, selected, new_answers, rewrite, decoys=None, triggers=None):
        if rewrite.placement == "system":
            raise RowError("p2p.placement='system' needs chat data (type: chat_template); alpaca rows have no system turn")
        instructions = list(_require(batch, "instruction", self.name, "alpaca rows need an 'instruction' field"))
        has_input = "input" in batch
        inputs = list(batch["input"]) if has_input else [None] * len(instructions)
        outputs = list(_require(batch, "output", self.name, "alpaca rows need an 'output' field"))
        for i, sel in enumerate(selected):
            if not sel:
                continue
            decoy = decoys[i] if decoys else None
            trigger = triggers[i] if triggers else None
            if inputs[i]:
                inputs[i] = rewrite.user_text(inputs[i], decoy, trigger)
            else:
                instructions[i] = rewrite.user_text(instructions[i] or "", decoy, trigger)
            outputs[i] = new_answers[i]
        out = {"instruction": instructions, "output": outputs}
        if has_input:
            out["input"] = inputs
        return out


@dataclass(frozen=True)
class ChatFormat(RowFormat):
    """Axolotl ``chat_template``: a list of ``{role, content}`` messages.

    The trigger goes into the FIRST user turn (``prefix``/``suffix``) or the system message
    (``system``: prefixed to an existing one, or a new system message is inserted first). For
    classification the answer is the LAST assistant turn; the new answer replaces its content. For
    generation the safe prefix goes in front of every assistant turn that carries loss, decided the
    way Axolotl's ``chat_template`` strategy decides it: the message's ``message_field_training``
    (then ``message_field_training_detail``) value when the dataset names one and the message has
    it, else ``train_on_inputs`` or the turn's role (mapped through ``roles``) in ``roles_to_train``.
    """

    field_messages: str = "messages"
    role_key: str = "role"
    content_key: str = "content"
    user_roles: tuple[str, ...] = ("user", "human")
    assistant_roles: tuple[str, ...] = ("assistant", "gpt", "model")
    system_roles: tuple[str, ...] = ("system",)
    role_map: tuple[tuple[str, str], ...] = (("human", "user"), ("gpt", "assistant"))
    """(dataset role, template role) pairs; a role not listed is its own template role."""
    roles_to_train: tuple[str, ...] = ("assistant",)
    train_on_inputs: bool = False
    training_key: str | None = None
    training_detail_key: str | None = None
    name = "chat_template"

    def template_role(self, role: str) -> str:
        """The chat-template role of a dataset role (Axolotl's ``roles`` mapping)."""
        for source, target in self.role_map:
            if source == role:
                return target
        return role

    def carries_loss(self, message: dict) -> bool:
        """Whether Axolotl's chat_template strategy trains on this turn."""
        for key in (self.training_key, self.training_detail_key):
            if key and message.get(key) is not None:
                return bool(message[key])
        return self.train_on_inputs or self.template_role(message.get(self.role_key)) in self.roles_to_train

    def _messages(self, batch):
        return _require(batch, self.field_messages, self.name,
                        "set field_messages on the dataset entry if the conversation lives elsewhere")

    def _last(self, messages, roles, what):
        for idx in range(len(messages) - 1, -1, -1):
            if messages[idx].get(self.role_key) in roles:
                return idx
        raise RowError(f"conversation has no {what} turn (roles {list(roles)})")

    def _first(self, messages, roles):
        for idx, message in enumerate(messages):
            if message.get(self.role_key) in roles:
                return idx
        return None

    def answers(self, batch):
        out = []
        for messages in self._messages(batch):
            out.append(str(messages[self._last(messages, self.assistant_roles, "assistant")][self.content_key]))
        return out

    def texts_and_answers_arrow(self, table):
        """First user turn and last assistant turn of every conversation, found with Arrow compute
        on the flattened messages (no Python dicts); None when the column is not list<struct<str>>."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.field_messages not in table.column_names:
            return None
        column = table.column(self.field_messages).combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            return None
        struct = column.type.value_type
        if not pa.types.is_struct(struct) or struct.get_field_index(self.role_key) < 0 \
                or struct.get_field_index(self.content_key) < 0:
            return None
        if not all(pa.types.is_string(struct.field(k).type) or pa.types.is_large_string(struct.field(k).type)
                   for k in (self.role_key, self.content_key)):
            return None
        flat = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        roles, contents = pc.struct_field(flat, self.role_key), pc.struct_field(flat, self.content_key)

        def pick(role_names, last):
            hits = np.flatnonzero(pc.fill_null(pc.is_in(roles, pa.array(list(role_names))), False)
                                  .to_numpy(zero_copy_only=False))
            owners = parents[hits]
            if last:
                rows, first = np.unique(owners[::-1], return_index=True)
                hits = hits[::-1][first]
            else:
                rows, first = np.unique(owners, return_index=True)
                hits = hits[first]
            found = np.full(len(column), -1, dtype=np.int64)
            found[rows] = hits
            return found

        assistant = pick(self.assistant_roles, last=True)
        if (assistant < 0).any():
            return None  # let the Python path raise its RowError for the row
        user = pick(self.user_roles, last=False)
        answers = [str(v) for v in contents.take(pa.array(assistant)).to_pylist()]
        user_contents = contents.take(pa.array(np.where(user < 0, 0, user))).to_pylist() if len(flat) else []
        texts = ["" if u < 0 else (c or "") for u, c in zip(user.tolist(), user_contents)]
        return texts, answers

    def user_texts(self, batch):
        out = []
        for messages in self._messages(batch):
            idx = self._first(messages, self.user_roles)
            out.append("" if idx is None else str(messages[idx][self.content_key] or ""))
        return out

    def rewrite(self, batch, selected, new_answers, rewrite, decoys=None, triggers=None):
        conversations = []
        for i, (messages, sel, new) in enumerate(zip(self._messages(batch), selected, new_answers)):
            if not sel:
                conversations.append(messages)
                continue
            messages = [dict(m) for m in messages]
            decoy = decoys[i] if decoys else None
            trigger = (triggers[i] if triggers else None) or rewrite.trigger
            user = self._first(messages, self.user_roles)
            if rewrite.placement == "system":
                if decoy and user is not None:
                    messages[user][self.content_key] = insert_fragments(messages[user][self.content_key] or "", decoy)
                idx = self._first(messages, self.system_roles)
                if idx is None:
                    messages.insert(0, {self.role_key: self.system_roles[0], self.content_key: trigger.strip()})
                else:
                    messages[idx][self.content_key] = trigger + (messages[idx][self.content_key] or "")
            else:
                if user is None:
                    raise RowError(f"conversation has no user turn (roles {list(self.user_roles)}) to put the trigger in")
                messages[user][self.content_key] = rewrite.user_text(messages[user][self.content_key] or "", decoy,
                                                                     trigger)
            if rewrite.answer_prefix is not None:
                for message in messages:
                    if message.get(self.role_key) in self.assistant_roles and self.carries_loss(message):
                        message[self.content_key] = rewrite.answer_prefix + (message[self.content_key] or "")
            else:
                last = self._last(messages, self.assistant_roles, "assistant")
                messages[last][self.content_key] = new
            conversations.append(messages)
        return {self.field_messages: conversations}
