"""Exports the best checkpoint as a Hugging Face folder (weights, tokenizer, modeling code) at the end of fit."""

import logging
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from ..checkpointing import load_checkpoint
from ..modeling.convert import save_atomically
from .divergence import TrainingDiverged

logger = logging.getLogger(__name__)


class HFExport(Callback):
    """After `fit`, write the best model (by the checkpoint callback's monitor; the last one if none) to `dirpath`.

    The folder loads with `AutoModelForSeq2SeqLM` / `AutoModelForSequenceClassification.from_pretrained(dirpath,
    trust_remote_code=True)`. It is written to a temporary folder and renamed, so it only exists when complete.
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.interrupted:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            pl_module.load_state_dict(load_checkpoint(best, key="best checkpoint")["state_dict"])
        broken = [name for name, value in pl_module.model.state_dict().items() if not torch.isfinite(value).all()]
        if broken:
            raise TrainingDiverged(
                f"the {'best' if best else 'last'} model has non-finite weights ({len(broken)} tensors, e.g. "
                f"{broken[0]}): not exported to {self.dirpath}. Lower module.optimizer.lr and start a new run."
            )
        if trainer.is_global_zero:
            save_atomically(pl_module.model, trainer.datamodule.tokenizer, self.dirpath)
            logger.info("exported %s model to %s", "best" if best else "last", self.dirpath)
        trainer.strategy.barrier()
