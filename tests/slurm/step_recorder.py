"""A test callback that writes one line per optimizer step: its number and the documents it trained on."""

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class StepRecorder(Callback):
    """Appends `{"step", "rank", "idx"}` to `path` before each optimizer step; `delay_s` slows steps down so a
    test can signal or kill a run in the middle of an epoch."""

    def __init__(self, path: str, delay_s: float = 0.0):
        self.path = Path(path)
        self.delay_s = delay_s
        self._batch: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch: dict[str, Any], batch_idx: int) -> None:
        self._batch = batch["idx"].tolist()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        record = {"step": trainer.global_step + 1, "rank": trainer.global_rank, "idx": self._batch}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        time.sleep(self.delay_s)


def read_steps(path: Path, rank: int = 0) -> list[dict]:
    """The recorded steps of one rank, in the order they were taken."""
    return [row for row in map(json.loads, path.read_text().splitlines()) if row["rank"] == rank]
