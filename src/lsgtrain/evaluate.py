"""Evaluation without training, of a Lightning checkpoint or of a model folder:

    python -m lsgtrain.evaluate ckpt_path=PATH [key=value ...]
    python -m lsgtrain.evaluate model.pretrained=DIR [experiment=NAME]   # an hf_model export, any LSG checkpoint

Restores the checkpoint's weights into the configured model (or takes the folder's weights as they are: a zero-shot
baseline before fine-tuning, or an export scored on another experiment's data), runs the validation and test sets
(only the validation set for data without a test split; ROUGE with generation for summarization, accuracy/F1 for
classification), and writes `metrics.json` and the predictions, both with the length evaluated at and the one trained
at (`evaluated_length`, `trained_length`), to the run folder (`outputs/eval/runs/<time>`).

What is evaluated is what was trained, unless a key says otherwise: a checkpoint's run config (`.hydra/config.yaml`
of its run folder, else the config stored in the checkpoint) gives the model, data, module and callbacks settings,
the seed, and where and how precisely it computed (`trainer.accelerator`, `devices`, `strategy`, `precision`);
an export (or any LSG folder) is read at its trained length (its tokenizer's `model_max_length`, at most its
position tables; `data.max_source_length=N` reads it at N, beyond its tables too: they are extended as `lsgtrain
convert` extends a checkpoint, with one warning), with its saved LSG settings, and decodes with its
`generation_config.json`. Which key comes from where is `lsgtrain.run.keys`' table. Keys set on the command line (or
by an `experiment=`) win over all of these; what was taken is logged.
"""

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import DictConfig, OmegaConf

from .callbacks.predictions import LabelPredictions
from .callbacks.rouge_evaluation import RougeEvaluation
from .checkpointing import (
    check_weights_fit,
    consolidated_checkpoint,
    flatten_config,
    is_sharded_checkpoint,
    load_checkpoint,
    saved_run_config,
)
from .modeling.factory import read_checkpoint_config, trained_length
from .modeling.loading import local_folder
from .run.folder import RunFolder
from .run.keys import Folder, decided_by_the_folder, evaluation_own_inside, taken_from_the_run
from .train import CONFIG_DIR, build, logged_metrics

logger = logging.getLogger(__name__)
_ABSENT = object()


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, float]:
    """Validate and test `cfg.ckpt_path`, or without one the model `model.pretrained` / `model.convert_from` loads;
    returns the metrics (also written to `metrics.json`).

    `overrides`: the keys the user set, which win over the run's and the folder's, as Hydra override strings
    (`["module.generation.num_beams=4"]`); None: Hydra's command line, or none when called without Hydra.
    """
    # the evaluation's folder (`outputs/eval/runs/<time>`) is a run folder: a refused evaluation leaves none behind
    # (called from Python, it may be a finished run's own folder: the evaluation writes no run_summary.json)
    with RunFolder(cfg.paths.output_dir, refuse_finished=False) as folder:
        return _evaluate(cfg, user_keys(overrides), folder)


