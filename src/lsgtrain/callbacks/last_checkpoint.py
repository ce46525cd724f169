"""`last.ckpt`: the newest state of a run, where `ckpt_path=last` (the default) resumes from."""

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override


class LastCheckpoint(ModelCheckpoint):
    """The one writer of `checkpoints/last.ckpt`: every `every_n_train_steps` optimizer steps and at the end of every
    training epoch, always into the same file.

    Lightning's `ModelCheckpoint` alone does neither: once `every_n_train_steps` is set it no longer saves at epoch
    ends (the two triggers exclude each other), and it writes next to a `last.ckpt` it did not write itself (the
    one a signal saved, before a resume) as `last-v1.ckpt`, `last-v2.ckpt`, ..., so `ckpt_path=last` went back to the
    old one. A crash loses at most N steps or the current epoch, whichever is less.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int):
        if every_n_train_steps < 1:
            raise ValueError(
                f"callbacks.step_checkpoint.every_n_train_steps={every_n_train_steps}: give a whole number of "
                "optimizer steps, at least 1 (a crash loses fewer steps than this)"
            )
        super().__init__(
            dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True,
            save_on_train_epoch_end=True, enable_version_counter=False,
        )  # fmt: skip

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when this step is saved already
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
