"""Training telemetry: throughput without padding, padding share, peak memory, the gradient norm before clipping, and
an ETA on the progress bar; logged every `trainer.log_every_n_steps` optimizer steps and summarised for the run."""

import logging
import resource
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label padding of every seq2seq batch (lsgtrain.data.datamodule.pad_labels)
GIB = 2**30
# ru_maxrss is in kilobytes on Linux, in bytes on macOS (getrusage(2) of each)
RSS_UNIT = 1 if sys.platform == "darwin" else 1024
# What one batch adds to an interval's counts, in this order (summed over ranks at each logging step).
COUNTS = ("samples", "source_tokens", "source_slots", "target_tokens", "target_slots")


class TrainingTelemetry(Callback):
    """Logs, every `trainer.log_every_n_steps` optimizer steps (the rows `train/loss` is logged in):

    - `train/source_tokens_per_s`, `train/target_tokens_per_s`: tokens that are not padding (attention_mask == 1,
      labels != -100) over the interval's training time, summed over all ranks; `train/samples_per_s` likewise.
      Classification batches have no target tokens: only the source columns are logged.
    - `train/source_padding`, `train/target_padding`: the padding share of the slots of the interval's batches
      (with `log_every_n_steps=1` and no accumulation: of each batch).
    - `train/peak_rss_gib`: the peak resident memory of the process since it started (`ru_maxrss`; cumulative by
      nature), the largest over ranks; on CUDA `train/peak_cuda_gib`: `torch.cuda.max_memory_allocated` during
      the interval (the peak is reset after each logging step), the largest over ranks.
    - `train/grad_norm`: the total 2-norm of the gradients of the logged step before clipping: read in
      `on_before_optimizer_step`, which the precision plugin calls after unscaling (fp16) and before it clips.
    - `eta_min` on the progress bar only: the interval's time per optimizer step x the steps left
      (`trainer.estimated_stepping_batches`); validation time is left out of it.

    Validation inside an interval is left out of its time, so throughput and ETA are those of training steps
    (checkpoint saving is not). Under gradient accumulation an interval's counts include every micro-batch of its
    optimizer steps. `summary()` is the whole fit of this process (as `seconds` in `run_summary.json`):
    throughput and padding over all its training steps, the largest peaks, the last and largest logged gradient
    norm. It keeps no state in checkpoints: a resumed process measures its own training.

    Why not Lightning's `ThroughputMonitor`: it counts on global rank zero only and multiplies by the world size,
    which is wrong for tokens without padding (each rank's batches hold different numbers), takes one length per
    batch (not source and target), and warns on every run without a `flops_per_batch`; one all-gather per logging
    step here gives exact sums over ranks and the peaks over ranks together.
    """

    def __init__(self) -> None:
        self._clock = time.perf_counter  # tests replace it with a controlled one
        self._interval = torch.zeros(len(COUNTS), dtype=torch.float64)
        self._total = torch.zeros(len(COUNTS), dtype=torch.float64)
        self._step_at_batch_start = 0
        self._interval_start = 0.0
        self._interval_steps = 0
        self._step_time = 0.0  # seconds per optimizer step in the last closed interval
        self._excluded = 0.0  # validation seconds inside the current interval
        self._validation_start: float | None = None
        self._grad_norm: float | None = None
        self._seconds = 0.0
        self._steps = 0
        self._has_target = False
        self._peaks = {"peak_rss_gib": 0.0, "peak_cuda_gib": 0.0}
        self._grad_norms: list[float] = []

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._interval = torch.zeros(len(COUNTS), dtype=torch.float64, device=pl_module.device)
        self._total = self._interval.clone()
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._interval_start = self._now(pl_module)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_at_batch_start = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._interval += batch_counts(batch).to(self._interval.device)
        if trainer.global_step == self._step_at_batch_start:  # accumulating: no optimizer step yet
            return
        self._interval_steps += 1
        if trainer.log_every_n_steps and trainer.global_step % trainer.log_every_n_steps == 0:
            metrics = self._close_interval(trainer, pl_module)
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
            eta = self._eta_minutes(trainer)
            if eta is not None:
                pl_module.log("eta_min", eta, on_step=True, on_epoch=False, prog_bar=True, logger=False)

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        every = trainer.log_every_n_steps
        if every and (trainer.global_step + 1) % every == 0:  # only the steps that are logged pay for the norm
            self._grad_norm = float(gradient_norm(pl_module))

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # inside the fit: not training time
            self._validation_start = self._now(pl_module)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self._excluded += self._now(pl_module) - self._validation_start
            self._validation_start = None

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._interval_steps:  # the steps after the last logging step count in the summary
            self._close_interval(trainer, pl_module)

    def summary(self) -> dict[str, float]:
        """This process's fit: throughput, padding, time per optimizer step, peaks and gradient norms (empty before
        any optimizer step)."""
        if not self._steps:
            return {}
        totals = dict(zip(COUNTS, self._total.tolist(), strict=True))
        summary = {
            "optimizer_steps": self._steps,
            "seconds_per_step": self._seconds / self._steps,
            **self._rates(totals, self._seconds),
            **{key: value for key, value in self._peaks.items() if value},
        }
        if self._grad_norms:
            summary |= {"grad_norm_last": self._grad_norms[-1], "grad_norm_max": max(self._grad_norms)}
        return summary

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(pl_module.device)
        return self._clock()

    def _close_interval(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The interval's metrics (sums and peaks over ranks), added to the run's totals; a new interval starts."""
        now = self._now(pl_module)
        seconds = max(now - self._interval_start - self._excluded, 1e-9)
        device = pl_module.device
        peaks = torch.tensor(
            [
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT / GIB,
                torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else 0.0,
            ],
            dtype=torch.float64,
            device=device,
        )
        gathered = trainer.strategy.all_gather(torch.cat([self._interval, peaks]))  # [world, n] or [n] alone
        gathered = gathered.reshape(-1, len(COUNTS) + 2)
        counts = dict(zip(COUNTS, gathered[:, : len(COUNTS)].sum(0).tolist(), strict=True))
        rss, cuda = gathered[:, len(COUNTS) :].max(0).values.tolist()
        self._total += gathered[:, : len(COUNTS)].sum(0)
        self._seconds += seconds
        self._steps += self._interval_steps
        self._has_target = self._has_target or counts["target_slots"] > 0
        metrics = {**self._rates(counts, seconds), "peak_rss_gib": rss}
        if device.type == "cuda":
            metrics["peak_cuda_gib"] = cuda
            torch.cuda.reset_peak_memory_stats(device)
        for key in self._peaks:
            self._peaks[key] = max(self._peaks[key], metrics.get(key, 0.0))
        if self._grad_norm is not None:
            metrics["grad_norm"] = self._grad_norm
            self._grad_norms.append(self._grad_norm)
            self._grad_norm = None
        self._step_time = seconds / self._interval_steps
        self._interval.zero_()
        self._interval_steps = 0
        self._excluded = 0.0
        self._interval_start = now
        return {f"train/{key}": value for key, value in metrics.items()}

    def _rates(self, counts: dict[str, float], seconds: float) -> dict[str, float]:
        rates = {
            "samples_per_s": counts["samples"] / seconds,
            "source_tokens_per_s": counts["source_tokens"] / seconds,
            "source_padding": 1 - counts["source_tokens"] / max(counts["source_slots"], 1),
        }
        if self._has_target:
            rates["target_tokens_per_s"] = counts["target_tokens"] / seconds
            rates["target_padding"] = 1 - counts["target_tokens"] / max(counts["target_slots"], 1)
        return rates

    def _eta_minutes(self, trainer: L.Trainer) -> float | None:
        """The last interval's time per optimizer step x the optimizer steps left; None when the total is unknown
        (`max_steps=-1` with an unsized loader, or only `max_time`)."""
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            return None
        return max(total - trainer.global_step, 0) * self._step_time / 60


def batch_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One batch's `COUNTS`: samples, source tokens (attention_mask == 1) and slots, target tokens (labels != -100)
    and slots; a classifier's labels (one class or a vector of classes per sample) are no target sequence."""
    mask = batch["attention_mask"]
    labels = batch.get("labels")
    target = labels is not None and labels.dim() == 2 and not labels.is_floating_point()
    target_tokens = (labels != IGNORE_INDEX).sum() if target else mask.new_zeros(())
    counts = [mask.new_tensor(mask.shape[0]), mask.sum(), mask.new_tensor(mask.numel()), target_tokens]
    counts.append(mask.new_tensor(labels.numel() if target else 0))
    return torch.stack(counts).double()


def gradient_norm(module: torch.nn.Module) -> torch.Tensor:
    """The total 2-norm of `module`'s gradients (0 when none); sharded (DTensor) gradients give the full norm."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def run_telemetry(trainer: L.Trainer) -> dict[str, float]:
    """The `TrainingTelemetry` summary of this process's fit (for `run_summary.json` and the model card); empty
    when the callback is not configured (`~callbacks.telemetry`)."""
    for callback in trainer.callbacks:
        if isinstance(callback, TrainingTelemetry):
            return callback.summary()
    return {}
