"""LightningModule for LSG-Pegasus summarization: teacher-forced loss; the one generation of summaries (the ROUGE
callback's and `lsgtrain predict`'s)."""

import difflib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..arguments import ConfigError, check_number
from .base import LongDocumentModule

# `module.generation.<key>`: what generate() cannot take (kind, smallest value, an example); the rest it checks itself
GENERATION_NUMBERS = {
    "num_beams": (int, 1, "4"),
    "max_new_tokens": (int, 1, "256"),
    "min_new_tokens": (int, 0, "0"),
    "no_repeat_ngram_size": (int, 0, "3"),
    "length_penalty": (float, None, "1.0"),
}


def check_generation(key: str, settings: Mapping[str, Any]) -> None:
    """Raise `ConfigError` for `generate` settings at `key` (`module.generation`, the ROUGE callback's
    `val_generation`) that generation would refuse or misread, before any data work: a name `GenerationConfig` does
    not know (a typo, with the closest name), a number out of range, `min_new_tokens` above `max_new_tokens`."""
    known = GenerationConfig().to_dict()
    for name, value in settings.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f"did you mean {key}.{close[0]}? " if close else ""
            raise ConfigError(f"{key}.{name} is not a generation setting (transformers' GenerationConfig); {hint}"
                              "remove it or fix its name")  # fmt: skip
        if name in GENERATION_NUMBERS:
            check_number(f"{key}.{name}", value, *GENERATION_NUMBERS[name])
    shortest, longest = settings.get("min_new_tokens"), settings.get("max_new_tokens")
    if shortest is not None and longest is not None and shortest > longest:
        raise ConfigError(
            f"{key}.min_new_tokens={shortest} is above {key}.max_new_tokens={longest}: no summary can be both; "
            f"lower {key}.min_new_tokens or raise {key}.max_new_tokens"
        )


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

    @classmethod
    def check_arguments(
        cls, *, label_smoothing: float = 0.0, generation: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().check_arguments(**kwargs)
        check_number("module.label_smoothing", label_smoothing, float, 0, "0.1", below=1)  # 1: the uniform target
        check_generation("module.generation", generation or {})

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        loss_sum, tokens, rows = self._step_terms(batch)
        loss = loss_sum / tokens
        self._log_loss(loss.detach(), stage, batch_size=rows)
        if stage == "train" and self.trainer.world_size > 1:
            loss = self._global_token_mean(loss_sum, tokens)
        return loss

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training step's loss on one batch as one process computes it, without logging or the mean across
        ranks: the batch probe (`lsgtrain.callbacks.batch_size`) measures a step's memory and time with it."""
        loss_sum, tokens, _ = self._step_terms(batch)
        return loss_sum / tokens

    def _step_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The forward of a step: the summed token loss, the tokens it sums over and the batch's rows."""
        inputs = self.model_inputs(batch)
        labels = inputs.pop("labels")
        if (
            self.hparams.compile
        ):  # target lengths in buckets, as the collator pads sources (model_forward); -100: no loss
            block = self.model.config.block_size
            labels = F.pad(labels, (0, -labels.shape[1] % block), value=-100)  # [n, m rounded up to blk]
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels)
        output = self.model_forward(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False)
        loss_sum, tokens = self._loss_terms(output, labels, batch)
        return loss_sum, tokens, labels.shape[0]

    def _loss_terms(
        self, output: Any, labels: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed token cross-entropy of the model's output and the number of tokens it sums over."""
        loss_sum = F.cross_entropy(
            output.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
            label_smoothing=self.label_smoothing, reduction="sum",
        )  # fmt: skip
        return loss_sum, (labels != -100).sum()

    def _global_token_mean(self, loss_sum: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The step's loss as the mean over every target token of every rank, as one process with the whole batch.

        DDP averages gradients over ranks, so each rank returns `world * its token sum / all tokens`: a rank whose
        summaries are longer weighs more, and 2 ranks x batch 1 train exactly like 1 process x batch 2.
        """
        all_tokens = self.trainer.strategy.reduce(tokens.detach().float().clone(), reduce_op="sum")
        return loss_sum * self.trainer.world_size / all_tokens

    def generation_settings(self, **overrides: Any) -> dict[str, Any]:
        """The `generate` keyword arguments used with `overrides` (e.g. the ROUGE callback's): the module's settings
        updated by them. The export writes the same ones to `generation_config.json`."""
        return {**self.generation, **overrides}

    def generate(self, batch: Mapping[str, torch.Tensor], **overrides: Any) -> torch.Tensor:
        """Summary token ids `[n, m]` for a batch, with the module's generation settings (and `overrides`)."""
        return generate_ids(self.model, batch, self.generation_settings(**overrides))


@torch.no_grad()
def generate_ids(
    model: PreTrainedModel, batch: Mapping[str, torch.Tensor], settings: Mapping[str, Any]
) -> torch.Tensor:
    """Summary token ids `[n, m]` of a batch (`input_ids`, `attention_mask`): `model.generate` with `settings` over
    the model's `generation_config`.

    With `decode_summaries`, the one generation of summaries: validation and test (the ROUGE callback, through
    `SummarizationModule.generate`) and `lsgtrain predict` call both, so a model given the same inputs and settings
    writes the same summaries wherever it runs (why `predict` calls functions, not `trainer.predict`: its docstring).
    """
    return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings)


def decode_summaries(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> list[str]:
    """The texts of generated ids `[n, m]`: special tokens dropped, whitespace stripped (see `generate_ids`)."""
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
