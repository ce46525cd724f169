"""Training telemetry (TrainingTelemetry): tokens/s without padding, padding share, peak memory, the gradient norm
before clipping, the ETA on the progress bar, and the run's summary in run_summary.json and the model card."""

import csv
import itertools
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from lsgtrain.callbacks import TrainingTelemetry
from lsgtrain.train import train

from ..helpers import SHORT

SECONDS_PER_READING = 2.0  # the controlled clock moves this much each time the callback reads it


def _batch(lengths: list[int], target_lengths: list[int], width: int = 8, target_width: int = 6) -> dict:
    """A seq2seq batch: sources of `lengths` tokens padded to `width`, labels of `target_lengths` padded with -100."""
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    labels = torch.full((len(lengths), target_width), -100, dtype=torch.long)
    for row, (length, target) in enumerate(zip(lengths, target_lengths, strict=True)):
        mask[row, :length] = 1
        labels[row, :target] = 7
    return {"attention_mask": mask, "labels": labels, "x": torch.arange(1.0, 5.0) * (len(lengths) + 1)}


# Four micro-batches (two optimizer steps under accumulate_grad_batches=2): source / target tokens that are not padding.
BATCHES = [_batch([8, 3], [6, 2]), _batch([5], [1]), _batch([2, 2, 4], [3, 3, 6]), _batch([8], [6])]


class Linear(L.LightningModule):
    """loss = sum(w * x): the gradient of w is the batch's x, known by hand."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def training_step(self, batch, batch_idx):
        return (self.w * batch["x"]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(BATCHES, batch_size=None)


class ProgressBarMetrics(Callback):
    """What the progress bar shows at the start of each training batch."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(dict(trainer.progress_bar_callback.get_metrics(trainer, pl_module)))


def _fit(tmp_path, **trainer_args):
    telemetry = TrainingTelemetry()
    readings = itertools.count(0.0, SECONDS_PER_READING)
    telemetry._clock = lambda: next(readings)
    bar = ProgressBarMetrics()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, log_every_n_steps=1, logger=CSVLogger(tmp_path, name="csv", version=0),
        callbacks=[telemetry, bar], enable_checkpointing=False, enable_model_summary=False, **trainer_args,
    )  # fmt: skip
    module = Linear()
    trainer.fit(module)
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    return {row["step"]: row for row in rows}, telemetry, bar, module


def test_tokens_per_second_and_padding_count_every_micro_batch_of_an_optimizer_step(tmp_path):
    rows, telemetry, _, _ = _fit(tmp_path, max_steps=2, accumulate_grad_batches=2)
    for step, batches in (("0", BATCHES[:2]), ("1", BATCHES[2:])):
        source = sum(int(b["attention_mask"].sum()) for b in batches)
        target = sum(int((b["labels"] != -100).sum()) for b in batches)
        samples = sum(len(b["labels"]) for b in batches)
        row = {key: float(value) for key, value in rows[step].items() if value}
        assert row["train/source_tokens_per_s"] == pytest.approx(source / SECONDS_PER_READING)
        assert row["train/target_tokens_per_s"] == pytest.approx(target / SECONDS_PER_READING)
        assert row["train/samples_per_s"] == pytest.approx(samples / SECONDS_PER_READING)
        assert row["train/source_padding"] == pytest.approx(1 - source / (8 * samples))
        assert row["train/target_padding"] == pytest.approx(1 - target / (6 * samples))
        assert 0.05 < row["train/peak_rss_gib"] < 64  # this process's peak resident memory, in GiB
        assert "train/peak_cuda_gib" not in row  # CPU: no device memory column
    source = sum(int(b["attention_mask"].sum()) for b in BATCHES)
    target = sum(int((b["labels"] != -100).sum()) for b in BATCHES)
    summary = telemetry.summary()
    assert summary["optimizer_steps"] == 2 and summary["seconds_per_step"] == pytest.approx(SECONDS_PER_READING)
    assert summary["source_tokens_per_s"] == pytest.approx(source / (2 * SECONDS_PER_READING))
    assert summary["target_padding"] == pytest.approx(1 - target / (6 * 7))  # 7 samples in all


def test_gradient_norm_is_the_norm_before_clipping(tmp_path):
    rows, _, _, module = _fit(tmp_path, max_steps=2, gradient_clip_val=1e-3)
    for step, batch in (("0", BATCHES[0]), ("1", BATCHES[1])):
        expected = torch.nn.utils.get_total_norm([batch["x"]])  # the gradient of w is x
        assert float(rows[step]["train/grad_norm"]) == pytest.approx(float(expected)) and expected > 1
    moved = torch.linalg.vector_norm(module.w.detach() - 1)
    assert moved <= 2e-3 + 1e-6  # the steps applied clipped gradients (lr 1, two steps of norm 1e-3)


def test_eta_is_on_the_progress_bar(tmp_path):
    _, _, bar, _ = _fit(tmp_path, max_steps=3)
    etas = [metrics.get("eta_min") for metrics in bar.seen]
    # after optimizer step k of 3, at SECONDS_PER_READING per step: (3 - k) steps left
    assert etas == [None, pytest.approx(2 * SECONDS_PER_READING / 60), pytest.approx(SECONDS_PER_READING / 60)]


def test_a_run_logs_telemetry_and_summarises_it_in_run_summary_and_card(make_cfg, tmp_path):
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "logger=csv", "trainer.log_every_n_steps=1"))
    run = tmp_path / "run"
    rows = [row for row in csv.DictReader((run / "csv" / "version_0" / "metrics.csv").open()) if row["train/loss"]]
    assert len(rows) == 3  # every optimizer step: log_every_n_steps=1
    for row in rows:
        assert float(row["train/source_tokens_per_s"]) > 0 and float(row["train/target_tokens_per_s"]) > 0
        assert 0 <= float(row["train/source_padding"]) < 1 and 0 <= float(row["train/target_padding"]) < 1
        assert float(row["train/peak_rss_gib"]) > 0.05 and float(row["train/grad_norm"]) > 0
    telemetry = json.loads((run / "run_summary.json").read_text())["telemetry"]
    assert telemetry["optimizer_steps"] == 3 and telemetry["source_tokens_per_s"] > 0
    assert telemetry["grad_norm_last"] == pytest.approx(float(rows[-1]["train/grad_norm"]))
    card = (run / "hf_model" / "README.md").read_text()
    tokens = f"{telemetry['source_tokens_per_s']:.0f} source + {telemetry['target_tokens_per_s']:.0f} target tokens/s"
    assert tokens in card
