"""Training entry: `python train.py [experiment=NAME] [key=value ...]` (Hydra config in `conf/train.yaml`).

`train(cfg)` builds every object from the config with `hydra.utils.instantiate`, fits, tests the best checkpoint
and returns `(metrics, objects)`; `main` is the Hydra entry and returns the metric a sweep optimises.
"""

import contextlib
import importlib.resources
import json
import logging
import math
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import lightning as L
import torch
from huggingface_hub.errors import StrictDataclassError
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from .callbacks import HFExport, RougeEvaluation
from .callbacks.hf_export import refuse_untrained
from .checkpointing import (
    RUN_TOKENIZER_DIR,
    AtomicCheckpointIO,
    CheckpointError,
    RunConfigCheckpoint,
    RunFolderLock,
    changed_data,
    changed_settings,
    check_weights_fit,
    first_process_of_run,
    load_checkpoint,
    resolve_resume_checkpoint,
    saved_data_identity,
    saved_run_config,
    settings_in_one_config,
    tokenizer_choice,
)
from .data.tokenizer import save_tokenizer_once
from .hub import push_folder
from .loggers import finish_wandb_run
from .metrics.rouge import ROUGE_TYPES
from .model_card import build_model_card, write_model_card
from .modeling.configuration_lsg_pegasus import LSGPegasusConfig
from .preflight import check_config

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


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group (a dict of named configs)."""
    if not group:
        return []
    return [instantiate(conf) for conf in group.values() if isinstance(conf, DictConfig) and "_target_" in conf]


def build(cfg: DictConfig) -> dict[str, Any]:
    """Seed, check the config, then instantiate datamodule, model, LightningModule, callbacks, loggers, trainer."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    # Impossible LSG parameters fail here, before any data is read or tokenised, with the validator's own message.
    try:
        LSGPegasusConfig(**OmegaConf.to_container(cfg.model.lsg, resolve=True))
    except StrictDataclassError as error:
        raise ValueError(f"model.lsg: {error.__cause__ or error}") from error
    check_config(cfg)  # then the other settings that would fail late or unclearly

    logger.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data, _convert_="all")
    logger.info("Instantiating model <%s>", cfg.model._target_)
    # One decision for model and tokenizer (lsgtrain.modeling.factory); a resumed run keeps its saved tokenizer.
    try:
        model, datamodule.tokenizer = instantiate(
            cfg.model, _convert_="all", **tokenizer_choice(cfg, datamodule), data_head=datamodule.model_kwargs
        )
    except InstantiationException as error:  # the factory's own error (key, value, fix), not Hydra's wrapping
        raise (error.__cause__ or error) from None
    save_tokenizer_once(datamodule.tokenizer, Path(cfg.paths.output_dir) / RUN_TOKENIZER_DIR)
    module = instantiate(cfg.module, _convert_="all", model=model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    callbacks.append(RunConfigCheckpoint(OmegaConf.to_container(cfg, resolve=True), datamodule.identity))
    loggers = _instantiate_group(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # ranks from SLURM; requeueing is RequeueOnPreemption's job (step boundaries)
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins)
    if cfg.get("effective_batch_size"):
        per_step = cfg.data.batch_size * trainer.world_size
        trainer.accumulate_grad_batches = max(1, math.ceil(cfg.effective_batch_size / per_step))
        logger.info(
            "effective batch %d = %d per device x %d devices x %d accumulated", cfg.effective_batch_size,
            cfg.data.batch_size, trainer.world_size, trainer.accumulate_grad_batches,
        )  # fmt: skip
    for experiment_logger in trainer.loggers:
        experiment_logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return {"cfg": cfg, "datamodule": datamodule, "model": model, "module": module, "trainer": trainer}


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint; returns the logged metrics and the objects built.

    The run folder is locked for the whole run (a second run with the same `run_name` is refused), a finished run
    is not re-entered, and a checkpoint to resume from is read and checked before any data is tokenised.
    """
    first = first_process_of_run()
    with RunFolderLock(cfg.paths.output_dir) if first else contextlib.nullcontext():
        started = time.perf_counter()
        try:
            with _no_folder_if_refused(Path(cfg.paths.output_dir)) if first else contextlib.nullcontext():
                objects, resume = _prepare(cfg)
            return _fit_and_test(cfg, objects, resume, started)
        finally:
            finish_wandb_run()


@contextlib.contextmanager
def _no_folder_if_refused(output_dir: Path) -> Iterator[None]:
    """A new run refused before training (a bad setting, data or checkpoint) leaves no run folder behind: only the
    error says it ran. A folder that held more than Hydra's and the lock's files (a run to resume) is kept."""
    fresh = {path.name for path in output_dir.iterdir()} <= {".hydra", "train.log", ".lock"}
    try:
        yield
    except Exception:  # a refusal; an interrupted start (Ctrl-C while tokenising) keeps its train.log
        if fresh:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


def _prepare(cfg: DictConfig) -> tuple[dict[str, Any], str | None]:
    """Everything before training: the objects built and the checkpoint to resume from, checked against them."""
    _refuse_finished_run(Path(cfg.paths.output_dir))
    given = cfg.get("ckpt_path")
    checkpoint = load_checkpoint(given) if given and given != "last" else None  # before the tokenizer is built
    objects = build(cfg)
    resume = resolve_resume_checkpoint(given, objects["trainer"])
    if resume:
        logger.info("Resuming from %s", resume)
        checkpoint = checkpoint or load_checkpoint(resume)
        check_weights_fit(checkpoint, objects["module"], resume)
        if cfg.get("train", True):
            _refuse_changed_settings(checkpoint, cfg, resume)
            _refuse_changed_data(checkpoint, objects["datamodule"], resume)
        del checkpoint
    return objects, resume


def _fit_and_test(
    cfg: DictConfig, objects: dict[str, Any], resume: str | None, started: float
) -> tuple[dict[str, float], dict[str, Any]]:
    trainer, module, datamodule = objects["trainer"], objects["module"], objects["datamodule"]
    test_ckpt = resume
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        refuse_untrained(trainer)
        test_ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        _score_best_on_the_whole_validation(trainer, module, datamodule, test_ckpt)
    elif cfg.get("test", True) and not datamodule.has_split("test"):
        raise ValueError(
            "train=false runs only the test, but the data has no test split; give one "
            "(data.data_files.test=...) or use python -m lsgtrain.evaluate for the validation split"
        )
    metrics = _metrics(trainer)
    untested = _why_not_tested(cfg, trainer, datamodule)
    if untested:
        logger.warning("not testing: %s", untested)
    else:
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, weights_only=True)
        metrics.update(_metrics(trainer))
    if trainer.is_global_zero:
        elapsed = time.perf_counter() - started
        export = next((c for c in trainer.callbacks if isinstance(c, HFExport) and c.exported), None)
        if export is not None:
            _write_model_card(cfg, objects, export, metrics, elapsed, resumed=bool(resume), untested=untested)
        _write_summary(cfg, trainer, metrics, elapsed, untested)
        if export is not None and export.push_to_hub.repo_id:
            _push_export(export)
    return metrics, objects


def _score_best_on_the_whole_validation(
    trainer: L.Trainer, module: L.LightningModule, datamodule: "LongDocumentDataModule", best: str | None
) -> None:
    """After a fit whose ROUGE ran on a validation sample or with the validation decoding (`callbacks.rouge.
    max_samples`, `.val_generation`), score the best checkpoint on the whole validation split with the final
    decoding (`module.generation`): these `val/` metrics replace the sample's in the returned metrics (what a sweep
    optimises), `run_summary.json` and the model card."""
    rouge = next((c for c in trainer.callbacks if isinstance(c, RougeEvaluation)), None)
    if rouge is None or not rouge.reduced or trainer.interrupted or trainer.fast_dev_run:
        return
    logger.info("scoring %s on the whole validation split with module.generation", best or "the last weights")
    trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    export = next((c for c in trainer.callbacks if isinstance(c, HFExport) and c.exported), None)
    if export is not None:
        export.validation_metrics = {k: v for k, v in _metrics(trainer).items() if k.startswith("val/")}


def _why_not_tested(cfg: DictConfig, trainer: L.Trainer, datamodule: "LongDocumentDataModule") -> str | None:
    """Why the run skips its test (for the log and run_summary.json), or None when it tests."""
    if not cfg.get("test", True):
        return "test=false"
    if trainer.interrupted:
        return "the run was interrupted"
    if not datamodule.has_split("test"):
        return "the data has no test split"
    return None


def _refuse_finished_run(output_dir: Path) -> None:
    summary = output_dir / "run_summary.json"
    if summary.is_file():
        raise RuntimeError(
            f"the run in {output_dir} has finished ({summary.name} is there): rerunning it would overwrite its "
            "results. Start a new run with another run_name; to train it further, start that new run from its last "
            f"checkpoint with more epochs: run_name=NEW ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'} "
            "trainer.max_epochs=N"
        )


def _refuse_changed_settings(checkpoint: dict[str, Any], cfg: DictConfig, path: str) -> None:
    saved = saved_run_config(checkpoint)
    if saved is None:
        logger.warning("%s holds no run config (older lsgtrain): cannot check that the settings match", path)
        return
    current = OmegaConf.to_container(cfg, resolve=True)
    unmatched = settings_in_one_config(saved, current)
    if unmatched:
        logger.warning(
            "%s was written by a run whose config lacks (or has) these settings, taken as they are now (a run started "
            "with an older lsgtrain lacks the keys added since): %s", path, "; ".join(unmatched),
        )  # fmt: skip
    changed = changed_settings(saved, current)
    if changed:
        raise CheckpointError(
            f"ckpt_path={path}: a resume continues that run's optimizer, schedule and data order, but these "
            f"settings differ from the run that wrote it: {'; '.join(changed)}. Rerun with the checkpoint's "
            "values, or start a new run (another run_name, or ckpt_path=null), e.g. from its exported weights "
            "with model.pretrained=<run folder>/hf_model"
        )


def _refuse_changed_data(checkpoint: dict[str, Any], datamodule: "LongDocumentDataModule", path: str) -> None:
    """A resume goes on with the checkpoint's tokenizer and data order: on other data (a rewritten file, a new
    download) it would train on rows the run never chose, without a word. Refused unless data.allow_data_change."""
    saved = saved_data_identity(checkpoint)
    if saved is None:
        logger.warning("%s records no data identity (older lsgtrain): cannot check that the data is unchanged", path)
        return
    changed = changed_data(saved, datamodule.identity())
    if not changed:
        return
    message = f"ckpt_path={path} was trained on other data than this run reads: {'; '.join(changed)}"
    if datamodule.allow_data_change:
        logger.warning("%s. data.allow_data_change=true: resuming on the data as it is now, with the checkpoint's "
                       "tokenizer", message)  # fmt: skip
        return
    raise CheckpointError(
        f"{message}. Put the data back as it was, or start a new run (another run_name, or ckpt_path=null); to "
        "resume on the changed data on purpose (the checkpoint's tokenizer is kept), add data.allow_data_change=true"
    )


def _write_model_card(
    cfg: DictConfig,
    objects: dict[str, Any],
    export: HFExport,
    metrics: dict[str, float],
    elapsed: float,
    resumed: bool,
    untested: str | None,
) -> None:
    """Add the model card to the export, now that the test set has run on the exported weights (`untested`: why
    it did not)."""
    card = build_model_card(
        run_config=OmegaConf.to_container(cfg, resolve=True),
        model_config=objects["model"].config,
        validation=export.validation_metrics,
        test={key: value for key, value in metrics.items() if key.startswith("test/")},
        generation=export.generation_config,
        trainer=objects["trainer"],
        seconds=elapsed,
        resumed=resumed,
        license=export.license,
        repo_id=export.push_to_hub.repo_id,
        rows=objects["datamodule"].rows,
        untested=untested,
        hub_ids={"base_model": export.base_model, "dataset": export.dataset},
    )
    logger.info("model card written to %s", write_model_card(card, export.dirpath))


def _push_export(export: HFExport) -> None:
    """Push the finished export (callbacks.hf_export.push_to_hub); a failure leaves the run finished and says how
    to push it again."""
    target = export.push_to_hub
    try:
        push_folder(export.dirpath, target)
    except Exception as error:  # the hub's and the network's errors alike: the run itself is done
        retry = f"lsgtrain push {export.dirpath} {target.repo_id}{'' if target.private else ' --public'}"
        raise RuntimeError(
            f"the run finished and its export is in {export.dirpath}, but pushing it to {target.repo_id} failed: "
            f"{error}. Push it again with `{retry}`"
        ) from error


def _metrics(trainer: L.Trainer) -> dict[str, float]:
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def _write_summary(
    cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], elapsed: float, untested: str | None
) -> None:
    """Print the end-of-run summary and save it as `run_summary.json` (written last: its presence = success);
    `untested`: why the test did not run (None: it ran)."""
    output_dir = Path(cfg.paths.output_dir)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    environment = getattr(trainer.strategy, "cluster_environment", None)  # only distributed strategies have one
    summary = {
        "metrics": metrics,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "cluster_environment": type(environment).__name__ if environment else None,
        "epochs": trainer.current_epoch,
        "best_checkpoint": best,
        "seconds": round(elapsed, 1),
        "tested": untested is None,
        "test_skipped_because": untested,
    }
    lines = [f"run finished in {elapsed / 60:.1f} min, {trainer.global_step} optimizer steps -> {output_dir}"]
    headline = {key: value for key, value in metrics.items() if key.count("/") == 1}  # buckets, statistics: the file
    lines += [f"  {key:<20} {value:.4f}" for key, value in sorted(headline.items())]
    lines += _lead_baseline_lines(metrics)
    lines.append(f"  best checkpoint      {best or '-'}")
    lines += [f"  not tested:          {untested}"] if untested else []
    print("\n".join(lines))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))


def _lead_baseline_lines(metrics: dict[str, float]) -> list[str]:
    """The test ROUGE beside the lead baseline of the same documents (`test/lead_*`, logged by the ROUGE evaluation)."""
    if "test/lead_words" not in metrics:
        return []

    def shown(key: str) -> str:  # the value and its 95% bootstrap interval, when logged
        bounds = f" [{metrics[key + '_low']:.2f}, {metrics[key + '_high']:.2f}]" if key + "_low" in metrics else ""
        return f"{metrics[key]:.2f}{bounds}"

    pairs = ", ".join(f"{name} {shown(f'test/{name}')} vs {shown(f'test/lead_{name}')}" for name in ROUGE_TYPES)
    words = f"first {metrics['test/lead_words']:.0f} words of each document"
    return [f"  test ROUGE vs lead baseline ({words}; 95% bootstrap intervals): {pairs}"]


def record_trial(sweep_dir: Path, number: int, overrides: list[str], metric: float | None, error: str | None) -> None:
    """Write one sweep trial to `sweep_dir/trials/<number>.json` and rebuild `sweep_dir/trials.md` from all of them.

    One file per trial, so that concurrent jobs (SLURM) never write the same file; the summary is rewritten whole.
    """
    trials_dir = sweep_dir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    record = {"trial": number, "overrides": overrides, "metric": metric, "status": "failed" if error else "ok"}
    if error:
        record["error"] = error
    tmp = trials_dir / f".{number}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, trials_dir / f"{number}.json")
    rows = sorted((json.loads(p.read_text()) for p in trials_dir.glob("*.json")), key=lambda r: r["trial"])
    lines = ["| trial | status | metric | parameters |", "|---|---|---|---|"]
    for row in rows:
        value = "-" if row["metric"] is None else f"{row['metric']:.4f}"
        detail = " ".join(row["overrides"]) + (f" ({row['error']})" if row.get("error") else "")
        lines.append(f"| {row['trial']} | {row['status']} | {value} | {detail} |")
    summary = sweep_dir / "trials.md"
    tmp = sweep_dir / f".trials.md.{os.getpid()}.tmp"  # per process: trials of a SLURM array end at once
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, summary)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry; returns `cfg.optimized_metric` for sweepers, and records each trial of a sweep."""
    torch.set_float32_matmul_precision("high")
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        metrics, _ = train(cfg)
    except Exception as error:
        if not sweeping:
            raise
        message = str(error).strip().splitlines()[-1][:300]
        record_trial(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, list(hydra_cfg.overrides.task), None, message)
        # The submitit launcher returns a failed trial's exception to the sweeper by pickle: one that cannot be
        # unpickled would crash the whole sweep, so such errors travel as a RuntimeError with the same message.
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            raise RuntimeError(f"{type(error).__name__}: {error}") from None
        raise
    metric = metrics.get(cfg.get("optimized_metric"))
    if sweeping:
        record_trial(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, list(hydra_cfg.overrides.task), metric, None)
    return metric


# `python -m lsgtrain.train`: what `lsgtrain train` runs, and what Lightning runs again for each further DDP process.
if __name__ == "__main__":
    from lsgtrain.train import main  # the importable function, as train.py calls it: submitit pickles it by name

    main()
