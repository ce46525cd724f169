"""How a summary relates to its document: lengths, compression, extractive fragments, novel n-grams, repetition.

Extractive fragment coverage and density are Grusky, Naaman & Artzi's (Newsroom, NAACL 2018, section 4.1): the
greedy algorithm of their Figure 3 finds, for each position of the summary, the longest shared token sequence
starting there in the article, and skips past it; the fragments F(A, S) cover

    coverage = (1 / |S|) * sum(|f| for f in F)       the share of summary tokens inside some copied fragment
    density  = (1 / |S|) * sum(|f|^2 for f in F)     the average length of the fragment each token belongs to

A copied opening (the lead baseline) has coverage 1 and density |S|; a paraphrase has both near 0. Compression is
|A| / |S| in words. Tokens here are lowercased words and punctuation marks (a regular expression, no model's
tokenizer), so the numbers compare across runs and models.
"""

import re
import statistics
from collections import defaultdict
from collections.abc import Sequence

WORD = re.compile(r"\w+|[^\w\s]")
NGRAM_ORDERS = (1, 2, 3, 4)
STATISTICS = (
    "words", "compression", "coverage", "density", *(f"novel_{n}gram" for n in NGRAM_ORDERS), "repeated_trigrams",
)  # fmt: skip


def fragment_tokens(text: str) -> list[str]:
    """Lowercased words and punctuation marks: the tokens fragments and n-grams are counted in."""
    return WORD.findall(text.lower())


def _positions(article: Sequence[str]) -> dict[str, list[int]]:
    """The article positions of each token: the only places the scan of Figure 3 can match."""
    positions: dict[str, list[int]] = defaultdict(list)
    for j, token in enumerate(article):
        positions[token].append(j)
    return positions


def fragments(
    summary: Sequence[str], article: Sequence[str], positions: dict[str, list[int]] | None = None
) -> list[list[str]]:
    """F(A, S), Grusky et al. 2018 Figure 3: at summary position i, the longest run of tokens shared with the article
    starting there (the article scanned left to right, jumping past each match); i then moves past it (or by one).
    `positions`: `_positions(article)`, when several summaries share the article."""
    positions = _positions(article) if positions is None else positions
    found, i = [], 0
    while i < len(summary):
        best, scanned_to = 0, 0  # the scan's j: a match from j to j' resumes the scan at j'
        for j in positions.get(summary[i], ()):
            if j < scanned_to:
                continue
            length = 1
            while (
                i + length < len(summary) and j + length < len(article) and summary[i + length] == article[j + length]
            ):
                length += 1
            best = max(best, length)
            scanned_to = j + length
        if best:
            found.append(list(summary[i : i + best]))
        i += max(best, 1)
    return found


def coverage_density(
    summary: Sequence[str], article: Sequence[str], positions: dict[str, list[int]] | None = None
) -> tuple[float, float]:
    """Extractive fragment coverage and density of `summary` in `article` (tokens); (0, 0) for an empty summary."""
    if not summary:
        return 0.0, 0.0
    lengths = [len(fragment) for fragment in fragments(summary, article, positions)]
    return sum(lengths) / len(summary), sum(length * length for length in lengths) / len(summary)


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[k : k + n]) for k in range(len(tokens) - n + 1)]


def novel_ngram_share(
    summary: Sequence[str], article: Sequence[str], n: int, seen: set[tuple[str, ...]] | None = None
) -> float | None:
    """The share of the summary's n-grams (counted with repeats) that never occur in the article; None when the
    summary has fewer than n tokens. `seen`: the article's n-grams, when several summaries share the article."""
    grams = _ngrams(summary, n)
    if not grams:
        return None
    seen = set(_ngrams(article, n)) if seen is None else seen
    return sum(gram not in seen for gram in grams) / len(grams)


def repeated_trigram_share(summary: Sequence[str]) -> float | None:
    """The share of the summary's trigrams that repeat an earlier one (a decoder looping says it here); None when
    it has fewer than 3 tokens."""
    grams = _ngrams(summary, 3)
    if not grams:
        return None
    return (len(grams) - len(set(grams))) / len(grams)


class DocumentStatistics:
    """The `STATISTICS` of summaries of one document; its tokens, their positions and its n-grams are built once,
    for all of them (the model's, the lead's, the reference)."""

    def __init__(self, document: str):
        self.words = len(document.split())
        self.tokens = fragment_tokens(document)
        self.positions = _positions(self.tokens)
        self.ngrams = {n: set(_ngrams(self.tokens, n)) for n in NGRAM_ORDERS}

    def of(self, summary: str) -> dict[str, float | None]:
        """`words` (whitespace-separated, as the lead baseline counts), `compression` (document words / summary
        words; None for an empty summary), fragment coverage and density, novel 1- to 4-gram shares and the
        repeated-trigram share (0-1)."""
        summary_tokens, words = fragment_tokens(summary), len(summary.split())
        coverage, density = coverage_density(summary_tokens, self.tokens, self.positions)
        result: dict[str, float | None] = {
            "words": float(words),
            "compression": self.words / words if words else None,
            "coverage": coverage,
            "density": density,
        }
        for n in NGRAM_ORDERS:
            result[f"novel_{n}gram"] = novel_ngram_share(summary_tokens, self.tokens, n, self.ngrams[n])
        result["repeated_trigrams"] = repeated_trigram_share(summary_tokens)
        return result


def summary_statistics(summary: str, document: str) -> dict[str, float | None]:
    """The `STATISTICS` of one summary of `document` (`DocumentStatistics.of`)."""
    return DocumentStatistics(document).of(summary)


def aggregate(per_summary: Sequence[dict[str, float | None]]) -> dict[str, dict[str, float]]:
    """`{statistic: {"mean", "median"}}` over the summaries where the statistic is defined (not None)."""
    names = dict.fromkeys(name for row in per_summary for name in row)
    result = {}
    for name in names:
        values = [row[name] for row in per_summary if row.get(name) is not None]
        if values:
            result[name] = {"mean": statistics.fmean(values), "median": float(statistics.median(values))}
    return result
