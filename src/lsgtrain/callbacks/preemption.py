"""Checkpoint and requeue a SLURM job when SLURM warns that it is about to stop it (time limit or preemption)."""

import logging
import os
import signal
import subprocess
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..checkpointing import last_checkpoint_path

logger = logging.getLogger(__name__)


class RequeueOnPreemption(Callback):
    """On `signal_name` inside a SLURM job: finish the optimizer step, save `last.ckpt`, requeue the job, exit.

    Lightning's own auto-requeue saves from inside the signal handler, which can land between an optimizer step
    and the end of its batch, so a resumed run may repeat that step. Here the handler only raises a flag; the
    checkpoint is written at the next optimizer-step boundary, once every DDP rank has seen the flag, into the
    `ModelCheckpoint` folder as `last.ckpt`: the requeued job runs the same command and `ckpt_path=last` (the
    default) resumes from it, in the same run directory. Submit with `--signal=USR2@<seconds>` (the submitit
    launcher's default) and `--requeue`.
    """

    def __init__(self, signal_name: str = "SIGUSR2"):
        self.signum = signal.Signals[signal_name]
        self._signalled = False
        self._previous_handler: Any = None
        self._last_step = -1

    @property
    def active(self) -> bool:
        return "SLURM_JOB_ID" in os.environ

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.active:
            self._previous_handler = signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.info("received %s: checkpointing and requeueing at the end of this optimizer step",
                    signal.Signals(signum).name)  # fmt: skip
        self._signalled = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.active or trainer.global_step == self._last_step:  # gradients still accumulating
            return
        self._last_step = trainer.global_step
        # every rank takes part in the decision, so all of them stop at the same step
        if not trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        for experiment_logger in trainer.loggers:
            experiment_logger.save()
        if trainer.is_global_zero:
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
            logger.info("saved %s at step %d; requeueing SLURM job %s", path, trainer.global_step, job)
            subprocess.run(["scontrol", "requeue", job], check=True)
        raise SystemExit(0)  # the job is requeued: this run ends here, without a result
