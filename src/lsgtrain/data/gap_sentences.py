"""Pegasus' gap-sentence generation (GSG, Zhang et al. 2020, arXiv 1912.08777) as a data transform.

A document is split into sentences (nltk's English Punkt, as ROUGE-Lsum splits them, inside each paragraph), each
sentence tokenised on its own, and the sentences packed in order into windows of at most `max_source_length` tokens
(a long document gives many examples). Each sentence is scored once by ROUGE-1 F1 against the rest of its window
(Pegasus' "Ind-Orig"). An example is drawn from a window with a random generator: the selected sentences are
replaced in the input by `<mask_1>` (one token per sentence) and become the target, in document order; optionally
tokens of the other sentences are replaced by `<mask_2>` for the encoder to predict (MLM). The generator is seeded
by (seed, epoch, example), so every epoch draws new masks and a resumed run draws the same ones.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from rouge_score import rouge_scorer

from ..metrics.rouge import split_sentences as punkt_lines

STRATEGIES = ("principal", "lead", "random")
MASK_SENTENCE_ID = 2  # <mask_1> in Pegasus' vocabulary
MASK_TOKEN_ID = 3  # <mask_2>


def split_sentences(text: str) -> list[str]:
    """Sentences of every paragraph (non-empty line) of `text`, in order."""
    return [s for line in text.splitlines() if line.strip() for s in punkt_lines(line).splitlines()]


@cache
def _rouge_tokenizer():
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)._tokenizer


def sentence_scores(sentences: Sequence[str]) -> list[float]:
    """ROUGE-1 F1 (stemmed unigram counts, as our ROUGE) of each sentence against all the others together."""
    counts = [Counter(_rouge_tokenizer().tokenize(sentence)) for sentence in sentences]
    total = sum(counts, Counter())
    scores = []
    for count in counts:
        rest = total - count
        overlap = sum(min(n, rest[word]) for word, n in count.items())
        size = sum(count.values()) + sum(rest.values())
        scores.append(2 * overlap / size if size else 0.0)
    return scores


def pack_windows(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive sentence ranges `[start, end)` whose token counts fit `budget` (a longer sentence is a window of
    its own, truncated when the example is built)."""
    windows, start, used = [], 0, 0
    for i, length in enumerate(lengths):
        if i > start and used + length > budget:
            windows.append((start, i))
            start, used = i, 0
        used += length
    if lengths:
        windows.append((start, len(lengths)))
    return windows


@dataclass(frozen=True)
class GapSentenceObjective:
    """How examples are drawn from a window (the `data.objective` settings).

    Args:
        gap_ratio: share of a window's sentences that become gaps (rounded, at least 1, all but one at most).
        strategy: `principal` (highest scores), `lead` (first sentences) or `random`.
        stochastic: Pegasus-large's "mixed & stochastic": each example draws its gap ratio from `gap_ratio_range`
            and multiplies each score by a factor drawn from [1 - `score_noise`, 1 + `score_noise`].
        mlm_probability: share of the tokens of the remaining sentences replaced by `<mask_2>`, predicted by the
            encoder (0: no MLM, Pegasus-large's choice).
        intact_probability: chance that a gap sentence stays in the input unchanged (still generated in the target)
            instead of becoming `<mask_1>`: the public Pegasus code's `mask_sentence_by_intact_prob` (0.1 there), which
            also teaches copying from the input, as extractive-leaning summaries need.
    """

    gap_ratio: float = 0.3
    strategy: str = "principal"
    stochastic: bool = False
    gap_ratio_range: tuple[float, float] = (0.15, 0.45)
    score_noise: float = 0.2
    mlm_probability: float = 0.0
    intact_probability: float = 0.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"data.objective.strategy={self.strategy!r} is unknown; choose one of {STRATEGIES}")
        low, high = self.gap_ratio_range
        if not (0 < self.gap_ratio < 1 and 0 < low <= high < 1):
            raise ValueError(
                f"data.objective.gap_ratio={self.gap_ratio} and gap_ratio_range={list(self.gap_ratio_range)} must lie "
                "in (0, 1) (low <= high): a ratio of 0 masks nothing, 1 leaves no input"
            )
        if not all(0 <= value < 1 for value in (self.score_noise, self.mlm_probability, self.intact_probability)):
            raise ValueError("data.objective.score_noise, mlm_probability and intact_probability must lie in [0, 1)")

    def select(self, scores: Sequence[float], rng: np.random.Generator) -> list[int]:
        """Indices (sorted) of the gap sentences of a window with these scores."""
        n = len(scores)
        ratio = rng.uniform(*self.gap_ratio_range) if self.stochastic else self.gap_ratio
        count = min(max(1, round(ratio * n)), max(1, n - 1))
        if self.strategy == "lead":
            return list(range(count))
        if self.strategy == "random":
            return sorted(rng.choice(n, size=count, replace=False).tolist())
        values = np.asarray(scores, dtype=float)
        if self.stochastic:
            values = values * rng.uniform(1 - self.score_noise, 1 + self.score_noise, size=n)
        return sorted(np.argsort(-values, kind="stable")[:count].tolist())

    def example(
        self,
        sentences: Sequence[Sequence[int]],
        scores: Sequence[float],
        rng: np.random.Generator,
        *,
        eos_id: int,
        max_source_length: int,
        max_target_length: int,
    ) -> dict[str, list[int]]:
        """`input_ids` (gaps -> `<mask_1>` unless kept intact, + eos), `labels` (the gaps in order, + eos) and, with
        MLM, `mlm_labels` (the original id where the input holds `<mask_2>`, -100 elsewhere), truncated to the
        lengths."""
        selected = self.select(scores, rng)
        gaps = set(selected)
        if self.intact_probability:
            intact = set(np.asarray(selected)[rng.random(len(selected)) < self.intact_probability].tolist())
        else:
            intact = set()
        input_ids: list[int] = []
        labels: list[int] = []
        mlm_labels: list[int] = []
        for i, sentence in enumerate(sentences):
            if i in gaps:
                labels.extend(sentence)
                if i in intact:
                    input_ids.extend(sentence)
                    mlm_labels.extend([-100] * len(sentence))
                else:
                    input_ids.append(MASK_SENTENCE_ID)
                    mlm_labels.append(-100)
                continue
            tokens = np.asarray(sentence)
            chosen = rng.random(len(tokens)) < self.mlm_probability if self.mlm_probability else np.zeros(0, bool)
            if chosen.any():
                mlm_labels.extend(np.where(chosen, tokens, -100).tolist())
                tokens = np.where(chosen, MASK_TOKEN_ID, tokens)
            else:
                mlm_labels.extend([-100] * len(tokens))
            input_ids.extend(tokens.tolist())
        example = {
            "input_ids": [*input_ids[: max_source_length - 1], eos_id],
            "labels": [*labels[: max_target_length - 1], eos_id],
        }
        if self.mlm_probability:
            example["mlm_labels"] = [*mlm_labels[: max_source_length - 1], -100]
        return example
