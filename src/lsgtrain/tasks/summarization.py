"""LightningModule for LSG-Pegasus summarization: teacher-forced loss; generation for the ROUGE callback."""

from typing import Any

import torch
import torch.nn.functional as F

from .base import LongDocumentModule


class SummarizationModule(LongDocumentModule):
    """Seq2seq fine-tuning with (optionally label-smoothed) cross-entropy.

    Args:
        label_smoothing: label smoothing of the token cross-entropy (0 = plain).
        generation: keyword arguments of `generate` for evaluation (num_beams, max_new_tokens, length_penalty,
            no_repeat_ngram_size, ...).
        **kwargs: see `LongDocumentModule`.
    """

    def __init__(self, *, label_smoothing: float = 0.0, generation: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing
        self.generation = dict(generation or {})

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs = self.model_inputs(batch)
        labels = inputs.pop("labels")
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels)
        logits = self.model(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).logits  # [n, m, V]
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing
        )
        self._log_loss(loss, stage, batch_size=labels.shape[0])
        return loss

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], **overrides: Any) -> torch.Tensor:
        """Summary token ids `[n, m]` for a batch, with the module's generation settings (and `overrides`)."""
        return self.model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **{**self.generation, **overrides}
        )
