"""Stop at an optimizer-step boundary with `last.ckpt` saved when a signal asks the run to end: SLURM's warning
before a time limit or preemption (checkpoint, requeue), and SIGTERM / SIGINT (`kill`, `docker stop`, a scheduler
without warning signals, Ctrl-C: checkpoint, exit 143 / 130)."""

import logging
import os
import signal
import subprocess
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..checkpointing import last_checkpoint_path

logger = logging.getLogger(__name__)


class CheckpointOnSignal(Callback):
    """On one of `signal_names`: finish the optimizer step, save `last.ckpt`, then `_after_save` ends the run.

    Lightning's own handlers save from inside the signal handler (SLURM auto-requeue), which can land between an
    optimizer step and the end of its batch, so a resumed run may repeat that step. Here the handler only raises a
    flag; the checkpoint is written at the next optimizer-step boundary (or validation batch), once every DDP rank
    has seen the flag, into the `ModelCheckpoint` folder as `last.ckpt`, where `ckpt_path=last` (the default) finds
    it when the same command runs again. The save goes through the run's `AtomicCheckpointIO`: complete or absent.
    """

    def __init__(self, signal_names: list[str]):
        self.signums = [signal.Signals[name] for name in signal_names]
        self.received: signal.Signals | None = None
        self._previous_handlers: dict[signal.Signals, Any] = {}
        self._last_step = -1

    @property
    def active(self) -> bool:
        return True

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.active:
            self._previous_handlers = {signum: signal.signal(signum, self._on_signal) for signum in self.signums}

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # again, over Lightning's signal connector: its SIGTERM handler ends the run with exit code 0 and no save
        for signum in self._previous_handlers:
            signal.signal(signum, self._on_signal)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.warning("received %s: saving last.ckpt at the end of this optimizer step, then stopping",
                       signal.Signals(signum).name)  # fmt: skip
        self.received = self.received or signal.Signals(signum)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.active or trainer.global_step == self._last_step:  # gradients still accumulating
            return
        self._last_step = trainer.global_step
        self._stop_if_signalled(trainer)

    @override
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # ROUGE generation can take minutes: a signal then does not wait for the next training step
        if self.active and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._stop_if_signalled(trainer)

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.received is not None and trainer.validating:
            _as_inside_a_validation_step(checkpoint)

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        # every rank takes part in the decision, so all of them stop at the same step
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        for experiment_logger in trainer.loggers:
            experiment_logger.save()
        logger.warning("saved %s at step %d", path, trainer.global_step)
        self._after_save(trainer)

    def _after_save(self, trainer: L.Trainer) -> None:
        raise NotImplementedError


def _as_inside_a_validation_step(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint saved at a validation batch's end resume that validation.

    Lightning runs an interrupted validation again after a resume ("restarted mid evaluation") only when its
    checkpoint was saved inside a validation step (a batch started, not processed); one saved at a batch's end
    reads as a finished validation, which the resumed run skipped: no best checkpoint, an export without validation
    metrics. Counting it as inside its first step (the batches done forgotten: Lightning would skip them) makes the
    resumed run validate first (`ValidationSchedule` asks for it), over the whole split, before any further
    training step: the training state is the one the validation started from."""
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
    done = progress["current"]["completed"]  # the batches of this validation finished before the signal
    for counts in (progress["total"], progress["current"]):
        counts["completed"] = counts["processed"] = counts["completed"] - done
        counts["ready"] = counts["started"] = counts["completed"] + 1


class StopOnSignal(CheckpointOnSignal):
    """SIGTERM / SIGINT: save `last.ckpt` at the step boundary and exit with 128 + the signal's number (143 / 130),
    as a process the signal had ended would, so that a wrapper script or scheduler sees a run that did not finish;
    no `run_summary.json`, no export. Running the same command again resumes from that step."""

    def __init__(self, signal_names: list[str] | None = None):
        super().__init__(signal_names or ["SIGTERM", "SIGINT"])

    @override
    def _after_save(self, trainer: L.Trainer) -> None:
        received = self.received or signal.SIGTERM  # another rank's signal
        logger.warning("stopped by %s: rerun the same command to resume from this step", received.name)
        raise SystemExit(128 + received)


class RequeueOnPreemption(CheckpointOnSignal):
    """On `signal_name` inside a SLURM job: save `last.ckpt` at the step boundary, requeue the job, exit 0.

    The requeued job runs the same command and `ckpt_path=last` (the default) resumes from it, in the same run
    directory. Submit with `--signal=USR2@<seconds>` (the submitit launcher's default) and `--requeue`.
    """

    def __init__(self, signal_name: str = "SIGUSR2"):
        super().__init__([signal_name])

    @property
    @override
    def active(self) -> bool:
        return "SLURM_JOB_ID" in os.environ

    @override
    def _after_save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
            logger.info("requeueing SLURM job %s", job)
            subprocess.run(["scontrol", "requeue", job], check=True)
        raise SystemExit(0)  # the job is requeued: this run ends here, without a result
