"""Early stopping that counts only the evaluations where its metric is computed (ROUGE: every N epochs)."""

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping
from typing_extensions import override


class EarlyStoppingEveryNEpochs(EarlyStopping):
    """Lightning's `EarlyStopping`, checked after validation only on the epochs its metric is computed.

    `RougeEvaluation` logs `val/rougeLsum` every `every_n_epochs` epochs, and Lightning keeps the last logged value
    in `trainer.callback_metrics` on the epochs between: the stock callback would count those stale values as
    evaluations without improvement and stop after `patience` epochs rather than `patience` evaluations (or, with
    `strict`, crash on the first epoch, before any ROUGE exists). Checking on the same epochs as the metric (and as
    the best-checkpoint `ModelCheckpoint`) keeps `strict=True` meaningful: a monitor that is never logged is an error.

    Args:
        every_n_epochs: check on epochs `N, 2N, ...` (1-based), as `callbacks.rouge.every_n_epochs`.
        **kwargs: `EarlyStopping`'s (`monitor`, `mode`, `patience`, `min_delta`, `strict`, ...);
            `check_on_train_epoch_end` is always False (the metric comes from validation).
    """

    def __init__(self, *, every_n_epochs: int = 1, **kwargs: Any):
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.early_stopping.every_n_epochs must be >= 1, got {every_n_epochs}")
        if kwargs.pop("check_on_train_epoch_end", False):
            raise ValueError(
                "callbacks.early_stopping.check_on_train_epoch_end must be false: the metric comes from validation"
            )
        super().__init__(check_on_train_epoch_end=False, **kwargs)
        self.every_n_epochs = every_n_epochs

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return  # the metric was not computed this epoch: what callback_metrics holds is an earlier epoch's
        super().on_validation_end(trainer, pl_module)
