"""Gap-sentence pretraining data: any document collection (a text column only) -> Pegasus GSG examples.

Tokenising (cached like every split) splits each document into sentences, packs them into windows of
`max_source_length` tokens and scores them (`lsgtrain.data.gap_sentences`); the masks are drawn when a batch is
made: training examples from (seed, epoch, window), so each epoch masks anew and a resumed run masks as the
uninterrupted one would; validation and test examples from (seed, window) only, a fixed sample whose gap sentences
are the references of the ROUGE callback.
"""

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader

from ..arguments import check_number
from .datamodule import LongDocumentDataModule, pad_labels
from .gap_sentences import MASK_SENTENCE_ID, MASK_TOKEN_ID, GapSentenceObjective, pack_windows, sentence_scores
from .gap_sentences import split_sentences as document_sentences

FIXED_MASKS = -1  # the "epoch" of validation and test examples


class GapSentenceExamples(torch.utils.data.Dataset):
    """Draws a gap-sentence example from each tokenised window; keys are indices or `(epoch, index)` pairs."""

    def __init__(self, windows: Dataset, datamodule: "GapSentenceDataModule"):
        self.windows = windows
        self.datamodule = datamodule

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (FIXED_MASKS, key)
        return {**self.datamodule.draw(self.windows[index], epoch, index), "idx": index}


class GapSentenceDataModule(LongDocumentDataModule):
    """Pegasus gap-sentence generation on the documents of any source (`text_column` only).

    Args:
        objective: `GapSentenceObjective` settings (gap_ratio, strategy, stochastic, gap_ratio_range, score_noise,
            mlm_probability, intact_probability).
        max_target_length: tokens of the gap-sentence target (longer targets are truncated).
        max_windows: windows kept per document, from its start (None: all; 1: the document truncated to
            `max_source_length`, as fine-tuning reads it).
        train_split_only: pretrain on the data's train split alone, dropping its val/test (validation is then held
            out from train with `val_fraction`), so a model fine-tuned later on the same corpus is evaluated on
            documents it never saw.
        **kwargs: see `LongDocumentDataModule`.
    """

    def __init__(
        self,
        *,
        objective: Mapping[str, Any] | None = None,
        max_target_length: int = 256,
        max_windows: int | None = None,
        train_split_only: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        options = dict(objective or {})
        if "gap_ratio_range" in options:
            options["gap_ratio_range"] = tuple(options["gap_ratio_range"])
        self.objective = GapSentenceObjective(**options)
        check_number("data.max_target_length", max_target_length, int, 1, "256")
        self.max_target_length = max_target_length
        if max_windows is not None and max_windows < 1:
            raise ValueError(f"data.max_windows={max_windows} must be >= 1 (or null: every window of a document)")
        self.max_windows = max_windows
        self.train_split_only = train_split_only

    def select_splits(self, raw: DatasetDict) -> DatasetDict:
        return DatasetDict({"train": raw["train"]}) if self.train_split_only else raw

    def _check_tokenizer(self) -> None:
        """Pegasus' mask ids must be the tokenizer's `<mask_1>` / `<mask_2>`, or gaps would read as text."""
        vocab = self.tokenizer.get_vocab()
        for name, expected in (("<mask_1>", MASK_SENTENCE_ID), ("<mask_2>", MASK_TOKEN_ID)):
            if vocab.get(name) != expected:
                raise ValueError(
                    f"gap-sentence pretraining needs Pegasus' {name} at id {expected}, but the tokenizer "
                    f"{self.tokenizer.name_or_path} has it at {vocab.get(name)}; use a Pegasus tokenizer (a trained "
                    "one has this layout)"
                )

    def encode(self, rows: dict[str, list]) -> dict[str, list]:
        """One row per window: its sentences' token ids (flat, `input_ids`), their lengths and ROUGE-1 scores; the
        text column holds the window's text, the other columns are the document's."""
        self._check_tokenizer()
        budget = self.max_source_length - 1  # room for eos
        out: dict[str, list] = {key: [] for key in [*rows, "input_ids", "sentence_lengths", "scores"]}
        for row in range(len(rows[self.text_column])):
            sentences = document_sentences(rows[self.text_column][row])
            ids = self.tokenizer(sentences, add_special_tokens=False).input_ids if sentences else []
            kept = [(text, tokens[:budget]) for text, tokens in zip(sentences, ids, strict=True) if tokens]
            windows = pack_windows([len(tokens) for _, tokens in kept], budget)
            for start, end in windows[: self.max_windows]:
                window = kept[start:end]
                for key in rows:
                    out[key].append(rows[key][row])
                out[self.text_column][-1] = " ".join(text for text, _ in window)
                out["input_ids"].append([token for _, tokens in window for token in tokens])
                out["sentence_lengths"].append([len(tokens) for _, tokens in window])
                out["scores"].append(sentence_scores([text for text, _ in window]))
        return out

    def encoding_key(self) -> dict[str, Any]:
        return {**super().encoding_key(), "gap_sentences": 1, "max_windows": self.max_windows}

    def draw(self, window: dict[str, Any], epoch: int, index: int) -> dict[str, list[int]]:
        """The example of `window` for this epoch (`FIXED_MASKS`: validation/test), seeded by (seed, epoch, index)."""
        bounds = np.cumsum([0, *window["sentence_lengths"]])
        sentences = [window["input_ids"][a:b] for a, b in itertools.pairwise(bounds)]
        rng = np.random.default_rng([self.seed, epoch + 1, index])
        return self.objective.example(
            sentences, window["scores"], rng, eos_id=self.tokenizer.eos_token_id,
            max_source_length=self.max_source_length, max_target_length=self.max_target_length,
        )  # fmt: skip

    def examples(self, split: str) -> GapSentenceExamples:
        return GapSentenceExamples(super().examples(split), self._encoder())  # loader workers get no trainer

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        self._train_sampler.yield_epoch = True  # the masks change with the epoch
        return loader

    def collate_labels(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        labels = {"labels": pad_labels([row["labels"] for row in rows])}
        if self.objective.mlm_probability:  # aligned with the inputs (the module pads them to the input length)
            labels["mlm_labels"] = pad_labels([row["mlm_labels"] for row in rows])
        return labels

    def longest_row(self, token: int) -> dict[str, Any]:
        row = {**super().longest_row(token), "labels": [token] * self.max_target_length}
        if self.objective.mlm_probability:  # the masked share of the input predicted, as the objective draws it
            masked = math.ceil(self.objective.mlm_probability * self.max_source_length)
            row["mlm_labels"] = [token] * masked + [-100] * (self.max_source_length - masked)
        return row

    def references(self, split: str) -> list[str]:
        """The gap sentences of each fixed validation/test example, as text (by `idx`)."""
        examples = self.examples(split)
        labels = [examples[i]["labels"] for i in range(len(examples))]
        return [text.strip() for text in self.tokenizer.batch_decode(labels, skip_special_tokens=True)]
