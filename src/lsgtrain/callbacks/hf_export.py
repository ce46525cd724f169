"""Exports the best checkpoint as a Hugging Face folder (weights, tokenizer, modeling code, the run's generation
settings) at the end of fit, adds its model card once the test set has run on those weights (`lsgtrain.model_card`),
and pushes it to the hub when asked."""

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning import Callback, LightningModule, Trainer
from transformers import GenerationConfig
from typing_extensions import override

from ..arguments import ConfigError, unwritable
from ..checkpointing import is_sharded_checkpoint, load_checkpoint
from ..hub import PushTarget, push_folder
from ..model_card import build_model_card, write_model_card
from ..modeling.convert import save_atomically
from ..sharding import full_state_dict, unsharded
from .divergence import TrainingDiverged
from .rouge_evaluation import RougeEvaluation

if TYPE_CHECKING:
    from ..run.folder import RunReport

logger = logging.getLogger(__name__)

# Generation settings that bound the same length two ways: the run's one replaces the checkpoint's other one.
LENGTH_BOUNDS = (("max_new_tokens", "max_length"), ("min_new_tokens", "min_length"))


class HFExport(Callback):
    """After `fit`, write the best model (by the checkpoint callback's monitor; the last one if none) to `dirpath`;
    at the end of the run (`lsgtrain.run.folder.RunEndCallback`) its model card, then the push.

    The folder loads with `AutoModelForSeq2SeqLM` / `AutoModelForSequenceClassification.from_pretrained(dirpath,
    trust_remote_code=True)`. It is written to a temporary folder and renamed, so it only exists when complete, and
    it is as readable as any new folder (the umask decides). A seq2seq model's `generation_config.json` holds the
    settings the run's test generated with (`module.generation`; `callbacks.rouge.val_generation` is for validation
    during training only), so `generate()` without arguments after loading decodes as the run's test did.

    Args:
        dirpath: the export folder.
        license: the model card's license (a hub license id, e.g. `apache-2.0`); None: the base checkpoint's when
            its model card names one, else apache-2.0.
        push_to_hub: `{repo_id, private}`: where the finished export is pushed once the run has finished (None or
            `repo_id: null`: nowhere); private unless `private: false`.
        base_model, dataset: the hub ids the model card names (`base_model`, `datasets`) when the base checkpoint /
            the dataset is a local copy whose path does not spell it (a hub-cache folder does); None: from the path.

    Raises:
        ConfigError: a `dirpath` nothing can be written in (probed now: the export comes after the training).
        ValueError: a bad `push_to_hub`; generation settings that `generate` does not know or that contradict each
            other (at setup, before training).
    """

    def __init__(
        self,
        dirpath: str,
        license: str | None = None,
        push_to_hub: dict[str, Any] | None = None,
        base_model: str | None = None,
        dataset: str | None = None,
    ):
        self.dirpath = Path(dirpath)
        problem = unwritable(self.dirpath)
        if problem:
            raise ConfigError(
                f"callbacks.hf_export.dirpath={dirpath}: {problem}; the export is written there after the training. "
                "Point it at a folder you can write, or set callbacks.hf_export=null"
            )
        self.license = license
        self.base_model = base_model
        self.dataset = dataset
        self.push_to_hub = PushTarget.from_config(push_to_hub)
        self.generation_config: GenerationConfig | None = None
        self.exported = False  # the folder was written by this process's fit
        self.validation_metrics: dict[str, float] = {}  # of the exported model: its checkpoint's validation
        self._last_validation: dict[str, float] = {}

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and not trainer.fast_dev_run:  # settings that cannot be saved fail now, not after fit
            self.generation_config = run_generation_config(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Runs before the checkpoint callbacks (Lightning calls them last), so a checkpoint saved at this validation
        # stores its metrics (state_dict) and the export reports the validation of the very weights it writes.
        if trainer.sanity_checking:
            return
        self._last_validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.exported and trainer.state.fn == "validate":  # the exported weights scored again after the fit
            self.validation_metrics = self._last_validation

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"validation_metrics": self._last_validation}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_validation = dict(state_dict.get("validation_metrics", {}))

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.interrupted:
            return
        refuse_untrained(trainer)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        self.validation_metrics = self._last_validation
        if best:
            checkpoint = load_checkpoint(best, key="best checkpoint")
            if is_sharded_checkpoint(best):  # every process loads its own shards into the sharded model
                trainer.strategy.load_checkpoint(best, weights_only=True)
            else:
                pl_module.load_state_dict(checkpoint["state_dict"])
            self.validation_metrics = checkpoint.get("callbacks", {}).get(self.state_key, {}).get("validation_metrics")
            if self.validation_metrics is None:
                logger.warning("%s holds no validation metrics (older lsgtrain): the model card omits them", best)
                self.validation_metrics = {}
        weights = full_state_dict(pl_module.model)  # sharded (trainer=fsdp): gathered on the first process only
        broken = [name for name, value in weights.items() if not torch.isfinite(value).all()]
        broken = trainer.strategy.broadcast(broken)
        if broken:
            raise TrainingDiverged(
                f"the {'best' if best else 'last'} model has non-finite weights ({len(broken)} tensors, e.g. "
                f"{broken[0]}): not exported to {self.dirpath}. Lower module.optimizer.lr and start a new run."
            )
        if trainer.is_global_zero:
            # the tokenizer truncates at the length the model was trained at (`lsgtrain eval` reads it back)
            tokenizer = copy.deepcopy(trainer.datamodule.tokenizer)
            tokenizer.model_max_length = trainer.datamodule.max_source_length
            tokenizer.init_kwargs["model_max_length"] = trainer.datamodule.max_source_length  # what is saved
            save_atomically(unsharded(pl_module.model, weights), tokenizer, self.dirpath, self.generation_config)
            logger.info("exported %s model to %s", "best" if best else "last", self.dirpath)
        self.exported = True
        trainer.strategy.barrier()

    def on_run_end(self, trainer: Trainer, report: "RunReport") -> None:
        """Add the model card to the export, now that the test set has run on the exported weights (or with the
        reason it did not)."""
        if not self.exported:
            return
        card = build_model_card(
            run_config=report.config,
            model_config=trainer.lightning_module.model.config,
            validation=self.validation_metrics,
            test={key: value for key, value in report.metrics.items() if key.startswith("test/")},
            generation=self.generation_config,
            trainer=trainer,
            batch=report.batch,
            seconds=report.seconds,
            resumed=report.resumed,
            license=self.license,
            repo_id=self.push_to_hub.repo_id,
            rows=trainer.datamodule.rows,
            untested=report.untested,
            hub_ids={"base_model": self.base_model, "dataset": self.dataset},
            telemetry=report.telemetry,
        )
        logger.info("model card written to %s", write_model_card(card, self.dirpath))

    def on_run_finished(self, trainer: Trainer) -> None:
        if self.exported and self.push_to_hub.repo_id:
            push_export(self.dirpath, self.push_to_hub)


