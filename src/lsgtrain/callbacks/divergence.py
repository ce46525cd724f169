"""Stop a run whose loss or gradients stop being finite, instead of training, checkpointing and exporting NaN."""

import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradients of a training step, or the validation loss, are NaN or infinite."""


class StopOnNonFinite(Callback):
    """Raises `TrainingDiverged` at the first optimizer step whose loss or gradient norm is NaN or infinite.

    The check runs before gradient clipping and before the optimizer step, so the bad step is never applied; the
    run ends with the error (no `run_summary.json`, no `hf_model/`), and `last.ckpt` keeps the last finite step.
    Every DDP rank takes part in the decision, so all of them stop together. A non-finite validation loss stops
    the run too, before `ModelCheckpoint` could rank that model. With fp16 loss scaling, gradients that overflow
    are the scaler's business (it skips the step), so only the loss is checked there.
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        losses, self._losses = self._losses, []
        loss = torch.stack(losses).float().mean() if losses else torch.tensor(0.0)
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads).float().to(loss.device) if grads else torch.zeros_like(loss)
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            norm = torch.zeros_like(norm)
        finite = bool(torch.isfinite(loss) & torch.isfinite(norm))
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        lr = optimizer.param_groups[0]["lr"]
        raise TrainingDiverged(
            f"training diverged at optimizer step {trainer.global_step + 1} (epoch {trainer.current_epoch}): "
            f"loss {loss.item():.4g}, gradient norm {norm.item():.4g} (on this rank; a non-finite value on any rank "
            f"stops every rank). The step was not applied; the run stops without a model export or "
            f"run_summary.json, and checkpoints/last.ckpt keeps the last saved finite step. Lower the learning rate "
            f"(module.optimizer.lr, {lr:.3g} at this step) or check the data, then start a new run (or resume)."
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # `validate`/`test` only report what they see
            return
        value = trainer.callback_metrics.get("val/loss")
        if value is not None and not math.isfinite(float(value)):
            raise TrainingDiverged(
                f"validation loss is {float(value)} after {trainer.global_step} optimizer steps (epoch "
                f"{trainer.current_epoch}): the model diverged; the run stops before this model can be "
                "checkpointed as best or exported. Lower module.optimizer.lr and start a new run."
            )
