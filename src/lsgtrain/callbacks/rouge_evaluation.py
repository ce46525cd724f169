"""Generation-based ROUGE on the validation (every N epochs) and test sets, exact under DDP."""

import logging
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from ..metrics.predictions import prediction_row, write_predictions
from ..metrics.rouge import lead_baseline, mean_rouge, score_documents
from .predictions import gather_by_index, predictions_file

logger = logging.getLogger(__name__)


class RougeEvaluation(Callback):
    """Generates a summary for every evaluated document, then logs `stage/rouge1|rouge2|rougeL|rougeLsum`.

    Each rank generates for its shard; predictions are gathered, de-duplicated by document index (the distributed
    sampler repeats a few documents to even out the shards) and scored on every rank, so each document counts
    exactly once. Predictions, references and each row's ROUGE are written to
    `predictions_dir/{stage}[_epoch{N}].jsonl` (`lsgtrain.metrics.predictions`).

    Beside it, the lead baseline of the same documents, `stage/lead_rouge1|...` (each document's first N words, N the
    median word count of their references, logged as `stage/lead_words`; `lsgtrain.metrics.rouge.lead_baseline`):
    the reference point summarization papers give: a model below it does worse than copying the opening.

    Args:
        every_n_epochs: run on the validation set every N epochs (and at the last epoch); the test set always.
        predictions_dir: where to write predictions (None: do not write).
        generation: `generate` keyword arguments overriding the module's `generation` settings.
        lead_baseline: also score and log the lead baseline.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        predictions_dir: str | None = None,
        generation: dict[str, Any] | None = None,
        lead_baseline: bool = True,
    ):
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.rouge.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self.generation = dict(generation or {})
        self.lead_baseline = lead_baseline
        self._predictions: dict[int, str] = {}
        self._active = False

    def _should_run(self, trainer: Trainer, stage: str) -> bool:
        if stage == "test" or trainer.state.fn == "validate":
            return True
        if trainer.sanity_checking:
            return False
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0 or last_epoch or bool(trainer.fast_dev_run)

    def _start(self, trainer: Trainer, stage: str) -> None:
        self._predictions = {}
        self._active = self._should_run(trainer, stage)

    def _collect(self, trainer: Trainer, pl_module: LightningModule, batch: dict[str, torch.Tensor]) -> None:
        if not self._active:
            return
        generated = pl_module.generate(batch, **self.generation)
        texts = trainer.datamodule.tokenizer.batch_decode(generated, skip_special_tokens=True)
        self._predictions.update(zip(batch["idx"].tolist(), (t.strip() for t in texts), strict=True))

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self._active:
            return
        predictions = gather_by_index(trainer, self._predictions)
        references = trainer.datamodule.references(stage)
        order = sorted(predictions)
        if len(order) != len(references) and not (trainer.fast_dev_run or _limited(trainer, stage)):
            raise RuntimeError(f"{stage}: {len(order)} predictions for {len(references)} documents")
        texts, targets = [predictions[i] for i in order], [references[i] for i in order]
        per_document = score_documents(texts, targets)
        scores = mean_rouge(per_document)
        for name, value in scores.items():
            pl_module.log(f"{stage}/{name}", value, prog_bar=name == "rougeLsum", sync_dist=False)
        logger.info("%s ROUGE over %d documents: %s", stage, len(order), _format(scores))
        if self.lead_baseline:
            self._log_lead_baseline(trainer, pl_module, stage, order, references)
        if self.predictions_dir is not None and trainer.is_global_zero:
            rows = [prediction_row(i, predictions[i], references[i], rouge)
                    for i, rouge in zip(order, per_document, strict=True)]  # fmt: skip
            write_predictions(predictions_file(self.predictions_dir, trainer, stage), rows)
        self._predictions = {}

    def _log_lead_baseline(
        self, trainer: Trainer, pl_module: LightningModule, stage: str, order: list[int], references: list[str]
    ) -> None:
        """Log the lead baseline of the documents just scored (every rank holds them all, so no sync)."""
        documents = trainer.datamodule.documents(stage)
        words, scores = lead_baseline([documents[i] for i in order], [references[i] for i in order])
        for name, value in scores.items():
            pl_module.log(f"{stage}/lead_{name}", value, sync_dist=False)
        pl_module.log(f"{stage}/lead_words", float(words), sync_dist=False)
        logger.info("%s lead baseline (first %d words of each document): %s", stage, words, _format(scores))

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, "val")

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, pl_module, batch)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, "test")

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, pl_module, batch)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "test")


def _limited(trainer: Trainer, stage: str) -> bool:
    limit = trainer.limit_val_batches if stage == "val" else trainer.limit_test_batches
    return limit != 1.0


def _format(scores: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.2f}" for name, value in scores.items())
