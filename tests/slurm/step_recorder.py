"""A test callback that writes one line per optimizer step: its number and the documents it trained on."""

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback


class StepRecorder(Callback):
    """Appends `{"step", "rank", "idx", "grad_norm", "node"}` to `path` before each optimizer step (`node`: the SLURM
    node); `delay_s` slows steps down so a test can signal or kill a run in the middle of an epoch."""

    def __init__(self, path: str, delay_s: float = 0.0):
        self.path = Path(path)
        self.delay_s = delay_s
        self._batch: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch: dict[str, Any], batch_idx: int) -> None:
        self._batch = batch["idx"].tolist()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # the gradient norm fingerprints the step's computation: weights, batch and dropout masks
        grad_norm = sum(float(p.grad.norm()) ** 2 for p in pl_module.parameters() if p.grad is not None) ** 0.5
        record = {"step": trainer.global_step + 1, "rank": trainer.global_rank, "idx": self._batch,
                  "grad_norm": grad_norm, "node": os.environ.get("SLURMD_NODENAME")}  # fmt: skip
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        time.sleep(self.delay_s)


def read_steps(path: Path, rank: int = 0) -> list[dict]:
    """The recorded steps of one rank, in the order they were taken."""
    return [row for row in map(json.loads, path.read_text().splitlines()) if row["rank"] == rank]


def assert_same_steps(steps: list[dict], expected: list[dict]) -> None:
    """Same step numbers on the same documents, with the same gradient norms (to float noise)."""
    assert [(r["step"], r["rank"], r["idx"]) for r in steps] == [(r["step"], r["rank"], r["idx"]) for r in expected]
    assert [r["grad_norm"] for r in steps] == pytest.approx([r["grad_norm"] for r in expected], rel=1e-5)


class ValidationRecorder(Callback):
    """Appends `{"step", "batch"}` to `path` after each validation batch during fit (not the sanity check) and sleeps
    `delay_s`, so a test can signal a run in the middle of its validation."""

    def __init__(self, path: str, delay_s: float = 0.0):
        self.path = Path(path)
        self.delay_s = delay_s

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx=0) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        with self.path.open("a") as file:
            file.write(json.dumps({"step": trainer.global_step, "batch": batch_idx}) + "\n")
        time.sleep(self.delay_s)


class LossRecorder(Callback):
    """Appends `{"step", "rank", "loss"}` to `path` after each training batch: the loss each process computed."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        record = {"step": trainer.global_step, "rank": trainer.global_rank, "loss": float(outputs["loss"])}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


class LogitsRecorder(Callback):
    """At the end of fit (after the export has loaded the best weights), saves the model's logits on a fixed input
    to `path` (from the first process; every process runs the forward, which a sharded model needs)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_fit_end(self, trainer, pl_module) -> None:
        ids = torch.arange(5, 69).reshape(2, 32) % pl_module.model.config.vocab_size
        pl_module.eval()
        with torch.no_grad():
            logits = pl_module.model(input_ids=ids, decoder_input_ids=ids[:, :8]).logits
        if trainer.is_global_zero:
            torch.save({"input_ids": ids, "logits": logits.cpu()}, self.path)
