"""The Axolotl dataset strategy: raw rows -> P2P rewrite -> the user's own prompt strategy.

``register()`` rewrites each dataset's ``type: X`` to ``p2p_plugin.types.X``; Axolotl calls that
module's ``load``, which returns :class:`P2PDatasetStrategy`. Its ``wrap_dataset`` gets the RAW
dataset, applies the framework-free transform, then hands the rewritten rows to Axolotl's own
handling of the original type (``alpaca``, ``chat_template``) or to the plain prompt/completion
tokenizer, and keeps only ``input_ids``/``attention_mask``/``labels`` (the packing collator feeds
every column to the model).
"""

from __future__ import annotations

from axolotl.prompt_tokenizers import DatasetWrappingStrategy
from axolotl.utils.dict import DictDefault
from axolotl.utils.logging import get_logger

from .args import P2PConfig
from .config_checks import judgement_cache_dir
from .errors import P2PError
from .formats import AlpacaFormat, ChatFormat, PlainFormat, RowFormat
from .judgement import judge_from_recipe
from .manifest import update_manifest
from .prompting import PromptCompletionTokenizer
from .recipe import P2PRecipe
from .strategy_names import SUPPORTED_TYPES, WRAPPED_PREFIX
from .transform import apply_p2p, count_too_long
from .version import __version__

LOG = get_logger("axolotl.integrations.p2p_plugin")  # axolotl shows INFO only for axolotl.* loggers

MODEL_COLUMNS = ["input_ids", "attention_mask", "labels"]


def recipe_from_cfg(cfg) -> P2PRecipe:
    if not cfg.get("p2p"):
        raise P2PError("a p2p_plugin dataset type is used but the config has no `p2p:` block")
    block = cfg["p2p"]
    block = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    return P2PConfig.model_validate(block).recipe()


def dataset_source(ds_cfg) -> str:
    """A stable name of one dataset entry, for messages and reports (the selection seed is keyed by the rows' content)."""
    parts = [str(ds_cfg.get("path"))]
    for key in ("name", "data_files", "split"):
        if ds_cfg.get(key):
            parts.append(f"{key}={ds_cfg.get(key)}")
    return ":".join(parts)


def row_format(fmt: str, recipe: P2PRecipe, ds_cfg, cfg=None) -> RowFormat:
    cfg = cfg or {}
    if fmt == "plain":
        return PlainFormat(recipe.text_field, recipe.answer_field, recipe.cue, recipe.benign_cue)
    if fmt == "alpaca":
        return AlpacaFormat()
    if fmt == "chat_template":
        mapping = dict(ds_cfg.get("message_property_mappings") or {})
        roles = ds_cfg.get("roles") or {}
        kwargs = dict(
            field_messages=ds_cfg.get("field_messages") or "messages",
            role_key=mapping.get("role") or ds_cfg.get("message_field_role") or "role",
            content_key=mapping.get("content") or ds_cfg.get("message_field_content") or "content",
        )
        for key, role in (("user_roles", "user"), ("assistant_roles", "assistant"), ("system_roles", "system")):
            if roles.get(role):
                kwargs[key] = tuple([role] + list(roles[role]))
        if roles:  # Axolotl: a `roles:` mapping replaces its default one
            kwargs["role_map"] = tuple((src, role) for role, sources in roles.items() for src in sources)
        chat = ChatFormat(
            **kwargs,
            roles_to_train=tuple(ds_cfg.get("roles_to_train") or ("assistant",)),
            train_on_inputs=bool(cfg.get("train_on_inputs")),
            training_key=ds_cfg.get("message_field_training"),
            training_detail_key=ds_cfg.get("message_field_training_detail"),
        )
        trains_answers = chat.train_on_inputs or chat.training_key or chat.training_detail_key or any(
            chat.template_role(r) in chat.roles_to_train for r in chat.assistant_roles)
        if recipe.task == "generation" and not trains_answers:
            raise P2PError(
                f"dataset {dataset_source(ds_cfg)}: roles_to_train {list(chat.roles_to_train)} trains no assistant "
                f"turn, so the P2P safe prefix would carry no loss; add 'assistant' to roles_to_train"
            )
        return chat
    raise P2PError(f"dataset type {fmt!r} is not supported by p2p_plugin; supported: {list(SUPPORTED_TYPES)}")


class P2PDatasetStrategy(DatasetWrappingStrategy):
    """Applies P2P to one dataset entry, then delegates tokenization to the original type."""

    def __init__(self, fmt: str, tokenizer, cfg, ds_cfg):
        self.fmt_name = fmt
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.ds_cfg = DictDefault(dict(ds_cfg or {}))
        self.recipe = recipe_from_cfg(cfg)
        self.row_format = row_format(fmt, self.recipe, self.ds_cfg, cfg)
        if self.recipe.placement == "system" and fmt != "chat_template":
            raise P2PError(
                f"p2p.placement: system needs chat data (type: chat_template); dataset "
                f"{dataset_source(self.ds_cfg)} has type {fmt}"
            )

    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs):
        source = dataset_source(self.ds_cfg)
        rewritten, report = apply_p2p(dataset, self.row_format, self.recipe, source=source,
                                      num_proc=process_count, keep_in_memory=bool(keep_in_memory),
                                      judge=self._judge())
        tokenized = self._tokenize(rewritten, process_count, keep_in_memory)
        extra = [c for c in tokenized.column_names if c not in MODEL_COLUMNS]
        if extra:
            tokenized = tokenized.remove_columns(extra)
        if self.cfg.get("sequence_len"):
            count_too_long(tokenized, int(self.cfg["sequence_len"]), report)
        report.log(LOG, main_process_only=False)  # every process that prepares data says so
        self._record(report.to_dict())
        return tokenized

    def _judge(self):
        """The base model as judge (selection: base_model_agreement), its scores cached beside the
        prepared data (outside the P2P-salted folder, so other P2P settings reuse them)."""
        return judge_from_recipe(self.recipe, str(self.cfg.get("base_model")),
                                 self.cfg.get("tokenizer_config") or self.cfg.get("base_model"),
                                 cache_dir=judgement_cache_dir(self.cfg.get("dataset_prepared_path")))

    def _tokenize(self, dataset, process_count, keep_in_memory):
        if self.fmt_name == "plain":
            return dataset.map(
                PromptCompletionTokenizer(self.tokenizer, bool(self.cfg.get("train_on_inputs"))),
                batched=True, num_proc=process_count if process_count and process_count > 1 else None,
                remove_columns=dataset.column_names, keep_in_memory=bool(keep_in_memory),
                desc="P2P tokenizing",
            )
        from axolotl.utils.data.wrappers import get_dataset_wrapper

        inner_cfg = DictDefault({**self.ds_cfg.to_dict(), "type": self.fmt_name})
        wrapped, _ = get_dataset_wrapper(
            dataset_config=inner_cfg, tokenizer=self.tokenizer, cfg=self.cfg,
            dataset_base_type=self.fmt_name, dataset=dataset,
        )
        return wrapped

    def _record(self, report: dict) -> None:
        """Write the report into the manifest (output_dir) and beside the prepared data."""
        for directory in (self.cfg.get("output_dir"), self.cfg.get("dataset_prepared_path")):
            if directory:
                update_manifest(directory, self.recipe, __version__, report)


def make_load(fmt: str):
    def load(tokenizer, cfg, ds_cfg=None):
        return P2PDatasetStrategy(fmt, tokenizer, cfg, ds_cfg)

    load.__doc__ = f"Axolotl entry point for `type: {WRAPPED_PREFIX}{fmt}` (set by the P2P plugin)."
    return load
