"""`module/optimizer` and `module.scheduler` (tasks/base.py): AdamW by default, Adafactor's two forms, warm-up and decay
shapes, steps too few for a warm-up warned or refused."""

import logging
import math

import pytest
import torch
from hydra.utils import instantiate
from transformers.optimization import Adafactor

from lsgtrain.train import train

from ..helpers import QUICK


def _lrs(cfg, total: int) -> list[float]:
    optimizer = instantiate(cfg.module.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
    scheduler = instantiate(cfg.module.scheduler)(optimizer, total_steps=total)  # as configure_optimizers builds it
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def _expected_lr(name: str, step: int, lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return lr * step / warmup
    progress = (step - warmup) / (total - warmup)
    return {"linear": lr * (1 - progress), "cosine": lr * 0.5 * (1 + math.cos(math.pi * progress)), "constant": lr}[
        name
    ]


def test_the_default_optimizer_is_todays_adamw(make_cfg):
    optimizer = make_cfg().module.optimizer
    assert (optimizer._target_, optimizer.lr, list(optimizer.betas)) == ("torch.optim.AdamW", 1e-3, [0.9, 0.999])
    assert make_cfg("experiment=aclsum_venue_cls").module.optimizer._target_ == "torch.optim.AdamW"


def test_warmup_steps_win_over_warmup_ratio(make_cfg):
    seen = _lrs(make_cfg("module.scheduler.warmup_ratio=0.5", "module.scheduler.warmup_steps=4"), total=20)
    assert seen[:5] == pytest.approx([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])  # peak after 4 steps, not 10
    assert seen[12] == pytest.approx(1e-3 * (20 - 12) / 16)  # then linear decay to 0 over the other 16


def test_inverse_sqrt_schedule_decays_as_one_over_root_of_the_step(make_cfg):
    cfg = make_cfg("module.scheduler.name=inverse_sqrt", "module.scheduler.warmup_steps=4")
    seen = _lrs(cfg, total=40)
    assert seen[2] == pytest.approx(5e-4)  # linear warm-up
    for step in (4, 9, 16, 36):
        assert seen[step] == pytest.approx(1e-3 * math.sqrt(4 / step))


def test_too_many_warmup_steps_for_a_decay_are_refused(make_cfg):
    with pytest.raises(ValueError, match=r"module.scheduler.warmup_steps=30 leaves none of the run's 20"):
        _lrs(make_cfg("module.scheduler.warmup_steps=30"), total=20)


@pytest.mark.parametrize(
    "overrides",
    [["module/optimizer=adafactor", "module.scheduler.name=inverse_sqrt", "module.scheduler.warmup_steps=1"],
     ["module/optimizer=adafactor_relative", "module.scheduler=null", "logger=csv"]],  # the LR monitor logs it too
    ids=["fixed-lr", "relative-step"],
)  # fmt: skip
def test_adafactor_trains_with_factored_second_moments_and_no_first_moment(make_cfg, overrides):
    metrics, objects = train(make_cfg(*QUICK, *overrides))
    optimizer = objects["trainer"].optimizers[0]
    assert isinstance(optimizer, Adafactor) and objects["trainer"].global_step == 2
    assert math.isfinite(metrics["val/loss"])
    states = [optimizer.state[p] for group in optimizer.param_groups for p in group["params"]]
    matrices = [s for s in states if "exp_avg_sq_row" in s]
    assert matrices and not any("exp_avg" in s for s in states)  # beta1=null: no first moment (Pegasus)
    assert all(s["exp_avg_sq_row"].ndim == 1 and s["exp_avg_sq_col"].ndim == 1 for s in matrices)


def test_adafactors_relative_step_refuses_a_scheduler(make_cfg):
    with pytest.raises(ValueError, match=r"module.optimizer.relative_step=true .* set module.scheduler=null"):
        train(make_cfg(*QUICK, "module/optimizer=adafactor_relative"))


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_lr_schedules_warm_up_then_follow_their_shape(make_cfg, name):
    cfg = make_cfg(f"module.scheduler.name={name}", "module.scheduler.warmup_ratio=0.2", "module.optimizer.lr=2e-3")
    optimizer = instantiate(cfg.module.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
    scheduler = instantiate(cfg.module.scheduler)(optimizer, total_steps=50)  # as configure_optimizers builds it
    seen = []
    for _ in range(50):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([_expected_lr(name, step, 2e-3, 10, 50) for step in range(50)], abs=1e-12)
    assert seen[10] == pytest.approx(2e-3)  # the peak, after 20% of 50 steps


def test_fewer_optimizer_steps_than_an_epoch_or_a_warm_up_are_warned(make_cfg, caplog):
    """Before, effective_batch_size=32 on 4 rows (2 batches) trained 1 optimizer step without a word."""
    cfg = make_cfg(*QUICK, "effective_batch_size=32")
    with caplog.at_level(logging.WARNING, logger="lsgtrain.tasks.base"):
        _, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert "an epoch is 2 batches, fewer than the 16 that one optimizer step accumulates" in caplog.text
    assert "the run has 1 optimizer steps, fewer than one warm-up step needs" in caplog.text