def _evaluate(cfg: DictConfig, user: set[str], folder: RunFolder) -> dict[str, float]:
    ckpt_path = cfg.ckpt_path
    trained_at = None  # the length the model was trained at, when known
    if ckpt_path:
        checkpoint = load_checkpoint(ckpt_path)  # no code runs from the file (weights_only); before any data work
        run, where = _run_config(Path(ckpt_path), checkpoint)
        trained = OmegaConf.to_container(OmegaConf.create(run).model.lsg, resolve=True) if run else None
        cfg = with_run_settings(cfg, run, where, source=f"ckpt_path={ckpt_path}", user=user)
        if trained is not None:
            _warn_lsg_overrides(cfg, trained, f"ckpt_path={ckpt_path}")
        length = _get(run, "data.max_source_length") if run else None
        trained_at = length if isinstance(length, int) else None
    elif cfg.model.pretrained or cfg.model.convert_from:
        model_folder = local_folder(cfg.model.pretrained, "model.pretrained") if cfg.model.pretrained else None
        if model_folder is not None:  # a hub id is evaluated with this config's settings
            cfg = as_exported(cfg, model_folder, user)
        key = "model.pretrained" if cfg.model.pretrained else "model.convert_from"
        checkpoint = OmegaConf.select(cfg, key)
        saved = read_checkpoint_config(checkpoint, key)
        _warn_lsg_overrides(cfg, saved, f"{key}={checkpoint}")
        if model_folder is not None:
            trained_at = trained_length(model_folder, saved["max_position_embeddings"])
            _warn_beyond_trained(cfg, trained_at, saved["max_position_embeddings"], f"{key}={checkpoint}")
    else:
        raise ValueError(
            "nothing to evaluate: give ckpt_path=PATH (a Lightning checkpoint of a run), or model.pretrained=DIR (a "
            "run's hf_model folder or any LSG-Pegasus checkpoint) / model.convert_from=DIR (a Pegasus checkpoint) "
            "to score that model as it is, e.g. a zero-shot baseline before fine-tuning"
        )
    objects = build(cfg)
    trainer, module, datamodule = objects["trainer"], objects["module"], objects["datamodule"]
    lengths = {"evaluated_length": cfg.data.max_source_length, "trained_length": trained_at}
    for callback in trainer.callbacks:  # every predictions row says at what length the model was read and trained
        if isinstance(callback, (RougeEvaluation, LabelPredictions)):
            callback.lengths = lengths
    if ckpt_path:
        check_weights_fit(checkpoint, module, ckpt_path)
        del checkpoint
    folder.training()
    with tempfile.TemporaryDirectory() as scratch:
        weights = _loadable(ckpt_path, trainer, Path(scratch))
        trainer.validate(module, datamodule=datamodule, ckpt_path=weights, weights_only=True)
        metrics = logged_metrics(trainer)
        if datamodule.has_split("test"):
            trainer.test(module, datamodule=datamodule, ckpt_path=weights, weights_only=True)
            metrics.update(logged_metrics(trainer))
        else:
            logger.warning("not testing: the data has no test split (validation metrics only)")
    if trainer.is_global_zero:
        output = Path(cfg.paths.output_dir) / "metrics.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        evaluated = {"ckpt_path": ckpt_path} if ckpt_path else {"model": cfg.model.pretrained or cfg.model.convert_from}
        output.write_text(json.dumps({**evaluated, **lengths, "metrics": metrics}, indent=2))
        print("\n".join(f"  {key:<20} {value:.4f}" for key, value in sorted(metrics.items())))
        print(f"metrics and predictions written to {output.parent}")
    return metrics


def _loadable(ckpt_path: str | None, trainer: L.Trainer, scratch: Path) -> str | None:
    """The checkpoint the trainer loads: a sharded one (a trainer=fsdp run's folder) as it is under a sharded
    strategy, else gathered into one full file in `scratch` (evaluated on one device, or with DDP)."""
    if not ckpt_path or not is_sharded_checkpoint(ckpt_path) or isinstance(trainer.strategy, ModelParallelStrategy):
        return ckpt_path
    logger.info("%s is sharded: gathering its full weights (%s)", ckpt_path, type(trainer.strategy).__name__)
    return str(consolidated_checkpoint(Path(ckpt_path), scratch / "consolidated.ckpt"))


def user_keys(overrides: list[str] | None = None) -> set[str]:
    """The dotted keys the user set: in `overrides` (Hydra override strings), by default Hydra's command line
    (`HydraConfig.get().overrides.task`; none outside Hydra). A group choice (`data=arxiv_sum`) sets its group; an
    `experiment=NAME` sets the groups and keys its file sets."""
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    keys = set()
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group.replace("/", ".")
        keys |= _experiment_keys(override.value()) if key == "experiment" else {key}
    return keys


