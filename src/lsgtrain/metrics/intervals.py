"""Bootstrap confidence intervals of a mean over documents, and the paired test of two systems on the same documents.

The Pegasus authors report each ROUGE with a 95% bootstrap interval (rouge-score's `BootstrapAggregator`: documents
resampled with replacement, the percentiles of the resampled means). We resample the same way, seeded, with numpy,
from the per-document scores every rank holds once the predictions are gathered, so an interval depends only on the
scores, the seed and the number of resamples: two DDP processes give what one gives.

The paired comparison of two systems B and A scores each document with both and looks at the per-document differences
B - A: a percentile bootstrap interval of their mean, and the two-sided p-value of a paired permutation test (each
difference's sign flipped at random: approximate randomization, Riezler & Maxwell 2005), the chance of a mean
difference at least as large if the two systems were exchangeable.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95  # the papers' 95% intervals


def bootstrap_means(scores: np.ndarray, *, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` resamples (documents drawn with replacement) of `scores` `[n]` or `[n, k]` (k metrics
    resampled jointly, as one document set): `[resamples]` or `[resamples, k]`."""
    if resamples < 1:
        raise ValueError(f"the number of bootstrap resamples must be >= 1, got {resamples}")
    if len(scores) == 0:
        raise ValueError("a bootstrap interval of no documents")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(scores), size=(resamples, len(scores)))  # [resamples, n]
    return scores[draws].mean(axis=1)  # [resamples] or [resamples, k]


def percentile_interval(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central `CONFIDENCE` percentile interval of resampled means (along the first axis)."""
    tail = 100 * (1 - CONFIDENCE) / 2
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def mean_intervals(
    per_document: Sequence[dict[str, float]], names: Sequence[str], *, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """`{name: (low, high)}`: the 95% bootstrap interval of the mean of each `name` of `per_document` (one dict of
    scores per document, e.g. `score_documents`' ROUGE)."""
    scores = np.array([[document[name] for name in names] for document in per_document], dtype=np.float64)  # [n, k]
    low, high = percentile_interval(bootstrap_means(scores, resamples=resamples, seed=seed))
    return {name: (float(low[k]), float(high[k])) for k, name in enumerate(names)}


@dataclass(frozen=True)
class PairedDifference:
    """B - A over the same documents: the mean difference, its 95% paired bootstrap interval, and the two-sided
    p-value of the paired permutation test."""

    difference: float
    low: float
    high: float
    p_value: float


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int, seed: int) -> PairedDifference:
    """Compare per-document scores `b` with `a` (same documents, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores of {len(a)} and {len(b)} documents")
    differences = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)  # [n]
    observed = float(differences.mean())
    low, high = percentile_interval(bootstrap_means(differences, resamples=resamples, seed=seed))
    rng = np.random.default_rng(seed + 1)  # the permutations' own stream, not the bootstrap's draws
    signs = rng.choice((-1.0, 1.0), size=(resamples, len(differences)))  # [resamples, n]
    flipped = np.abs((signs * differences).mean(axis=1))  # [resamples]
    # at least as extreme, up to rounding (identical systems: every flip gives 0, p = 1); +1: the observed labelling
    extreme = int(np.sum(flipped >= abs(observed) - 1e-9 * max(1.0, abs(observed))))
    return PairedDifference(observed, float(low), float(high), (extreme + 1) / (resamples + 1))
