"""A run folder's life: locked while the run goes on, a finished run never re-entered, a new run refused before
training leaves no folder behind, and at the end the summary (`run_summary.json`, printed too) whose presence says
the run finished."""

import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import lightning as L

from ..checkpointing import RUN_TOKENIZER_DIR, first_process_of_run
from ..loggers import finish_wandb_run
from ..metrics.rouge import ROUGE_TYPES
from ..model_card import describe_telemetry

if TYPE_CHECKING:
    from ..callbacks.batch_size import StepBatch

logger = logging.getLogger(__name__)

SUMMARY = "run_summary.json"
# What a run folder holds before its run did anything (Hydra's config and log, the lock): a refused run removes it.
BEFORE_ANY_WORK = {".hydra", "train.log", ".lock"}


@dataclass(frozen=True)
class RunReport:
    """What the end of a run hands to the callbacks that finish its outputs (`RunEndCallback`)."""

    config: dict[str, Any]  # the run's resolved config
    metrics: dict[str, float]  # validation and test metrics, as `train` returns them
    seconds: float  # wall time of this process
    resumed: bool  # this process continued an earlier one's checkpoint
    untested: str | None  # why the test did not run (None: it ran)
    batch: "StepBatch | None" = None  # the rows of an optimizer step (None: a report of no training run)
    telemetry: dict[str, float] = field(default_factory=dict)  # this process's fit (callbacks.telemetry); {}: off


@runtime_checkable
class RunEndCallback(Protocol):
    """A callback with outputs that need the whole run (the export's model card, its push): `RunFolder.finish` calls
    `on_run_end` before it writes the summary (what it writes is part of the finished run) and `on_run_finished`
    after it (what may fail without undoing the run, e.g. a network upload). Global rank zero only."""

    def on_run_end(self, trainer: L.Trainer, report: RunReport) -> None: ...

    def on_run_finished(self, trainer: L.Trainer) -> None: ...


