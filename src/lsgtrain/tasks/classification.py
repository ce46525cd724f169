"""LightningModule for long-document classification: single-label or multi-label, accuracy and F1."""

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, F1Score

from .base import LongDocumentModule


def classification_metrics(*, num_labels: int, multi_label: bool) -> MetricCollection:
    """Accuracy, macro-F1 and micro-F1 as training logs them (`acc`, `f1_macro`, `f1_micro`); `lsgtrain predict`
    scores an exported model with the same collection. Multi-label inputs are probabilities, thresholded at 0.5."""
    if multi_label:
        task = {"task": "multilabel", "num_labels": num_labels}
    else:
        task = {"task": "multiclass", "num_classes": num_labels}
    return MetricCollection(
        {
            "acc": Accuracy(**task, average="micro"),
            "f1_macro": F1Score(**task, average="macro"),
            "f1_micro": F1Score(**task, average="micro"),
        }
    )


def class_predictions(logits: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """What a classifier predicts from its logits `[n, num_labels]`: class ids `[n]`, or multi-label probabilities
    `[n, num_labels]` (thresholded at 0.5 by the metrics and `callbacks.predictions.label_values`). Training and
    `lsgtrain predict` both read a classifier's output through it."""
    return torch.sigmoid(logits) if multi_label else logits.argmax(dim=-1)


class ClassificationModule(LongDocumentModule):
    """Fine-tunes `LSGPegasusForSequenceClassification`; logs `stage/acc`, `stage/f1_macro`, `stage/f1_micro`.

    Multi-label runs (model `problem_type="multi_label_classification"`) threshold sigmoid outputs at 0.5.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        metrics = classification_metrics(
            num_labels=self.model.config.num_labels,
            multi_label=self.model.config.problem_type == "multi_label_classification",
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def on_train_start(self) -> None:
        super().on_train_start()
        self.val_metrics.reset()  # sanity-check batches must not count

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training step's loss on one batch, without logging or metrics: what the batch probe
        (`lsgtrain.callbacks.batch_size`) measures a step's memory and time with."""
        return self.model_forward(**self.model_inputs(batch)).loss

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """The loss, and the batch's predictions (class ids, or multi-label probabilities) that
        `callbacks.LabelPredictions` writes."""
        out = self.model_forward(**self.model_inputs(batch))
        labels = batch["labels"]
        self._log_loss(out.loss, stage, batch_size=labels.shape[0])
        multi_label = self.model.config.problem_type == "multi_label_classification"
        preds = class_predictions(out.logits, multi_label=multi_label)
        target = labels.long() if multi_label else labels
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(preds, target)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=labels.shape[0])
        return {"loss": out.loss, "predictions": preds.detach()}
