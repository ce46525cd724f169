"""Checkpoint files that are either complete or absent, and where a resumed run finds the last one."""

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that saves to `.name.tmp` and `os.replace`s it, so a crash or kill during a save never
    leaves a truncated `.ckpt` that a resume could pick up. Remote paths fall back to the plain save."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """`last.ckpt` in the first `ModelCheckpoint`'s folder (`<run dir>/checkpoints` when none is configured)."""
    callback = trainer.checkpoint_callback
    folder = Path(callback.dirpath) if isinstance(callback, ModelCheckpoint) and callback.dirpath else None
    folder = folder or Path(trainer.default_root_dir) / "checkpoints"
    return folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


def resolve_resume_checkpoint(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """`last` -> this run directory's `last.ckpt` if there is one (a rerun, a requeued job), else a fresh start."""
    if ckpt_path != "last":
        return ckpt_path
    last = last_checkpoint_path(trainer)
    return str(last) if last.is_file() else None