class RunFolder:
    """The run folder `output_dir` for the length of a `with` block.

    Entering it locks the folder (the first process of a run only: DDP ranks share it) and refuses a finished run
    (its `run_summary.json` is there; an evaluation, `refuse_finished=False`, may write beside one). Leaving it on an
    error before `training()` was called removes a folder the run created (nothing in it but `BEFORE_ANY_WORK`):
    only the error says it ran; a folder with a run to resume is kept. A `tokenizer/` with no checkpoint beside it
    (the run failed or was killed before its first save) is removed on entering and on leaving with an error: the
    next attempt trains its own, and a later resume must not take the failed attempt's. `finish()` writes the
    summary.
    """

    def __init__(self, output_dir: str | os.PathLike, *, refuse_finished: bool = True):
        self.path = Path(output_dir)
        self.refuse_finished = refuse_finished  # False: an evaluation, which may write beside a finished run
        self.first = first_process_of_run()
        self._lock: Any = None
        self._fresh = False
        self._training = False
        self._started = 0.0

    def __enter__(self) -> "RunFolder":
        if self.first:
            self._lock = _lock(self.path)
        self._started = time.perf_counter()
        self._fresh = self.first and {path.name for path in self.path.iterdir()} <= BEFORE_ANY_WORK
        try:
            self._refuse_finished()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._drop_unpaired_tokenizer()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            # a refusal; an interrupted start (Ctrl-C while tokenising) keeps its train.log
            if kind is not None and issubclass(kind, Exception) and self._fresh and not self._training:
                shutil.rmtree(self.path, ignore_errors=True)
            elif kind is not None:
                self._drop_unpaired_tokenizer()
            finish_wandb_run()
        finally:
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
                self._lock = None

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._started

    def training(self) -> None:
        """The run is past its checks: an error from now on keeps the folder (checkpoints, logs)."""
        self._training = True

    def _drop_unpaired_tokenizer(self) -> None:
        """Remove the run's `tokenizer/` when no checkpoint was trained with it (first process only)."""
        tokenizer = self.path / RUN_TOKENIZER_DIR
        if self.first and tokenizer.is_dir() and not any((self.path / "checkpoints").glob("*.ckpt")):
            logger.info("removing %s: no checkpoint of this run was trained with it", tokenizer)
            shutil.rmtree(tokenizer, ignore_errors=True)

    def _refuse_finished(self) -> None:
        summary = self.path / SUMMARY
        if self.refuse_finished and summary.is_file():
            raise RuntimeError(
                f"the run in {self.path} has finished ({summary.name} is there): rerunning it would overwrite its "
                "results. Start a new run with another run_name; to train it further, start that new run from its "
                f"last checkpoint with more epochs: run_name=NEW ckpt_path={self.path / 'checkpoints' / 'last.ckpt'} "
                "trainer.max_epochs=N"
            )

    def finish(self, trainer: L.Trainer, report: RunReport) -> None:
        """End the run on global rank zero: the callbacks' `on_run_end`, the summary (printed and saved as
        `run_summary.json`), then their `on_run_finished`."""
        if not trainer.is_global_zero:
            return
        finishing = [callback for callback in trainer.callbacks if isinstance(callback, RunEndCallback)]
        for callback in finishing:
            callback.on_run_end(trainer, report)
        self._write_summary(trainer, report)
        for callback in finishing:
            callback.on_run_finished(trainer)

    def _write_summary(self, trainer: L.Trainer, report: RunReport) -> None:
        metrics, untested = report.metrics, report.untested
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        environment = getattr(trainer.strategy, "cluster_environment", None)  # only distributed strategies have one
        summary = {
            "metrics": metrics,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "cluster_environment": type(environment).__name__ if environment else None,
            "epochs": trainer.current_epoch,
            "best_checkpoint": best,
            "seconds": round(report.seconds, 1),
            "tested": untested is None,
            "test_skipped_because": untested,
            "batch": report.batch.summary() if report.batch else None,
            "telemetry": report.telemetry,
        }
        lines = [f"run finished in {report.seconds / 60:.1f} min, {trainer.global_step} optimizer steps -> {self.path}"]
        headline = {key: value for key, value in metrics.items() if key.count("/") == 1}  # not buckets, statistics
        lines += [f"  {key:<20} {value:.4f}" for key, value in sorted(headline.items())]
        lines += lead_baseline_lines(metrics)
        lines.append(f"  best checkpoint      {best or '-'}")
        lines += [f"  not tested:          {untested}"] if untested else []
        lines += [f"  telemetry            {describe_telemetry(report.telemetry)}"] if report.telemetry else []
        print("\n".join(lines))
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SUMMARY).write_text(json.dumps(summary, indent=2))


def _lock(folder: Path) -> Any:
    """An exclusive lock on `folder` (`.lock`, `fcntl.flock`), so a second run started in the same folder (same
    `run_name`) stops at once instead of interleaving logs and overwriting outputs; the kernel releases it when the
    process ends, even on kill -9. Returns the open lock file (closing it releases the lock)."""
    path = folder / ".lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file = open(path, "a+")  # held open for the run: closing it releases the lock
    except OSError as error:
        raise RuntimeError(
            f"paths.output_dir={folder}: cannot write the run folder there ({error.strerror or error}); "
            "point LSGTRAIN_ROOT (or paths.root_dir) at a folder you can write"
        ) from None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        file.close()
        raise RuntimeError(
            f"run folder {folder} is in use by a run that is still going ({holder}); wait for it to end, or give "
            "this run another run_name"
        ) from None
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {os.uname().nodename}")
    file.flush()
    return file


def lead_baseline_lines(metrics: dict[str, float]) -> list[str]:
    """The test ROUGE beside the lead baseline of the same documents (`test/lead_*`, logged by the ROUGE evaluation)."""
    if "test/lead_words" not in metrics:
        return []

    def shown(key: str) -> str:  # the value and its 95% bootstrap interval, when logged
        bounds = f" [{metrics[key + '_low']:.2f}, {metrics[key + '_high']:.2f}]" if key + "_low" in metrics else ""
        return f"{metrics[key]:.2f}{bounds}"

    pairs = ", ".join(f"{name} {shown(f'test/{name}')} vs {shown(f'test/lead_{name}')}" for name in ROUGE_TYPES)
    words = f"first {metrics['test/lead_words']:.0f} words of each document"
    return [f"  test ROUGE vs lead baseline ({words}; 95% bootstrap intervals): {pairs}"]
