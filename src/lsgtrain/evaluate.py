"""Evaluation without training, of a Lightning checkpoint or of a model folder:

    python -m lsgtrain.evaluate ckpt_path=PATH [experiment=NAME] [key=value ...]
    python -m lsgtrain.evaluate model.pretrained=DIR [experiment=NAME]   # an hf_model export, any LSG checkpoint

Restores the checkpoint's weights into the configured model (or takes the folder's weights as they are: a zero-shot
baseline before fine-tuning, or an export scored on another experiment's data), runs the validation and test sets
(only the validation set for data without a test split; ROUGE with generation for summarization, accuracy/F1 for
classification), and writes `metrics.json` and the predictions to the run folder (`outputs/eval/runs/<time>`).
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .checkpointing import check_weights_fit, load_checkpoint
from .modeling.factory import read_checkpoint_config
from .train import CONFIG_DIR, _metrics, build

logger = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Validate and test `cfg.ckpt_path`, or without one the model `model.pretrained` / `model.convert_from` loads;
    returns the metrics (also written to `metrics.json`)."""
    ckpt_path = cfg.ckpt_path
    if ckpt_path:
        checkpoint = load_checkpoint(ckpt_path)  # no code runs from the file (weights_only); before any data work
    elif cfg.model.pretrained or cfg.model.convert_from:
        _warn_lsg_overrides(cfg)
    else:
        raise ValueError(
            "nothing to evaluate: give ckpt_path=PATH (a Lightning checkpoint of a run), or model.pretrained=DIR (a "
            "run's hf_model folder or any LSG-Pegasus checkpoint) / model.convert_from=DIR (a Pegasus checkpoint) "
            "to score that model as it is, e.g. a zero-shot baseline before fine-tuning"
        )
    objects = build(cfg)
    trainer, module, datamodule = objects["trainer"], objects["module"], objects["datamodule"]
    if ckpt_path:
        check_weights_fit(checkpoint, module, ckpt_path)
        del checkpoint
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = _metrics(trainer)
    if datamodule.has_split("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics.update(_metrics(trainer))
    else:
        logger.warning("not testing: the data has no test split (validation metrics only)")
    if trainer.is_global_zero:
        output = Path(cfg.paths.output_dir) / "metrics.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        evaluated = {"ckpt_path": ckpt_path} if ckpt_path else {"model": cfg.model.pretrained or cfg.model.convert_from}
        output.write_text(json.dumps({**evaluated, "metrics": metrics}, indent=2))
        print("\n".join(f"  {key:<20} {value:.4f}" for key, value in sorted(metrics.items())))
        print(f"metrics and predictions written to {output.parent}")
    return metrics


def _warn_lsg_overrides(cfg: DictConfig) -> None:
    """`model.lsg` keys override a checkpoint's own: say which differ, since a model evaluated with another
    attention pattern than it was trained with scores lower without any error."""
    checkpoint, key = (
        (cfg.model.pretrained, "model.pretrained")
        if cfg.model.pretrained
        else (cfg.model.convert_from, "model.convert_from")
    )
    saved = read_checkpoint_config(checkpoint, key)
    differ = {
        name: (value, saved[name]) for name, value in cfg.model.lsg.items() if name in saved and saved[name] != value
    }
    if differ:
        logger.warning(
            "%s=%s is evaluated with model.lsg settings other than its own: %s; pass %s to evaluate it as saved",
            key, checkpoint, ", ".join(f"{name}={new} (saved: {old})" for name, (new, old) in differ.items()),
            " ".join(f"model.lsg.{name}={old}" for name, (_, old) in differ.items()),
        )  # fmt: skip


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
