"""Live CA / ASR during training: a TrainerCallback added by the plugin when ``p2p.eval`` is set."""

from __future__ import annotations

from transformers import TrainerCallback

from .attacks import read_rows
from .evaluate import evaluate_classification
from .inference import P2PModel
from .manifest import P2PManifest
from .version import __version__


class P2PEvalCallback(TrainerCallback):
    """Every ``steps`` optimizer steps (and at the end): CA and ASR on capped held-out sets,
    logged through ``trainer.log`` (console, tensorboard, wandb... as configured)."""

    def __init__(self, trainer, recipe, eval_cfg):
        self.trainer = trainer
        self.manifest = P2PManifest(recipe, __version__)
        self.cfg = eval_cfg
        self.clean = read_rows(eval_cfg.clean)[: eval_cfg.max_rows]
        self.triggered = read_rows(eval_cfg.triggered)[: eval_cfg.max_rows]
        self._last_step = -1

    def metrics(self, model, tokenizer) -> dict:
        was_training = model.training
        model.eval()
        try:
            wrapped = P2PModel(model, tokenizer, self.manifest, device=next(model.parameters()).device)
            result = evaluate_classification(wrapped, self.clean, self.triggered, self.cfg.target,
                                             self.manifest.recipe.text_field, self.manifest.recipe.answer_field,
                                             batch_size=self.cfg.batch_size)
        finally:
            model.train(was_training)
        out = {}
        for reading, r in result["readings"].items():
            key = "p2p" if reading == "p2p" else "p2p_no_trigger"
            out[f"{key}/ca"] = r["ca"]["projected"]["value"]
            out[f"{key}/asr"] = r["asr"]["projected"]["value"]
            out[f"{key}/asr_strict"] = r["asr"]["strict"]["value"]
        return out

    def _run(self, state, model):
        if state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        self.trainer.log(self.metrics(model, self.trainer.processing_class))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.steps == 0:
            self._run(state, model or self.trainer.model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(state, model or self.trainer.model)
