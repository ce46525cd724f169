"""Generation-based ROUGE on the validation (every N epochs or steps, on a sample) and test sets, exact under DDP."""

import logging
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from typing_extensions import override

from ..metrics.evaluation import SummaryEvaluation, evaluate_summaries
from ..metrics.predictions import prediction_row, write_predictions
from ..tasks.summarization import decode_summaries
from .predictions import gather_by_index, predictions_file
from .validation_schedule import ValidationSchedule

logger = logging.getLogger(__name__)


class RougeEvaluation(ValidationSchedule):
    """Generates a summary for every evaluated document, then logs `stage/rouge1|rouge2|rougeL|rougeLsum`.

    Each rank generates for its shard; predictions are gathered, de-duplicated by document index (the distributed
    sampler repeats a few documents to even out the shards) and scored on every rank, so each document counts
    exactly once. Predictions, references and each row's ROUGE are written (`lsgtrain.metrics.predictions`) to
    `predictions_dir/{stage}.jsonl` (test, and a validation run on its own: `trainer.validate`), `val_epoch{E}.jsonl`
    or `val_step{S}.jsonl` (during training).

    During training, ROUGE can run on a fixed sample of the validation split (`max_samples`, drawn once with `seed`)
    and decode with `val_generation` (e.g. greedy, fewer new tokens); the loss is still computed on every validation
    batch (the whole split, or `trainer.limit_val_batches`). The test, `trainer.validate` (the entry's final scoring
    of the best checkpoint) and the export always use the whole split and `module.generation`.

    Beside it, the lead baseline of the same documents, `stage/lead_rouge1|...` (each document's first N words, N the
    median word count of their references, logged as `stage/lead_words`; `lsgtrain.metrics.rouge.lead_baseline`):
    the reference point summarization papers give: a model below it does worse than copying the opening.

    Each ROUGE comes with its 95% bootstrap interval (`stage/rouge1_low` / `_high`, the lead's too), resampled from
    the gathered per-document scores with `bootstrap_seed` (so DDP equals one process); with the source documents,
    the length and abstractiveness statistics of the summaries, the lead and the references (`stage/stats/...`, also
    in each predictions row) and ROUGE by source length (`stage/len_{bucket}/...`): `lsgtrain.metrics.evaluation`.
    The last evaluation of each stage stays in `evaluations` (the figures are drawn from it).

    Args:
        every_n_epochs: ROUGE at the end of every N epochs (and of the last one); None: only on the step schedule.
        every_n_steps: validate, with ROUGE, every N optimizer steps too (`ValidationSchedule`).
        max_samples: ROUGE during training on this many validation documents (None: all of them).
        seed: draws the `max_samples` documents (the same ones at every validation and after a resume).
        predictions_dir: where to write predictions (None: do not write).
        val_generation: `generate` keyword arguments overriding `module.generation` during training only.
        lead_baseline: also score and log the lead baseline (on the documents ROUGE scored: the sample, if any).
        bootstrap_resamples: resamples of each 95% bootstrap interval.
        bootstrap_seed: seeds them (the same scores always get the same interval).
    """

    def __init__(
        self,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        max_samples: int | None = None,
        seed: int | None = 0,
        predictions_dir: str | None = None,
        val_generation: dict[str, Any] | None = None,
        lead_baseline: bool = True,
        bootstrap_resamples: int = 1000,
        bootstrap_seed: int = 0,
    ):
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"callbacks.rouge.every_n_epochs must be >= 1 or null, got {every_n_epochs}")
        if every_n_epochs is None and every_n_steps is None:
            raise ValueError(
                "callbacks.rouge.every_n_epochs and callbacks.rouge.every_n_steps are both null: ROUGE would run "
                "only at the last epoch; set one of them"
            )
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"callbacks.rouge.max_samples must be >= 1 or null, got {max_samples}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"callbacks.rouge.every_n_steps must be >= 1 or null, got {every_n_steps}")
        if bootstrap_resamples < 1:
            raise ValueError(f"callbacks.rouge.bootstrap_resamples must be >= 1, got {bootstrap_resamples}")
        super().__init__(every_n_steps=every_n_steps)
        self.every_n_epochs = every_n_epochs
        self.max_samples = max_samples
        self.seed = 0 if seed is None else seed
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self.val_generation = dict(val_generation or {})
        self.lead_baseline = lead_baseline
        self.bootstrap_resamples = bootstrap_resamples
        self.bootstrap_seed = bootstrap_seed
        self.evaluations: dict[str, SummaryEvaluation] = {}  # the last evaluation of each stage
        self._source_tokens: dict[str, list[int]] = {}  # per stage, each document's length in tokens, untruncated
        self._predictions: dict[int, str] = {}
        self.lengths: dict[str, int | None] = {}  # `lsgtrain eval`'s evaluated / trained lengths, in every row
        self._active = False
        self._sample: set[int] | None = None  # document indices ROUGE runs on during training (None: all)
        self._pending: list[dict[str, torch.Tensor]] = []  # sampled documents waiting for a full batch

    @property
    def reduced(self) -> bool:
        """Whether validation during training differs from the final scoring (a sample, or another decoding)."""
        return self.max_samples is not None or bool(self.val_generation)

    @property
    @override
    def computes_metric(self) -> bool:
        return self._active

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.lead_baseline and not hasattr(trainer.datamodule, "documents"):
            raise ValueError(
                f"callbacks.rouge.lead_baseline=true, but {type(trainer.datamodule).__name__} has no source documents "
                "to take the lead of (gap-sentence pretraining masks them); set callbacks.rouge.lead_baseline=false"
            )
        super().setup(trainer, pl_module, stage)

    def _training(self, trainer: Trainer) -> bool:
        return trainer.state.fn == "fit"

    def _should_run(self, trainer: Trainer, stage: str) -> bool:
        if stage == "test" or not self._training(trainer):
            return True
        if trainer.sanity_checking:
            return False
        if self.step_due or trainer.fast_dev_run:
            return True
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return False  # a mid-epoch validation that is not the step schedule's (early stopping's last one)
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        return last_epoch or (
            self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def _sampled(self, trainer: Trainer, stage: str) -> set[int] | None:
        """The validation documents ROUGE runs on during training: `max_samples` of them, drawn once."""
        if stage != "val" or self.max_samples is None or not self._training(trainer):
            return None
        if self._sample is None:
            count = len(trainer.datamodule.references("val"))
            order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
            self._sample = set(order[: self.max_samples].tolist())
            logger.info("ROUGE during training on %d of the %d validation documents", len(self._sample), count)
        return self._sample

    def _start(self, trainer: Trainer, stage: str) -> None:
        self._predictions = {}
        self._pending = []
        self._active = self._should_run(trainer, stage)

    def _collect(
        self, trainer: Trainer, pl_module: LightningModule, batch: dict[str, torch.Tensor], stage: str
    ) -> None:
        if not self._active:
            return
        sample = self._sampled(trainer, stage)
        if sample is None:
            self._generate(trainer, pl_module, batch, stage)
            return
        keep = torch.tensor([i in sample for i in batch["idx"].tolist()])
        if keep.any():
            self._pending.append({key: value[keep.to(value.device)] for key, value in batch.items()})
        if sum(len(part["idx"]) for part in self._pending) >= len(batch["idx"]):
            self._flush(trainer, pl_module, stage)

    def _flush(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Generate for the sampled documents gathered so far, as one batch (re-padded to its longest source)."""
        if not self._pending:
            return
        length = max(part["attention_mask"].sum(dim=1).max().item() for part in self._pending)
        batch = {
            "idx": torch.cat([part["idx"] for part in self._pending]),
            "input_ids": torch.cat([_pad(part["input_ids"], length, trainer.datamodule.tokenizer.pad_token_id)
                                    for part in self._pending]),
            "attention_mask": torch.cat([_pad(part["attention_mask"], length, 0) for part in self._pending]),
        }  # fmt: skip
        self._pending = []
        self._generate(trainer, pl_module, batch, stage)

    def _generate(self, trainer: Trainer, pl_module: LightningModule, batch: dict[str, torch.Tensor], stage: str):
        overrides = self.val_generation if stage == "val" and self._training(trainer) else {}
        texts = decode_summaries(trainer.datamodule.tokenizer, pl_module.generate(batch, **overrides))
        self._predictions.update(zip(batch["idx"].tolist(), texts, strict=True))

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self._active:
            return
        self._flush(trainer, pl_module, stage)
        predictions = gather_by_index(trainer, self._predictions)
        references = trainer.datamodule.references(stage)
        sample = self._sampled(trainer, stage)
        expected = len(references) if sample is None else len(sample)
        order = sorted(predictions)
        if len(order) != expected and not (trainer.fast_dev_run or _limited(trainer, stage)):
            raise RuntimeError(f"{stage}: {len(order)} predictions for {expected} documents")
        evaluation = self._evaluate(trainer, stage, order, [predictions[i] for i in order], references)
        for name, value in evaluation.metrics(stage).items():  # every rank holds every document: no sync
            pl_module.log(name, value, prog_bar=name == f"{stage}/rougeLsum", sync_dist=False)
        scores = _format(evaluation.rouge, evaluation.intervals)
        logger.info("%s ROUGE over %d documents (95%% bootstrap intervals): %s", stage, len(order), scores)
        if evaluation.lead is not None:
            logger.info("%s lead baseline (first %d words of each document): %s", stage, evaluation.lead_words,
                        _format(evaluation.lead, evaluation.lead_intervals))  # fmt: skip
        self.evaluations[stage] = evaluation
        if self.predictions_dir is not None and trainer.is_global_zero:
            rows = [prediction_row(i, predictions[i], references[i],
                                   {**rouge, **evaluation.row_statistics(k), **self.lengths})
                    for k, (i, rouge) in enumerate(zip(order, evaluation.per_document, strict=True))]  # fmt: skip
            write_predictions(predictions_file(self.predictions_dir, trainer, stage), rows)
        self._predictions = {}

    def _evaluate(
        self, trainer: Trainer, stage: str, order: list[int], texts: list[str], references: list[str]
    ) -> SummaryEvaluation:
        """`evaluate_summaries` of the documents `order` (with the lead baseline, statistics and length buckets when
        the datamodule has the source documents)."""
        targets = [references[i] for i in order]
        settings = {"resamples": self.bootstrap_resamples, "seed": self.bootstrap_seed}
        if not self.lead_baseline:
            return evaluate_summaries(texts, targets, **settings)
        datamodule = trainer.datamodule
        documents = datamodule.documents(stage)
        if stage not in self._source_tokens:
            self._source_tokens[stage] = _token_counts(datamodule.tokenizer, documents)
        return evaluate_summaries(
            texts, targets, [documents[i] for i in order],
            count_tokens=lambda summaries: _token_counts(datamodule.tokenizer, summaries, add_special_tokens=False),
            source_tokens=[self._source_tokens[stage][i] for i in order], truncation=datamodule.max_source_length,
            **settings,
        )  # fmt: skip

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, "val")

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, pl_module, batch, "val")

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, "test")

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, pl_module, batch, "test")

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "test")


def validated_on_less(trainer: Trainer) -> bool:
    """Whether this trainer's ROUGE evaluation validated during training on less than the final scoring does (a
    sample, or another decoding: `RougeEvaluation.reduced`); the entry then scores the best checkpoint again on the
    whole validation split."""
    return any(isinstance(callback, RougeEvaluation) and callback.reduced for callback in trainer.callbacks)


def _token_counts(tokenizer, texts: list[str], **kwargs: Any) -> list[int]:
    """Each text's length in the model's tokens."""
    return [len(ids) for ids in tokenizer(texts, verbose=False, **kwargs)["input_ids"]]


def _pad(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    """Right-pad (or cut the padding of) `[n, s]` to `[n, length]`; the collator pads on the right."""
    if tensor.shape[1] >= length:
        return tensor[:, :length]
    return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]), value=value)  # [n, length]


def _limited(trainer: Trainer, stage: str) -> bool:
    limit = trainer.limit_val_batches if stage == "val" else trainer.limit_test_batches
    return limit != 1.0


def _format(scores: dict[str, float], intervals: dict[str, tuple[float, float]]) -> str:
    return " ".join(f"{name}={value:.2f} [{intervals[name][0]:.2f}, {intervals[name][1]:.2f}]"
                    for name, value in scores.items())  # fmt: skip
