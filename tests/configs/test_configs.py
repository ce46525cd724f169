"""Every config composes and resolves, every group instantiates the named class holding the configured settings; typos
get Hydra's error; SLURM launchers and the DDP trainer take the cluster's keys."""

import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary
from omegaconf import OmegaConf

from lsgtrain.callbacks import (
    EvaluationFigures,
    HFExport,
    LabelPredictions,
    LastCheckpoint,
    RandomStateCheckpoint,
    RequeueOnPreemption,
    RougeEvaluation,
    ScheduledModelCheckpoint,
    StopOnNonFinite,
    StopOnSignal,
    TrainingTelemetry,
    ValidationSchedule,
)
from lsgtrain.train import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


GROUP_OPTIONS = {
    group: sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    for group in ("model", "data", "module", "trainer", "logger", "callbacks", "debug")
}


# name -> the class a callbacks config builds and the attributes holding its settings (`_x` holds key `x`)
CALLBACKS = {
    "model_checkpoint": (ScheduledModelCheckpoint, ("monitor", "mode", "save_top_k", "save_last", "dirpath")),
    "step_checkpoint": (LastCheckpoint, ("dirpath", "_every_n_train_steps")),
    "requeue": (RequeueOnPreemption, ()),
    "stop_on_signal": (StopOnSignal, ()),
    "random_state": (RandomStateCheckpoint, ()),
    "divergence": (StopOnNonFinite, ()),
    "hf_export": (HFExport, ("dirpath", "license", "base_model", "dataset")),
    "rouge": (RougeEvaluation, ("every_n_epochs", "every_n_steps", "max_samples", "seed", "predictions_dir")),
    "predictions": (LabelPredictions, ("predictions_dir",)),
    "figures": (EvaluationFigures, ("figures_dir",)),
    "validation": (ValidationSchedule, ("every_n_steps",)),
    "lr_monitor": (LearningRateMonitor, ("logging_interval",)),
    "model_summary": (ModelSummary, ("_max_depth",)),
    "telemetry": (TrainingTelemetry, ()),
}


