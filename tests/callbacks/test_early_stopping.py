"""Early stopping counts evaluations (epoch or step schedule), not epochs, and follows the checkpoint's monitor."""

from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping

from lsgtrain.train import train

from ..helpers import QUICK


def test_early_stopping_counts_evaluations_not_epochs(make_cfg, tmp_path):
    """ROUGE every 2 epochs and a learning rate too small to change a float32 weight: the first evaluation sets the
    best, the next two do not improve on it, so patience 2 stops after the third evaluation (epoch 6 of 10), and
    the epochs without ROUGE neither crash the strict check nor count as evaluations."""
    cfg = make_cfg(
        *QUICK, "callbacks/early_stopping=default", "callbacks.early_stopping.patience=2",
        "callbacks.rouge.every_n_epochs=2", "trainer.max_epochs=10", "trainer.limit_train_batches=1",
        "module.optimizer.lr=1e-12",
    )  # fmt: skip
    _, objects = train(cfg)
    trainer = objects["trainer"]
    stopper = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    assert (stopper.monitor, stopper.mode, stopper.strict) == ("val/rougeLsum", "max", True)
    assert stopper.stopped_epoch == 5 and stopper.wait_count == 2
    assert trainer.global_step == 6  # one batch per epoch: 6 epochs ran, not 10
    evaluated = sorted(p.name for p in (tmp_path / "run" / "predictions").glob("val_epoch*.jsonl"))
    assert evaluated == ["val_epoch1.jsonl", "val_epoch3.jsonl", "val_epoch5.jsonl"]


def test_early_stopping_follows_the_experiments_checkpoint_monitor(make_cfg):
    summarization = make_cfg("callbacks/early_stopping=default").callbacks.early_stopping
    classification = make_cfg("experiment=aclsum_venue_cls", "callbacks/early_stopping=default").callbacks
    assert (summarization.monitor, summarization.mode) == ("val/rougeLsum", "max")
    stopper = instantiate(classification.early_stopping)
    assert (stopper.monitor, stopper.mode, type(stopper).__name__) == ("val/f1_macro", "max", "ScheduledEarlyStopping")
    assert "early_stopping" not in make_cfg().callbacks  # off by default


def test_early_stopping_counts_the_step_evaluations(make_cfg, tmp_path):
    """ROUGE every step on a 1-document sample, a learning rate too small to change a weight: the first evaluation
    sets the best, patience 2 stops after the third, at step 3 of the 8 in the epoch."""
    cfg = make_cfg(
        *QUICK, "callbacks/early_stopping=default", "callbacks.early_stopping.patience=2",
        "callbacks.rouge.every_n_steps=1", "callbacks.rouge.every_n_epochs=null", "callbacks.rouge.max_samples=1",
        "data.max_samples=16", "trainer.limit_train_batches=8", "module.optimizer.lr=1e-12",
    )  # fmt: skip
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 3
    evaluated = sorted(p.name for p in (tmp_path / "run" / "predictions").glob("val_step*.jsonl"))
    assert evaluated == ["val_step1.jsonl", "val_step2.jsonl", "val_step3.jsonl"]
