"""`last.ckpt` holds the newest state: at every epoch's end, every N steps, and never beside an older copy."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel

from lsgtrain.callbacks import LastCheckpoint


def _trainer(callbacks: list[Callback], **limits) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=callbacks, **limits,
    )  # fmt: skip


def _step(path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_last_checkpoint_is_written_at_every_epoch_end_when_steps_are_rarer(tmp_path):
    seen = []

    class ReadLastAtEpochStart(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            last = tmp_path / "last.ckpt"
            seen.append(_step(last) if last.exists() else None)

    trainer = _trainer([ReadLastAtEpochStart(), LastCheckpoint(tmp_path, every_n_train_steps=100)],
                       max_epochs=3, limit_train_batches=2)  # fmt: skip
    trainer.fit(BoringModel())
    assert seen == [None, 2, 4]  # each epoch starts from the previous one's end, saved
    assert _step(tmp_path / "last.ckpt") == 6


def test_last_checkpoint_is_written_every_n_steps_within_an_epoch(tmp_path):
    steps = []

    class ReadLastAfterEachBatch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            last = tmp_path / "last.ckpt"
            steps.append(_step(last) if last.exists() else None)

    trainer = _trainer([ReadLastAfterEachBatch(), LastCheckpoint(tmp_path, every_n_train_steps=2)],
                       max_epochs=1, limit_train_batches=5)  # fmt: skip
    trainer.fit(BoringModel())
    assert steps == [None, None, 2, 2, 4]  # read before batches 0-4: saved after steps 2 and 4
    assert _step(tmp_path / "last.ckpt") == 5  # the epoch's end


def test_a_last_checkpoint_saved_by_a_signal_is_replaced_on_resume_not_versioned(tmp_path):
    """StopOnSignal saves `last.ckpt` with `trainer.save_checkpoint`; the resumed run's next save overwrites it."""
    first = _trainer([LastCheckpoint(tmp_path, every_n_train_steps=100)], max_steps=2)
    first.fit(BoringModel())
    first.save_checkpoint(tmp_path / "last.ckpt")  # what a signal leaves
    resumed = _trainer([LastCheckpoint(tmp_path, every_n_train_steps=1)], max_steps=4)
    resumed.fit(BoringModel(), ckpt_path=tmp_path / "last.ckpt", weights_only=False)
    assert sorted(path.name for path in tmp_path.glob("*.ckpt")) == ["last.ckpt"]
    assert _step(tmp_path / "last.ckpt") == 4


def test_a_step_interval_below_one_is_refused_with_the_key():
    with pytest.raises(ValueError, match=r"callbacks\.step_checkpoint\.every_n_train_steps=0"):
        LastCheckpoint("/tmp/unused", every_n_train_steps=0)
