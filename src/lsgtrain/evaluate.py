"""Evaluation without training: `python -m lsgtrain.evaluate ckpt_path=PATH [experiment=NAME] [key=value ...]`.

Restores the checkpoint's weights into the configured model, runs the validation and test sets (only the validation
set for data without a test split; ROUGE with generation for summarization, accuracy/F1 for classification), and
writes `metrics.json` and the predictions to the run folder (`outputs/eval/runs/<time>`).
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .checkpointing import check_weights_fit, load_checkpoint
from .train import CONFIG_DIR, _metrics, build

logger = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Validate and test `cfg.ckpt_path`; returns the metrics (also written to `metrics.json`)."""
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path is required: python -m lsgtrain.evaluate ckpt_path=/path/to/checkpoint.ckpt")
    checkpoint = load_checkpoint(cfg.ckpt_path)  # no code runs from the file (weights_only); before any data work
    objects = build(cfg)
    trainer, module, datamodule = objects["trainer"], objects["module"], objects["datamodule"]
    check_weights_fit(checkpoint, module, cfg.ckpt_path)
    del checkpoint
    trainer.validate(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    metrics = _metrics(trainer)
    if datamodule.has_split("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics.update(_metrics(trainer))
    else:
        logger.warning("not testing: the data has no test split (validation metrics only)")
    if trainer.is_global_zero:
        output = Path(cfg.paths.output_dir) / "metrics.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"ckpt_path": cfg.ckpt_path, "metrics": metrics}, indent=2))
        print("\n".join(f"  {key:<20} {value:.4f}" for key, value in sorted(metrics.items())))
        print(f"metrics and predictions written to {output.parent}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
