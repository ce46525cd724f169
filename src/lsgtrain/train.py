"""Training entry: `python train.py [experiment=NAME] [key=value ...]` (Hydra config in `conf/train.yaml`).

`train(cfg)` builds every object from the config with `hydra.utils.instantiate`, fits, tests the best checkpoint
and returns `(metrics, objects)`; `main` is the Hydra entry and returns the metric a sweep optimises.
"""

import importlib.resources
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import lightning as L
import torch
from huggingface_hub.errors import StrictDataclassError
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from .callbacks.batch_size import BatchProbe, plan_batch
from .callbacks.hf_export import refuse_untrained
from .callbacks.rouge_evaluation import validated_on_less
from .callbacks.telemetry import run_telemetry
from .checkpointing import (
    RUN_TOKENIZER_DIR,
    AtomicCheckpointIO,
    RunConfigCheckpoint,
    check_resume,
    check_weights_fit,
    load_checkpoint,
    resolve_resume_checkpoint,
    tokenizer_choice,
    tokenizer_identity,
)
from .data.tokenizer import save_tokenizer_once
from .modeling.configuration_lsg_pegasus import LSGPegasusConfig
from .preflight import check_config
from .run.folder import RunFolder, RunReport
from .run.sweep import run_trial

if TYPE_CHECKING:
    from .data.datamodule import LongDocumentDataModule

logger = logging.getLogger(__name__)

# Our training samplers restart mid-epoch where the checkpoint stopped (LongDocumentDataModule.state_dict), which
# Lightning cannot see from the DataLoader, so its warning about non-resumable loaders does not apply.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def _config_dir() -> str:
    """The Hydra configs: the repository's conf/, installed as the `lsgtrain.conf` package by a wheel and by
    `pip install -e` alike, so an installed lsgtrain trains from any folder; LSGTRAIN_CONFIG_DIR overrides it."""
    if os.environ.get("LSGTRAIN_CONFIG_DIR"):
        return os.environ["LSGTRAIN_CONFIG_DIR"]
    try:
        return str(importlib.resources.files("lsgtrain.conf"))
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "lsgtrain's configs (package lsgtrain.conf) are not installed: this install predates them; reinstall "
            "lsgtrain (`pip install -e .` in a clone, or `pip install .`)"
        ) from error


CONFIG_DIR = _config_dir()


