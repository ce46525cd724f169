"""Experiment loggers whose defaults fit both a cluster with wandb credentials and an offline machine."""

import csv
import hashlib
import netrc
import os
import sys
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from typing_extensions import override


def wandb_available_online() -> bool:
    """True when wandb can log online: an API key in the environment or a `wandb login` in ~/.netrc."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def make_wandb_logger(
    *, save_dir: str, offline: bool | None = None, run_id: str | None = None, **kwargs
) -> WandbLogger:
    """`WandbLogger`, offline unless credentials are found (or `offline` says otherwise).

    The run id is derived from the run folder unless given, so a resumed or requeued run (same folder) continues
    the same wandb run instead of starting a new one.
    """
    if offline is None:
        offline = not wandb_available_online()
    run_id = run_id or hashlib.sha256(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]
    return WandbLogger(save_dir=save_dir, offline=offline, id=run_id, resume="allow", **kwargs)


def finish_wandb_run() -> None:
    """End the process's wandb run once a `train` / `evaluate` call is over, finished or refused. wandb keeps one run
    per process and Lightning's `WandbLogger` reuses it, so without this the next call in the same process (a sweep's
    next trial, an evaluation after training) would log into the previous run's folder."""
    wandb = sys.modules.get("wandb")  # never imported: no run to end
    if wandb is not None and wandb.run is not None:
        wandb.finish()


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` that continues an existing `metrics.csv` (a resumed or requeued run) instead of deleting it."""

    @property
    @override
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing `metrics.csv` when it starts; this one reads its header and appends."""

    @override
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])