def test_the_required_experiments_exist():
    assert {"aclsum_sum", "arxiv_sum", "pubmed_sum", "aclsum_venue_cls", "arxiv_cls", "eurlex_cls"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", fast=False)
    OmegaConf.resolve(cfg)
    assert cfg.model.lsg.block_size > 0 and cfg.data._target_ and cfg.trainer._target_


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, options in GROUP_OPTIONS.items() for o in options])
def test_every_group_option_composes(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    OmegaConf.resolve(cfg)


def test_a_typo_gets_hydras_error(make_cfg):
    with pytest.raises(ConfigCompositionException, match="experiment"):
        make_cfg("experiment=arxiv_summ")
    with pytest.raises(ConfigCompositionException):
        make_cfg("model.lsg.blok_size=3")


@pytest.mark.parametrize("launcher", ["slurm", "slurm_cpu"])
def test_slurm_launcher_configs_expose_the_cluster_keys(launcher):
    overrides = [f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=4",
                 "hydra.launcher.account=proj", "hydra.launcher.qos=high", "hydra.launcher.mem_gb=200",
                 "hydra.launcher.timeout_min=90", "hydra.launcher.cpus_per_task=6"]  # fmt: skip
    if launcher == "slurm":
        overrides.append("hydra.launcher.gpus_per_node=4")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    assert (launcher_cfg.partition, launcher_cfg.nodes, launcher_cfg.account, launcher_cfg.qos) == (
        "gpu",
        4,
        "proj",
        "high",
    )
    assert (launcher_cfg.mem_gb, launcher_cfg.timeout_min, launcher_cfg.cpus_per_task) == (200, 90, 6)
    # one task per GPU, so that Lightning's SLURM environment finds one process per device
    assert launcher_cfg.tasks_per_node == (4 if launcher == "slurm" else 1)
    assert launcher_cfg.additional_parameters.requeue is True and launcher_cfg.signal_delay_s > 60


def test_ddp_trainer_takes_the_node_count_from_slurm(make_cfg, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    assert make_cfg("trainer=ddp_bf16").trainer.num_nodes == 3
    monkeypatch.delenv("SLURM_JOB_NUM_NODES")
    assert make_cfg("trainer=ddp").trainer.num_nodes == 1


@pytest.mark.parametrize("trainer", GROUP_OPTIONS["trainer"])
def test_trainer_configs_instantiate(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=1", "++trainer.strategy=auto")
    assert instantiate(cfg.trainer, logger=False).max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb", "default"])
def test_logger_configs_instantiate(make_cfg, logger, monkeypatch, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    from lsgtrain.loggers import AppendingCSVLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg(f"logger={logger}")
    loggers = {name: instantiate(conf) for name, conf in cfg.logger.items()}
    assert set(loggers) == {"default": {"csv", "wandb"}}.get(logger, {logger})
    run = tmp_path / "run"
    if "csv" in loggers:  # one metrics.csv per run folder
        assert type(loggers["csv"]) is AppendingCSVLogger and Path(loggers["csv"].log_dir) == run / "csv" / "version_0"
    if "tensorboard" in loggers:
        assert type(loggers["tensorboard"]) is TensorBoardLogger
        assert Path(loggers["tensorboard"].log_dir) == run / "tensorboard" / "version_0"
    if "wandb" in loggers:
        wandb = loggers["wandb"]
        assert type(wandb) is WandbLogger and wandb._offline and Path(wandb.save_dir) == run
        assert (wandb.name, wandb._wandb_init["name"], wandb._log_model) == ("lsgtrain", cfg.task_name, False)


@pytest.mark.parametrize("callbacks", GROUP_OPTIONS["callbacks"])
def test_callback_configs_instantiate(make_cfg, callbacks):
    cfg = make_cfg(f"callbacks={callbacks}")
    OmegaConf.resolve(cfg)
    assert set(cfg.callbacks) <= set(CALLBACKS), "a new callback: add its class and settings to CALLBACKS"
    built = {name: instantiate(conf) for name, conf in cfg.callbacks.items()}
    for name, callback in built.items():
        kind, attributes = CALLBACKS[name]
        assert type(callback) is kind, name
        for attribute in attributes:
            value, expected = getattr(callback, attribute), cfg.callbacks[name][attribute.lstrip("_")]
            if attribute.endswith("dir") or attribute.endswith("dirpath"):
                value, expected = Path(value), Path(expected)
            assert value == expected, f"callbacks.{name}.{attribute.lstrip('_')}: {value!r} != {expected!r}"
    if callbacks in ("summarization", "classification"):  # the best checkpoint follows the task's metric
        monitor = {"summarization": "val/rougeLsum", "classification": "val/f1_macro"}[callbacks]
        assert (built["model_checkpoint"].monitor, built["model_checkpoint"].mode) == (monitor, "max")
        assert Path(built["model_checkpoint"].dirpath) == Path(cfg.paths.output_dir) / "checkpoints"
    if "stop_on_signal" in built:
        assert built["stop_on_signal"].signums == [signal.SIGTERM, signal.SIGINT]
        assert built["requeue"].signums == [signal.SIGUSR2]


def test_module_and_data_configs_instantiate(make_cfg):
    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    cfg = make_cfg()
    model = LSGPegasusForConditionalGeneration(LSGPegasusConfig(vocab_size=50, d_model=16, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16, block_size=8, sparse_block_size=8))  # fmt: skip
    for module in GROUP_OPTIONS["module"]:
        assert instantiate(make_cfg(f"module={module}").module, model=model).model is model
    for data in GROUP_OPTIONS["data"]:
        assert instantiate(make_cfg(f"data={data}").data).block_size == cfg.model.lsg.block_size


def test_gpu_trainers_train_in_bf16_unless_fp32_is_named(make_cfg):
    """`trainer=ddp` is bf16-mixed like `trainer=gpu`; full fp32 is asked for by name (`ddp_fp32`)."""
    precisions = {
        name: make_cfg(f"trainer={name}").trainer.precision for name in ("gpu", "ddp", "ddp_bf16", "ddp_fp32")
    }
    assert precisions == {"gpu": "bf16-mixed", "ddp": "bf16-mixed", "ddp_bf16": "bf16-mixed", "ddp_fp32": "32-true"}