def _instantiate(conf: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, raising the target's own error (key, value, fix) rather than Hydra's wrapping."""
    try:
        return instantiate(conf, **kwargs)
    except InstantiationException as error:
        raise (error.__cause__ or error) from None


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group (a dict of named configs)."""
    if not group:
        return []
    return [_instantiate(conf) for conf in group.values() if isinstance(conf, DictConfig) and "_target_" in conf]


def build(cfg: DictConfig) -> dict[str, Any]:
    """Seed, check the config, then instantiate datamodule, callbacks, model, LightningModule, loggers, trainer.

    Every component checks its own arguments as it is built; those built before the model (which may train a
    tokenizer on the data) and the module's `check_arguments` refuse bad settings before any data work."""
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    # Impossible LSG parameters fail here, before any data is read or tokenised, with the validator's own message.
    try:
        LSGPegasusConfig(**OmegaConf.to_container(cfg.model.lsg, resolve=True))
    except StrictDataclassError as error:
        raise ValueError(f"model.lsg: {error.__cause__ or error}") from error
    check_config(cfg)  # then the other settings that would fail late or unclearly

    logger.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule = _instantiate(cfg.data, _convert_="all")
    module_factory = _instantiate(cfg.module, _convert_="all", _partial_=True)
    module_factory.func.check_arguments(**module_factory.keywords)
    callbacks = _instantiate_group(cfg.callbacks)
    run_config = RunConfigCheckpoint(OmegaConf.to_container(cfg, resolve=True), datamodule.identity)
    loggers = _instantiate_group(cfg.logger)
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # ranks from SLURM; requeueing is RequeueOnPreemption's job (step boundaries)
        plugins.append(SLURMEnvironment(auto_requeue=False))
    # The trainer comes before the model (which may train a tokenizer on the data): its world size decides the step's
    # batch, refused here when inexact.
    trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=[*callbacks, run_config], logger=loggers, plugins=plugins)
    batch = plan_batch(
        batch_size=cfg.data.batch_size, effective=cfg.effective_batch_size, devices=trainer.world_size,
        accumulation=trainer.accumulate_grad_batches, allow_rounded=cfg.allow_rounded_effective_batch,
    )  # fmt: skip
    probe = BatchProbe(batch) if batch.per_device is None and cfg.train else None  # without training: eval batch
    if probe:
        trainer.callbacks.insert(0, probe)  # first: other callbacks' setup sees the chosen batch
    else:
        trainer.accumulate_grad_batches = batch.accumulation
        logger.info("effective batch %s", batch.describe())
    logger.info("Instantiating model <%s>", cfg.model._target_)
    # One decision for model and tokenizer (lsgtrain.modeling.factory); a resumed run keeps its saved tokenizer.
    model, datamodule.tokenizer = _instantiate(
        cfg.model, _convert_="all", **tokenizer_choice(cfg, datamodule), data_head=datamodule.model_kwargs
    )
    save_tokenizer_once(datamodule.tokenizer, Path(cfg.paths.output_dir) / RUN_TOKENIZER_DIR)
    module = module_factory(model=model)
    run_config.tokenizer = tokenizer_identity(datamodule.tokenizer)
    for experiment_logger in trainer.loggers:
        experiment_logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "module": module, "trainer": trainer}
    return {**objects, "batch": batch, "probe": probe}


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint; returns the logged metrics and the objects built.

    The run folder (`RunFolder`) is locked for the whole run, a finished run is not re-entered, and a checkpoint to
    resume from is read and checked before any data is tokenised.
    """
    with RunFolder(cfg.paths.output_dir) as folder:
        given = cfg.ckpt_path
        checkpoint = load_checkpoint(given) if given and given != "last" else None  # before the tokenizer is built
        objects = build(cfg)
        trainer, module, datamodule, batch = (objects[key] for key in ("trainer", "module", "datamodule", "batch"))
        resume = resolve_resume_checkpoint(given, trainer)
        if resume:
            logger.info("Resuming from %s", resume)
            checkpoint = checkpoint or load_checkpoint(resume)
            check_weights_fit(checkpoint, module, resume)
            if cfg.train:
                check_resume(checkpoint, cfg, datamodule, resume)
            if objects["probe"]:  # data.batch_size=auto: the batch that run chose, not a new probe
                objects["probe"].keep(checkpoint, resume)
        del checkpoint
        if not cfg.train and cfg.test and not datamodule.has_split("test"):
            raise ValueError(
                "train=false runs only the test, but the data has no test split; give one "
                "(data.data_files.test=...) or use python -m lsgtrain.evaluate for the validation split"
            )
        folder.training()

        test_ckpt = resume
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
            refuse_untrained(trainer)
            test_ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
            if validated_on_less(trainer) and not trainer.interrupted and not trainer.fast_dev_run:
                _score_on_the_whole_validation(trainer, module, datamodule, test_ckpt)
        metrics = logged_metrics(trainer)
        untested = _why_not_tested(cfg, trainer, datamodule)
        if untested:
            logger.warning("not testing: %s", untested)
        else:
            trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, weights_only=True)
            metrics.update(logged_metrics(trainer))
        config = OmegaConf.to_container(cfg, resolve=True)
        report = RunReport(
            config, metrics, folder.seconds, resumed=bool(resume), untested=untested, batch=batch,
            telemetry=run_telemetry(trainer),
        )  # fmt: skip
        folder.finish(trainer, report)
    return metrics, objects


def _score_on_the_whole_validation(
    trainer: L.Trainer, module: L.LightningModule, datamodule: "LongDocumentDataModule", best: str | None
) -> None:
    """After a fit whose ROUGE ran on a validation sample or with the validation decoding (`callbacks.rouge.
    max_samples`, `.val_generation`), score the best checkpoint on the whole validation split with the final
    decoding (`module.generation`): these `val/` metrics replace the sample's in the returned metrics (what a sweep
    optimises), `run_summary.json` and, through the export's own `on_validation_end`, the model card."""
    logger.info("scoring %s on the whole validation split with module.generation", best or "the last weights")
    trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)


def _why_not_tested(cfg: DictConfig, trainer: L.Trainer, datamodule: "LongDocumentDataModule") -> str | None:
    """Why the run skips its test (for the log, run_summary.json and the model card), or None when it tests."""
    if not cfg.test:
        return "test=false"
    if trainer.interrupted:
        return "the run was interrupted"
    if not datamodule.has_split("test"):
        return "the data has no test split"
    return None


def logged_metrics(trainer: L.Trainer) -> dict[str, float]:
    """What the trainer logged last (`callback_metrics`), as plain floats: the entry points return and record these."""
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry; returns `cfg.optimized_metric` for sweepers, and records each trial of a sweep."""
    torch.set_float32_matmul_precision("high")
    return run_trial(lambda: train(cfg)[0].get(cfg.optimized_metric))


# `python -m lsgtrain.train`: what `lsgtrain train` runs, and what Lightning runs again for each further DDP process.
if __name__ == "__main__":
    from lsgtrain.train import main  # the importable function, as train.py calls it: submitit pickles it by name

    main()