def _experiment_keys(name: str) -> set[str]:
    """What `experiment=NAME` sets: the groups its defaults list overrides and the keys it gives."""
    experiment = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "experiment" / f"{name}.yaml"))
    defaults = experiment.pop("defaults") if "defaults" in experiment else []
    groups = {next(iter(entry)).removeprefix("override /") for entry in defaults if isinstance(entry, dict)}
    return {group.replace("/", ".") for group in groups} | set(flatten_config(experiment))


def _leaves(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    return flatten_config(tree)


def _is_set(key: str, user: set[str]) -> bool:
    """Whether the user set `key`, a key above it, or one below it (`module.generation` is set by
    `module.generation.num_beams=4`)."""
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in user)


def _above_is_set(key: str, user: set[str]) -> bool:
    """Whether the user set `key` itself or a key above it (`data=arxiv_sum` chose the whole data group)."""
    return any(key == k or key.startswith(k + ".") for k in user)


def _run_config(ckpt_path: Path, checkpoint: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The config of the run that wrote `ckpt_path`: its run folder's `.hydra/config.yaml` (unresolved, so paths
    follow this evaluation), else the resolved one the checkpoint stores; and where it came from."""
    for folder in ckpt_path.resolve().parents[:3]:
        saved = folder / ".hydra" / "config.yaml"
        if saved.is_file():
            return OmegaConf.to_container(OmegaConf.load(saved), resolve=False), str(saved)
    return saved_run_config(checkpoint), "the checkpoint's stored run config"


def with_run_settings(
    cfg: DictConfig, run: dict[str, Any] | None, where: str, *, source: str, user: set[str]
) -> DictConfig:
    """`cfg` with the run's value of every key `lsgtrain.run.keys` says an evaluation takes from the run (its model,
    data, module and callbacks, seed, and the trainer's accelerator, devices, strategy and precision), wherever the
    user set nothing: a key the user set inside such a group wins over the run's, a group the user chose
    (`data=arxiv_sum`) stays the user's. The run's `callbacks` come only from an unresolved `.hydra/config.yaml`:
    resolved, they would write into the run's own folder. `user`: the keys the user set (`user_keys`)."""
    if run is None:
        logger.warning("%s holds no run config (older lsgtrain): evaluated with this config's settings", source)
        return cfg
    merged = OmegaConf.to_container(cfg, resolve=False)
    flat_run, flat_cfg = _leaves(run), _leaves(cfg)
    taken = []
    for key in taken_from_the_run():
        if key == "callbacks" and not where.endswith("config.yaml"):
            continue
        value = _get(run, key)
        if value is _ABSENT or _above_is_set(key, user):
            continue
        _put(merged, key, value)
        for name, mine in flat_cfg.items():  # the user's keys inside it win
            if (name == key or name.startswith(key + ".")) and _is_set(name, user):
                _put(merged, name, mine)
        for own in evaluation_own_inside(key):
            _put(merged, own, OmegaConf.select(cfg, own))
        taken.append(f"{key}={flat_run[key]}" if key in flat_run else key)
    given = ", ".join(sorted(user)) or "nothing"
    logger.info("%s: evaluated with its run's settings (%s) for %s; set on the command line: %s", source, where,
                ", ".join(taken), given)  # fmt: skip
    return _config_like(cfg, merged)


