"""LightningModule for Pegasus gap-sentence pretraining: the summarization loss on the gap sentences, plus the
encoder's masked-token loss when the data masks tokens (`data.objective.mlm_probability`)."""

from typing import Any

import torch
import torch.nn.functional as F

from .summarization import SummarizationModule


class GapSentencePretrainingModule(SummarizationModule):
    """Seq2seq pretraining on `lsgtrain.data.pretraining.GapSentenceDataModule` batches.

    The decoder learns the gap sentences exactly as a summary (validation generates them for the ROUGE callback);
    with MLM, the tied output layer also predicts each `<mask_2>` token from the encoder's output at its position,
    and the loss is the mean over every predicted token of both.
    """

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value for key, value in super().model_inputs(batch).items() if key != "mlm_labels"}

    def _loss_terms(
        self, output: Any, labels: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, tokens = super()._loss_terms(output, labels, batch)
        if "mlm_labels" not in batch:
            return loss_sum, tokens
        length = batch["input_ids"].shape[1]
        encoded = output.encoder_last_hidden_state[:, -length:]  # without the global tokens passed to the decoder
        mlm_labels = F.pad(batch["mlm_labels"], (0, length - batch["mlm_labels"].shape[1]), value=-100)
        chosen = mlm_labels != -100
        logits = self.model.lm_head(encoded[chosen]) + self.model.final_logits_bias
        mlm_sum = F.cross_entropy(logits.float(), mlm_labels[chosen], reduction="sum")
        return loss_sum + mlm_sum, tokens + chosen.sum()
