"""The rows of one optimizer step: `data.batch_size x devices x nodes x accumulation` equals `effective_batch_size`
exactly (`exact_accumulation`; `allow_rounded_effective_batch=true` takes the nearest whole accumulation instead,
and the log, `run_summary.json` and the model card then state the batch trained), and `data.batch_size=auto`: the
largest micro-batch whose whole training step fits each device, measured by `BatchProbe`.

Lightning's `BatchSizeFinder` cannot keep the effective batch (it scales the micro-batch alone) and steps on real
batches, whose lengths vary; the probe steps a copy of the module on synthetic batches of the longest lengths the data
produces, so the weights and optimizer state training starts with are untouched.
"""

import copy
import gc
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..arguments import AUTO, ConfigError

logger = logging.getLogger(__name__)

ROUNDED_KEY = "allow_rounded_effective_batch"


@dataclass
class StepBatch:
    """The rows of one optimizer step, `per_device x devices x accumulation` (`trained`), against the effective batch
    asked for (`effective_batch_size`; None: not set, the accumulation is `trainer.accumulate_grad_batches`)."""

    per_device: int | None  # None until the probe has chosen it (data.batch_size=auto)
    devices: int  # the world size: trainer.devices x trainer.num_nodes
    accumulation: int
    asked: int | None
    allow_rounded: bool = False
    probe: list[dict[str, Any]] = field(default_factory=list)  # the probe's tries (batch, fits, peak MB, seconds)

    def settle(self, per_device: int) -> None:
        """Take `per_device` rows per device, and the accumulation that makes the asked effective batch with it."""
        self.per_device = per_device
        if self.asked:
            rounded = self.allow_rounded
            self.accumulation = exact_accumulation(self.asked, per_device, self.devices, allow_rounded=rounded)

    @property
    def trained(self) -> int | None:
        """The rows of an optimizer step (None: `auto` in a run that does not train, so nothing chose it)."""
        return self.per_device * self.devices * self.accumulation if self.per_device else None

    def describe(self) -> str:
        """The batch trained, and how it differs from the one asked for (the log's and the model card's words)."""
        rows = f"{self.trained} = {self.per_device} per device x {self.devices} devices x {self.accumulation} "
        rows += "accumulated"
        if self.asked and self.trained != self.asked:
            rows += f" (effective_batch_size={self.asked} asked: the nearest whole accumulation, {ROUNDED_KEY}=true)"
        return rows + (" (data.batch_size=auto)" if self.probe else "")

    def summary(self) -> dict[str, Any]:
        """What `run_summary.json` records of the step's batch."""
        return {"effective": self.trained, "asked": self.asked, "per_device": self.per_device,
                "devices": self.devices, "accumulation": self.accumulation, "probe": self.probe or None}  # fmt: skip


def plan_batch(
    *, batch_size: int | str, effective: int | None, devices: int, accumulation: int, allow_rounded: bool
) -> StepBatch:
    """The step's batch a config asks for on `devices` devices, refused (`ConfigError`) where no whole accumulation
    gives `effective` exactly; the training entry calls it before any data work. With `data.batch_size=auto`
    `per_device` stays None for the probe, which needs only `effective` to be a multiple of the devices."""
    batch = StepBatch(None, devices, accumulation, effective, allow_rounded)
    if batch_size != AUTO:
        batch.settle(batch_size)
    elif effective and effective % devices and not allow_rounded:
        raise ConfigError(
            f"data.batch_size=auto with effective_batch_size={effective} on {devices} devices (trainer.devices x "
            f"trainer.num_nodes): no micro-batch gives {effective} rows per step, as {effective} is not a multiple of "
            f"{devices}; use effective_batch_size={_nearest_multiples(effective, devices)}, or add {ROUNDED_KEY}=true"
        )
    return batch


