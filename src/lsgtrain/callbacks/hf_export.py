"""Exports the best checkpoint as a Hugging Face folder (weights, tokenizer, modeling code) at the end of fit."""

import logging
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from ..modeling.convert import save_atomically

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
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            pl_module.load_state_dict(state)
        if trainer.is_global_zero:
            save_atomically(pl_module.model, trainer.datamodule.tokenizer, self.dirpath)
            logger.info("exported %s model to %s", "best" if best else "last", self.dirpath)
        trainer.strategy.barrier()
