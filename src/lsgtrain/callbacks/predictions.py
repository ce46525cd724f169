"""The predictions files of classification runs (`predictions/{stage}[_epoch{E}|_step{S}].jsonl`), in the format every
lsgtrain predictions file has (`lsgtrain.metrics.predictions`), and the DDP gathering the ROUGE callback shares."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from ..metrics.predictions import prediction_row, write_predictions
from .validation_schedule import ValidationSchedule


def gather_by_index(trainer: Trainer, predictions: dict[int, Any]) -> dict[int, Any]:
    """Every rank's `{document index: prediction}` on every rank; a document the distributed sampler repeated to
    even out the shards counts once."""
    if not (dist.is_available() and dist.is_initialized() and trainer.world_size > 1):
        return predictions
    shards: list[dict[int, Any]] = [{} for _ in range(trainer.world_size)]
    dist.all_gather_object(shards, predictions)
    return {index: value for shard in shards for index, value in shard.items()}


def predictions_file(folder: Path, trainer: Trainer, stage: str) -> Path:
    """`{stage}.jsonl` for the test and a validation run on its own (`trainer.validate`); during training
    `val_step{S}.jsonl` for a validation of the step schedule (`ValidationSchedule.every_n_steps`), else
    `val_epoch{E}.jsonl`."""
    if trainer.state.fn != "fit":
        return folder / f"{stage}.jsonl"
    if any(c.step_due for c in trainer.callbacks if isinstance(c, ValidationSchedule)):
        return folder / f"{stage}_step{trainer.global_step}.jsonl"
    return folder / f"{stage}_epoch{trainer.current_epoch}.jsonl"


def label_values(predicted: torch.Tensor, labels: Sequence[Any]) -> list[Any]:
    """The label values of a classifier's predictions (`tasks.classification.class_predictions`): one per class id,
    or, for multi-label probabilities, the list of those above 0.5 (thresholded as the metrics are). A run's
    predictions files and `lsgtrain predict` both name labels through it."""
    if predicted.is_floating_point():
        return [[labels[j] for j in row.nonzero().flatten().tolist()] for row in predicted > 0.5]
    return [labels[j] for j in predicted.tolist()]


class LabelPredictions(Callback):
    """Writes a classification run's validation and test predictions: `{"id", "prediction", "reference",
    "correct"}` per document, `prediction` / `reference` being label values (lists of them for multi-label data).

    The module's evaluation steps return `{"loss", "predictions"}` (class ids, or multi-label probabilities).

    Args:
        predictions_dir: where to write them.
    """

    def __init__(self, predictions_dir: str):
        self.predictions_dir = Path(predictions_dir)
        self._predictions: dict[int, Any] = {}
        self.lengths: dict[str, int | None] = {}  # `lsgtrain eval`'s evaluated / trained lengths, in every row

    def _collect(self, trainer: Trainer, outputs: Any, batch: dict[str, torch.Tensor]) -> None:
        if trainer.sanity_checking:
            return
        values = label_values(outputs["predictions"], trainer.datamodule.labels)
        self._predictions.update(zip(batch["idx"].tolist(), values, strict=True))

    def _write(self, trainer: Trainer, stage: str) -> None:
        predictions, self._predictions = gather_by_index(trainer, self._predictions), {}
        if trainer.sanity_checking or not predictions or not trainer.is_global_zero:
            return
        references = trainer.datamodule.references(stage)
        rows = []
        for index in sorted(predictions):
            predicted, reference = predictions[index], references[index]
            correct = set(predicted) == set(reference) if isinstance(predicted, list) else predicted == reference
            rows.append(prediction_row(index, predicted, reference, {"correct": correct, **self.lengths}))
        write_predictions(predictions_file(self.predictions_dir, trainer, stage), rows)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._predictions = {}

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, outputs, batch)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "val")

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._predictions = {}

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, outputs, batch)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "test")
