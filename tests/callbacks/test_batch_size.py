"""The step's batch (issue 27.2-3): `data.batch_size x devices x nodes x accumulation == effective_batch_size`
exactly, or refused before any data work naming exact settings (the opt-in takes the nearest and says so), and
`data.batch_size=auto`: the probe under a simulated memory limit, its table, and a resume that keeps its choice."""

import json
import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lsgtrain.callbacks.batch_size import StepBatch, largest_fitting
from lsgtrain.preflight import ConfigError
from lsgtrain.run.keys import resume_fixed
from lsgtrain.tasks.summarization import SummarizationModule
from lsgtrain.train import build, train

from ..helpers import QUICK, assert_refused_before_data_work

# 4 nodes x 8 devices (docs/cluster.md's example), and 3: Lightning's world size on CPU, no process started
WORLD_32 = ["+trainer.strategy=ddp", "trainer.devices=8", "+trainer.num_nodes=4"]
WORLD_3 = ["+trainer.strategy=ddp", "trainer.devices=3"]


class FirstLoss(Callback):
    """Records the loss of the first training batch, and the accumulation and batch size the trainer trains with."""

    losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            FirstLoss.losses.append(float(outputs["loss"]))


RECORD = f"+callbacks.first_loss._target_={__name__}.FirstLoss"


@pytest.fixture
def memory_limit(monkeypatch):
    """A device that runs out of memory on a training step of more than `limit[0]` rows (the probe's steps)."""
    limit = [2]
    real = SummarizationModule.training_loss

    def limited(self, batch):
        if batch["input_ids"].shape[0] > limit[0]:
            raise torch.OutOfMemoryError(f"simulated: {batch['input_ids'].shape[0]} rows > {limit[0]}")
        return real(self, batch)

    monkeypatch.setattr(SummarizationModule, "training_loss", limited)
    return limit


@pytest.mark.parametrize(
    ("world", "overrides", "message"),
    [
        # before: 2 x 32 devices x ceil(32 / 64) = 64 rows per step, logged as "effective batch 32"
        (WORLD_32, ["data.batch_size=2", "effective_batch_size=32"], r"effective_batch_size=32 is not data.batch_size="
         r"2 x 32 devices .* 2 x 32 = 64 rows per micro-step, and 32 / 64 = 0.5. Exact: effective_batch_size=64; "
         r"data.batch_size=1; data.batch_size=auto .* add allow_rounded_effective_batch=true"),
        # before: 4 x 3 x ceil(32 / 12) = 36
        (WORLD_3, ["data.batch_size=4", "effective_batch_size=32"], r"4 x 3 = 12 rows per micro-step, and 32 / 12 = "
         r"2.66667. Exact: effective_batch_size=24 or 36. To train with 3 accumulated \(36 rows per step\) anyway"),
        (WORLD_3, ["data.batch_size=auto", "effective_batch_size=32"], r"data.batch_size=auto with effective_batch_"
         r"size=32 on 3 devices .* use effective_batch_size=30 or 33"),
    ],
    ids=["32-devices", "3-devices", "auto-3-devices"],
)  # fmt: skip
def test_an_inexact_effective_batch_is_refused_before_data_work(make_cfg, tmp_path, world, overrides, message):
    assert_refused_before_data_work(make_cfg(*world, *overrides), tmp_path, ConfigError, message)


@pytest.mark.parametrize(
    ("world", "batch", "effective", "accumulation"), [(WORLD_32, 1, 32, 1), (WORLD_32, 2, 128, 2), (WORLD_3, 4, 36, 3)]
)
def test_an_exact_effective_batch_sets_the_accumulation(make_cfg, caplog, world, batch, effective, accumulation):
    caplog.set_level(logging.INFO, logger="lsgtrain.train")
    objects = build(make_cfg(*world, f"data.batch_size={batch}", f"effective_batch_size={effective}"))
    trainer = objects["trainer"]
    assert trainer.accumulate_grad_batches == accumulation
    assert batch * trainer.world_size * accumulation == effective == objects["batch"].trained
    assert f"effective batch {effective} = {batch} per device x {trainer.world_size} devices" in caplog.text