def push_export(folder: Path, target: PushTarget) -> None:
    """Push a finished run's export (callbacks.hf_export.push_to_hub); a failure leaves the run finished and says how
    to push it again."""
    try:
        push_folder(folder, target)
    except Exception as error:  # the hub's and the network's errors alike: the run itself is done
        retry = f"lsgtrain push {folder} {target.repo_id}{'' if target.private else ' --public'}"
        raise RuntimeError(
            f"the run finished and its export is in {folder}, but pushing it to {target.repo_id} failed: "
            f"{error}. Push it again with `{retry}`"
        ) from error


class UntrainedModel(RuntimeError):
    """A fit that made no optimizer step: its model must not be exported or reported as trained."""


def refuse_untrained(trainer: Trainer) -> None:
    """Raise if the fit made no optimizer step at all (a time limit reached at once, no batch to train on): the
    weights are the initial ones, and exporting them or writing run_summary.json would call them trained."""
    if trainer.global_step == 0:
        raise UntrainedModel(
            f"the run made no optimizer step (trainer.max_epochs={trainer.max_epochs}, trainer.max_steps="
            f"{trainer.max_steps}, {trainer.num_training_batches} training batches, trainer.max_time if set): its "
            "model is untrained, so it is not exported and the run is not marked finished. Give it steps to take "
            "(more epochs, steps, time or training data)"
        )


def run_generation_config(trainer: Trainer, pl_module: LightningModule) -> GenerationConfig | None:
    """The generation config the run's test decodes with, for the export (None: the model does not generate): the
    model's own (token ids, a checkpoint's settings) updated by `module.generation`, the same merge
    `generate(**settings)` does. The validation decoding during training (`callbacks.rouge.val_generation`) is
    checked here too, so a typo in it fails before training."""
    model = pl_module.model
    if not model.can_generate():
        return None
    rouge = next((c for c in trainer.callbacks if isinstance(c, RougeEvaluation)), None)
    if rouge is not None and rouge.val_generation:
        settings = pl_module.generation_settings(**rouge.val_generation)
        _generation_config(model, settings, "callbacks.rouge.val_generation", strict=False)
    return _generation_config(model, pl_module.generation_settings(), "module.generation")


def _generation_config(model: Any, settings: dict[str, Any], key: str, strict: bool = True) -> GenerationConfig:
    """The model's generation config updated by `settings`; unknown keys are an error, and so, when `strict` (what
    `save_pretrained` requires; `generate` only warns), are settings that contradict each other."""
    values = {k: v for k, v in model.generation_config.to_diff_dict().items() if not k.startswith("_")}
    values.pop("transformers_version", None)  # rewritten on save; the rest is the model's own
    # A checkpoint's `max_length` (256 in google/pegasus-large) beside the run's `max_new_tokens` makes transformers
    # warn on every generate(); the run's own bound replaces the checkpoint's.
    for pair in LENGTH_BOUNDS:
        for run_key, checkpoint_key in (pair, pair[::-1]):
            if run_key in settings:
                values.pop(checkpoint_key, None)
    config = GenerationConfig(**values)
    unknown = config.update(**settings)
    if unknown:
        raise ValueError(
            f"{key}: {sorted(unknown)} are not generate() settings "
            "(transformers.GenerationConfig has no such keys); remove them or fix their names"
        )
    if not strict:
        return config
    try:
        config.validate(strict=True)  # what GenerationConfig.save_pretrained requires
    except ValueError as error:
        raise ValueError(f"{key} cannot be a generation config (the export's, or the validation's): {error}") from error
    return config