def exact_accumulation(effective: int, batch_size: int, devices: int, *, allow_rounded: bool) -> int:
    """The accumulation that makes `batch_size x devices x accumulation == effective`; where none does, the nearest
    one if `allow_rounded`, else a `ConfigError` naming the nearest exact settings."""
    per_step = batch_size * devices
    if effective % per_step == 0:
        return effective // per_step
    rounded = max(1, int(effective / per_step + 0.5))
    if allow_rounded:
        return rounded
    options = [f"effective_batch_size={_nearest_multiples(effective, per_step)}"]
    if effective % devices == 0:
        per_device = effective // devices
        divisors = [n for n in range(1, per_device + 1) if per_device % n == 0]
        below = max((n for n in divisors if n < batch_size), default=None)
        above = min((n for n in divisors if n > batch_size), default=None)
        options.append(" or ".join(f"data.batch_size={n}" for n in (below, above) if n))
        options.append("data.batch_size=auto (the largest of those that fits the device)")
    raise ConfigError(
        f"effective_batch_size={effective} is not data.batch_size={batch_size} x {devices} devices (trainer.devices x "
        f"trainer.num_nodes) x a whole accumulation: {batch_size} x {devices} = {per_step} rows per micro-step, and "
        f"{effective} / {per_step} = {effective / per_step:g}. Exact: {'; '.join(o for o in options if o)}. To train "
        f"with {rounded} accumulated ({rounded * per_step} rows per step) anyway, add {ROUNDED_KEY}=true"
    )


def _nearest_multiples(value: int, step: int) -> str:
    """The multiples of `step` on either side of `value` (`value` is none), as `A or B`."""
    below = value // step * step
    return " or ".join(str(n) for n in (below, below + step) if n > 0)