def test_the_rounded_batch_is_an_opt_in_stated_in_log_summary_and_card(make_cfg, tmp_path, caplog):
    """3 x 1 device x 3 accumulated = 9, not 8: trained only with allow_rounded_effective_batch=true, and said."""
    caplog.set_level(logging.INFO, logger="lsgtrain.train")
    quick = [o for o in QUICK if not o.startswith("callbacks.hf_export")]
    train(make_cfg(*quick, "data.batch_size=3", "effective_batch_size=8", "allow_rounded_effective_batch=true"))
    said = "9 = 3 per device x 1 devices x 3 accumulated (effective_batch_size=8 asked: the nearest whole accumulation"
    assert said in caplog.text
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())["batch"]
    assert summary == {"effective": 9, "asked": 8, "per_device": 3, "devices": 1, "accumulation": 3, "probe": None}
    assert f"effective batch: {said}" in (tmp_path / "run" / "hf_model" / "README.md").read_text()
    assert resume_fixed("allow_rounded_effective_batch")  # a resume may not change it


def test_largest_fitting_doubles_then_bisects_over_the_exact_sizes():
    tried = []

    def fits(size: int) -> bool:
        tried.append(size)
        return size <= 5

    assert largest_fitting(fits, [1, 2, 3, 4, 6, 12]) == 4  # 6 does not fit; 5 would not divide 12
    assert tried == [1, 2, 4, 8, 6]
    tried.clear()
    assert largest_fitting(fits, list(range(1, 101))) == 5 and tried == [1, 2, 4, 8, 6, 5]
    assert largest_fitting(lambda size: False, [1, 2]) == 0
    assert largest_fitting(lambda size: True, [1, 2, 3, 6]) == 6  # the limit itself, past the last power of two


def test_auto_batch_probes_under_a_memory_limit_keeps_the_effective_batch_and_resumes(
    make_cfg, tmp_path, caplog, memory_limit
):
    """The probe steps a copy: the first training loss is the fixed batch's; a resume keeps the probe's choice even
    where the device would now fit less."""
    caplog.set_level(logging.INFO, logger="lsgtrain.callbacks.batch_size")
    FirstLoss.losses = []
    fixed = make_cfg(*QUICK, RECORD, "data.batch_size=2", "effective_batch_size=8", "run_name=fixed")
    fixed.paths.output_dir = str(tmp_path / "fixed")
    train(fixed)
    options = [*QUICK, RECORD, "data.batch_size=auto", "effective_batch_size=8", "run_name=auto"]
    metrics, objects = train(make_cfg(*options))
    assert objects["datamodule"].batch_size == 2 and objects["trainer"].accumulate_grad_batches == 4
    assert FirstLoss.losses[0] == pytest.approx(FirstLoss.losses[1], abs=0), "the probe changed training's start"
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())["batch"]
    assert summary["per_device"] == 2 and summary["accumulation"] == 4 and summary["effective"] == 8
    assert [(row["batch"], row["fits"]) for row in summary["probe"]] == [(1, True), (2, True), (4, False)]
    assert all(row["peak_memory_mb"] > 0 and row["seconds"] >= 0 for row in summary["probe"])
    assert "batch probe (data.batch_size=auto)" in caplog.text and "chosen 2, the largest that fits" in caplog.text

    memory_limit[0] = 1  # another device: a new probe would choose 1
    (tmp_path / "run" / "run_summary.json").unlink()  # an interrupted run, to be resumed
    caplog.set_level(logging.INFO, logger="lsgtrain.train")
    metrics, objects = train(make_cfg(*options, "trainer.max_epochs=2"))
    assert "Resuming from" in caplog.text and objects["trainer"].global_step == 2  # one optimizer step per epoch
    assert objects["datamodule"].batch_size == 2 and objects["trainer"].accumulate_grad_batches == 4
    assert "as chosen by the run of" in caplog.text


def test_auto_without_training_needs_an_eval_batch_size(make_cfg, tmp_path):
    cfg = make_cfg("data.batch_size=auto", "data.eval_batch_size=null", "train=false")
    message = r"data.batch_size=auto is found by probing training steps, and this run does not train"
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, message)


@pytest.mark.parametrize("value", ["abc", "0", "1.5", "true"])
def test_batch_size_is_a_number_or_auto(make_cfg, tmp_path, value):
    message = r"data.batch_size=.* must be an integer >= 1 or auto .* e.g. data.batch_size=4 or data.batch_size=auto"
    assert_refused_before_data_work(make_cfg(f"data.batch_size={value}"), tmp_path, ConfigError, message)


def test_step_batch_describes_the_batch_trained():
    assert StepBatch(2, 8, 2, 32).describe() == "32 = 2 per device x 8 devices x 2 accumulated"
    assert "asked" not in StepBatch(2, 8, 2, None).describe()
