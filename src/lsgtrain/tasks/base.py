"""What the summarization and classification LightningModules share: the HF model, optimizer, schedule."""

from collections.abc import Callable
from typing import Any

import torch
from lightning import LightningModule
from transformers import PreTrainedModel, get_linear_schedule_with_warmup


def linear_warmup_decay(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float = 0.1):
    """Linear warm-up over `warmup_ratio` of the steps, then linear decay to 0 (the LSG paper's schedule)."""
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"module.scheduler.warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)


class LongDocumentModule(LightningModule):
    """Wraps a transformers model; subclasses define `_shared_step(batch, stage)`.

    Args:
        model: the built LSG-Pegasus model.
        optimizer: partial optimizer (`_partial_: true` in YAML), bound to the parameters here.
        scheduler: partial `(optimizer, total_steps=...)` -> LR scheduler, stepped every optimizer step.
        weight_decay: applied to every weight except biases and LayerNorms.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        weight_decay: float = 0.01,
    ):
        super().__init__()
        # the optimizer and scheduler factories are code, not data: kept out of the checkpoint's hyper-parameters,
        # so that checkpoints hold only tensors and plain values and load with `weights_only=True`
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch without bookkeeping keys (`idx`)."""
        return {key: value for key, value in batch.items() if key != "idx"}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def _log_loss(self, loss: torch.Tensor, stage: str, batch_size: int) -> None:
        training = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=training, on_epoch=not training, prog_bar=True,
            sync_dist=not training, batch_size=batch_size,
        )  # fmt: skip

    def configure_optimizers(self) -> dict:
        no_decay = [p for n, p in self.model.named_parameters() if p.requires_grad and (p.ndim < 2 or "norm" in n)]
        ids = {id(p) for p in no_decay}
        decay = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        optimizer = self.optimizer_factory(
            params=[
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
        )
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