class BatchProbe(Callback):
    """`data.batch_size=auto`: before the optimizer and the loaders are built (`setup`), steps a copy of the module
    (forward, backward, optimizer step, in the trainer's precision) on synthetic batches of the longest source and
    target the data produces, doubling the batch until the device runs out of memory, then bisecting between the last
    two over the sizes that keep the effective batch exact (the divisors of `effective_batch_size / devices`; any
    size without one); every rank probes its own device and they agree on the smallest. The chosen batch and the
    table of tries go to the log, `run_summary.json` and the checkpoints; a resume keeps them (`keep`).

    Args:
        batch: the run's step batch (`plan_batch`), settled here.
    """

    def __init__(self, batch: StepBatch):
        self.batch = batch

    def keep(self, checkpoint: dict[str, Any], path: str) -> None:
        """Take the batch the checkpoint's run chose: a resume never probes again (another GPU, another value)."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if not isinstance(state, dict) or not state.get("per_device"):
            raise ConfigError(
                f"ckpt_path={path} records no batch chosen by data.batch_size=auto (its run set data.batch_size): set "
                "data.batch_size to that run's value"
            )
        self.batch.probe = state["probe"]
        self.batch.settle(state["per_device"])
        logger.info("data.batch_size=auto: %d per device, as chosen by the run of %s", self.batch.per_device, path)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.batch.per_device is None:  # a training run (the entry adds no probe otherwise)
            self._probe(trainer, pl_module)
        trainer.datamodule.batch_size = self.batch.per_device
        trainer.accumulate_grad_batches = self.batch.accumulation

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"per_device": self.batch.per_device, "probe": self.batch.probe}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("per_device") != self.batch.per_device:  # `keep` took it before the loaders were built
            raise RuntimeError(
                f"the checkpoint's data.batch_size=auto chose {state_dict.get('per_device')}, this run trains with "
                f"{self.batch.per_device}: resume through lsgtrain.train.train, which keeps the checkpoint's choice"
            )

    def _probe(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        device, datamodule = trainer.strategy.root_device, trainer.datamodule
        limit = self.batch.asked // self.batch.devices if self.batch.asked else len(datamodule.examples("train"))
        exact = [n for n in range(1, limit + 1) if not self.batch.asked or limit % n == 0]
        tries: dict[int, bool] = {}
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the probe's dropout must not shift training's random stream
            probe = _detached_copy(module, device)

            def fits(size: int) -> bool:
                if size not in tries:
                    self.batch.probe.append(_try_step(trainer, probe, size))
                    tries[size] = self.batch.probe[-1]["fits"]
                return tries[size]

            chosen = largest_fitting(fits, exact)
            probe = None
            _free(device)
        if not chosen:
            raise RuntimeError(
                f"data.batch_size=auto: one row of {datamodule.max_source_length} source tokens does not fit "
                f"{device} for a training step; use model.gradient_checkpointing=true, a shorter "
                "data.max_source_length, or a sharded strategy (FSDP: weights, gradients and optimizer state sharded)"
            )
        agreed = int(trainer.strategy.reduce(torch.tensor(chosen, device=device), reduce_op="min"))
        self.batch.settle(agreed)
        self._report(trainer, chosen, limit)

    def _report(self, trainer: L.Trainer, chosen: int, limit: int) -> None:
        cuda = trainer.strategy.root_device.type == "cuda"
        memory = "CUDA max_memory_allocated" if cuda else "peak RSS of the process"
        rows = [f"  {row['batch']:>6} {'yes' if row['fits'] else 'no':>5} {row['peak_memory_mb']:>10,} "
                f"{row['seconds'] if row['fits'] else '-':>8}" for row in self.batch.probe]  # fmt: skip
        rule = f"that divides effective_batch_size / devices = {limit}" if self.batch.asked else f"up to {limit} rows"
        agreed = self.batch.per_device
        ranks = f"; the ranks agreed on {agreed} (the smallest)" if chosen != agreed else ""
        if trainer.is_global_zero:
            logger.info(
                "batch probe (data.batch_size=auto): one training step at %d source x %s target tokens, %s:\n"
                "   batch  fits  peak (MB)  seconds\n%s\nchosen %d, the largest that fits %s%s; effective batch %s",
                trainer.datamodule.max_source_length, getattr(trainer.datamodule, "max_target_length", "-"), memory,
                "\n".join(rows), chosen, rule, ranks, self.batch.describe(),
            )  # fmt: skip


def largest_fitting(fits: Callable[[int], bool], exact: list[int]) -> int:
    """The largest size of `exact` (ascending, from 1 to the limit) for which `fits`, as memory grows with the batch:
    doubling from 1 until a size does not fit (or passes the limit), then bisecting over the sizes of `exact` between
    the last two; 0 where not even 1 fits."""
    size = 1
    while size <= exact[-1] and fits(size):
        size *= 2
    fitted = size // 2  # the largest power of two that fits
    if not fitted:
        return 0
    between = [n for n in exact if fitted < n < size]
    low, high = 0, len(between)  # between[:low] fit, between[high:] do not
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if fits(between[middle]) else (low, middle)
    return max([n for n in exact if n <= fitted] + between[:low])


def _detached_copy(module: L.LightningModule, device: torch.device) -> L.LightningModule:
    """A copy of `module` on `device`, outside the trainer (it logs nothing, reduces nothing across ranks): the
    probe's steps change its weights and optimizer state, never those training starts with."""
    trainer = module.trainer
    module.trainer = None
    try:
        probe = copy.deepcopy(module)
    finally:
        module.trainer = trainer
    return probe.to(device).train()


def _try_step(trainer: L.Trainer, module: L.LightningModule, size: int) -> dict[str, Any]:
    """One training step of `size` longest rows on the probe's copy: whether it fits, its peak memory and time."""
    device = trainer.strategy.root_device
    cuda = device.type == "cuda"
    batch = {key: value.to(device) for key, value in trainer.datamodule.longest_batch(size).items()}
    optimizer = module.build_optimizer()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started, fits = time.perf_counter(), True
    try:
        with trainer.precision_plugin.forward_context():
            loss = module.training_loss(batch)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
    except torch.OutOfMemoryError:  # CUDA's allocator, and the CPU allocator's own
        fits = False
    seconds = round(time.perf_counter() - started, 3)
    # CPU: the process's peak RSS (Linux counts it in KiB), which no try can reset
    peak = torch.cuda.max_memory_allocated(device) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    optimizer.zero_grad(set_to_none=True)
    del optimizer, batch
    _free(device)
    return {"batch": size, "fits": fits, "peak_memory_mb": round(peak / 2**20), "seconds": seconds}


def _free(device: torch.device) -> None:
    """Release what a try held, so the next one starts from the same memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