def as_exported(cfg: DictConfig, folder: Path, user: set[str]) -> DictConfig:
    """`cfg` evaluating a model folder as it was trained, for every key the user did not set: the run's settings
    when the folder is a run's export (`<run>/hf_model`), and what `lsgtrain.run.keys` says the folder decides: its
    saved LSG settings, its trained length, and its own `generation_config.json` (the config's decoding settings
    are dropped)."""
    run_file = folder.parent / ".hydra" / "config.yaml"
    if run_file.is_file() and folder.name == "hf_model":
        run = OmegaConf.to_container(OmegaConf.load(run_file), resolve=False)
        run["model"] = {**run["model"], "pretrained": str(folder), "convert_from": None}
        cfg = with_run_settings(cfg, run, str(run_file), source=f"model.pretrained={folder}", user=user)
    merged = OmegaConf.to_container(cfg, resolve=False)
    saved = read_checkpoint_config(str(folder), "model.pretrained")
    used = {}
    for group in decided_by_the_folder(Folder.CONFIG):
        for name in OmegaConf.select(cfg, group):
            if name in saved and not _is_set(f"{group}.{name}", user):
                _put(merged, f"{group}.{name}", saved[name])
                used[f"{group}.{name}"] = saved[name]
    for key in decided_by_the_folder(Folder.LENGTH):
        if not _is_set(key, user):
            used[key] = trained_length(folder, saved["max_position_embeddings"])
            _put(merged, key, used[key])
    decoding = {}
    for key in decided_by_the_folder(Folder.GENERATION):
        if OmegaConf.select(cfg, key) is not None:
            mine = {k: v for k, v in (OmegaConf.select(cfg, key) or {}).items() if _is_set(f"{key}.{k}", user)}
            _put(merged, key, mine)
            decoding.update(mine)
    generation_file = folder / "generation_config.json"
    if generation_file.is_file() and "generation" in cfg.module:
        settings = {k: v for k, v in json.loads(generation_file.read_text()).items() if not k.startswith("_")}
        settings.pop("transformers_version", None)
        logger.info("model.pretrained=%s decodes with its generation_config.json %s%s", folder, settings,
                    f", overridden by {decoding}" if decoding else "")  # fmt: skip
    logger.info("model.pretrained=%s evaluated as saved: %s (keys set on the command line win)", folder,
                ", ".join(f"{key}={value}" for key, value in used.items()))  # fmt: skip
    return _config_like(cfg, merged)


def _warn_beyond_trained(cfg: DictConfig, trained: int, positions: int, source: str) -> None:
    """One warning when a model folder is read beyond the length it was trained at (`data.max_source_length` set
    above it): LSG's extrapolation (a model card's "no fine-tuning" row), a legitimate measurement if it is said."""
    length = cfg.data.max_source_length
    if length <= trained:
        return
    logger.warning(
        "%s was trained at %d tokens and is evaluated at data.max_source_length=%d: beyond its trained length%s; "
        "metrics.json records both", source, trained, length,
        f" (its position tables are extended from {positions} as `lsgtrain convert --max-sequence-length` extends "
        "them)" if length > positions else "",
    )  # fmt: skip


def _get(tree: dict[str, Any], key: str) -> Any:
    """The value at dotted `key` of a plain config tree, as written (interpolations unresolved); `_ABSENT` if none."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _put(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _config_like(cfg: DictConfig, tree: dict[str, Any]) -> DictConfig:
    """A DictConfig of `tree`, open like `cfg` (keys may be added: the run's groups have others)."""
    merged = OmegaConf.create(tree)
    OmegaConf.set_struct(merged, OmegaConf.is_struct(cfg))
    return merged


def _warn_lsg_overrides(cfg: DictConfig, trained: dict[str, Any], source: str) -> None:
    """Name the `model.lsg` settings that differ from those the model was trained with (a checkpoint's run config,
    a folder's saved config): a model evaluated with another attention pattern scores lower without any error.
    A warning, not a refusal: scoring a model at another block size or number of global tokens is a legitimate
    experiment (the weights fit any of them), as long as it is said."""
    lsg = cfg.model.lsg
    differ = {name: (value, trained[name]) for name, value in lsg.items() if name in trained and trained[name] != value}
    if differ:
        logger.warning(
            "%s is evaluated with model.lsg settings other than those it was trained with: %s; pass %s to evaluate "
            "it as trained", source, ", ".join(f"{name}={new} (trained: {old})" for name, (new, old) in differ.items()),
            " ".join(f"model.lsg.{name}={old}" for name, (_, old) in differ.items()),
        )  # fmt: skip


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
