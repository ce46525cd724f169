"""Validation every N optimizer steps, and which validations computed the metric the best checkpoint, early stopping
and sweeps follow."""

import logging
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from typing_extensions import override

logger = logging.getLogger(__name__)


class ValidationSchedule(Callback):
    """Validate every `every_n_steps` optimizer steps as well as at the trainer's epoch ends.

    One epoch of a large corpus (arXiv: 203k papers) lasts hours, so validating only at epoch ends leaves training
    unwatched. Lightning's `val_check_interval` counts training batches rather than optimizer steps (they differ with
    gradient accumulation), restarts its count each epoch, and, counted over epochs, drops the epoch-end
    validation. Here the decision is taken from `trainer.global_step`: a validation runs at the first batch end where
    a multiple of `every_n_steps` has been reached and not yet validated. The last validated step is saved in
    checkpoints, so a resumed run continues the same schedule, with no validation repeated or skipped; a validation
    whose step checkpoint was written just before it (the step checkpoint and the validation at the same step, then a
    crash during the validation) runs after the first optimizer step of the resumed run; one a signal stopped
    (`StopOnSignal` saves at a validation batch) runs first, from its start.

    Subclasses that compute their metric only at some validations (ROUGE) override `computes_metric`; the best
    checkpoint and early stopping (`ScheduledModelCheckpoint`, `ScheduledEarlyStopping`) act only at those.

    Args:
        every_n_steps: validate every N optimizer steps (None: only at epoch ends, every
            `trainer.check_val_every_n_epoch` epochs).
    """

    def __init__(self, every_n_steps: int | None = None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or null, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.last_validated_step = 0
        self.step_due = False  # the running validation is one of the step schedule's
        self.validating_step: int | None = None  # the step of the validation running during fit (None: none)
        self._interrupted: int | None = None  # the step of a validation a signal stopped, to run after the resume
        self._lightning_decides: Any = None
        self._start_step = 0  # the global step fit started (or resumed) at

    @property
    def computes_metric(self) -> bool:
        """Whether the running (or just finished) validation computes the monitored metric."""
        return True

    def _due_step(self, trainer: Trainer) -> int:
        """The latest multiple of `every_n_steps` reached, if it has not been validated yet, else 0."""
        due = trainer.global_step // self.every_n_steps * self.every_n_steps
        return due if due > self.last_validated_step else 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.every_n_steps is None:
            return
        # Lightning's training loop asks this (private) method after each batch; the only place it is replaced.
        loop = trainer.fit_loop.epoch_loop
        self._lightning_decides = loop._should_check_val_fx

        def should_validate(data_fetcher: Any) -> bool:
            if self._interrupted == trainer.global_step:  # resumed from a signal's save during this validation
                return True
            epoch_end = self._lightning_decides(data_fetcher)
            if trainer.global_step == self._start_step:  # no step since the start, or a resume's check of the batch
                return epoch_end  # before its checkpoint (which Lightning would skip): see the class docstring
            self.step_due = bool(self._due_step(trainer))
            return epoch_end or self.step_due

        loop._should_check_val_fx = should_validate

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_step = trainer.global_step

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._lightning_decides is not None:
            trainer.fit_loop.epoch_loop._should_check_val_fx = self._lightning_decides
            self._lightning_decides = None

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validating_step = trainer.global_step

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            if self.step_due:
                logger.info("validated at optimizer step %d (every %d steps)", trainer.global_step, self.every_n_steps)
            self.last_validated_step = max(self.last_validated_step, trainer.global_step)
        self.step_due = False
        self.validating_step = self._interrupted = None

    @override
    def state_dict(self) -> dict[str, Any]:
        # a checkpoint saved during a validation (a signal's: `StopOnSignal`) says which one, so a resume runs it
        return {"last_validated_step": self.last_validated_step, "validating_step": self.validating_step,
                "step_due": self.step_due}  # fmt: skip

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_validated_step = int(state_dict.get("last_validated_step", 0))
        self._interrupted = state_dict.get("validating_step")
        self.step_due = bool(state_dict.get("step_due", False))


def metric_computed(trainer: Trainer) -> bool:
    """Whether this validation computed the monitored metric: a `ValidationSchedule` that computes it only at some
    validations (ROUGE) says so; without one, every validation computes it."""
    return all(c.computes_metric for c in trainer.callbacks if isinstance(c, ValidationSchedule))


class ScheduledModelCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint`, saving the best checkpoint only after validations that computed its monitor.

    Between two ROUGE evaluations `trainer.callback_metrics` keeps the last ROUGE: compared again, a stale value
    would be taken for a new evaluation (and before the first one the monitor is missing). It saves at the end of
    validation, never of the training epoch (where Lightning would otherwise save when validating once an epoch).

    Args:
        **kwargs: `ModelCheckpoint`'s; `save_on_train_epoch_end` must be False or absent.
    """

    def __init__(self, **kwargs: Any):
        if kwargs.pop("save_on_train_epoch_end", False):
            raise ValueError(
                "callbacks.model_checkpoint.save_on_train_epoch_end must be false: the best checkpoint follows a "
                "metric computed by validation"
            )
        super().__init__(save_on_train_epoch_end=False, **kwargs)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if metric_computed(trainer):
            super().on_validation_end(trainer, pl_module)


class ScheduledEarlyStopping(EarlyStopping):
    """Lightning's `EarlyStopping`, counting only the validations that computed its monitor (ROUGE: every N epochs
    or steps), so `patience` counts evaluations and `strict=True` keeps meaning that a monitor never logged is an
    error.

    Args:
        **kwargs: `EarlyStopping`'s (`monitor`, `mode`, `patience`, `min_delta`, `strict`, ...);
            `check_on_train_epoch_end` is always False (the metric comes from validation).
    """

    def __init__(self, **kwargs: Any):
        if kwargs.pop("check_on_train_epoch_end", False):
            raise ValueError(
                "callbacks.early_stopping.check_on_train_epoch_end must be false: the metric comes from validation"
            )
        super().__init__(check_on_train_epoch_end=False, **kwargs)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if metric_computed(trainer):
            super().on_validation_end(trainer, pl_module)
