"""Extractive fragment coverage and density (Grusky et al., NAACL 2018, section 4.1) on examples worked by hand."""

import pytest

from lsgtrain.metrics.abstractiveness import (
    aggregate,
    coverage_density,
    fragment_tokens,
    fragments,
    novel_ngram_share,
    repeated_trigram_share,
    summary_statistics,
)

ARTICLE = "The cat sat on the mat. A dog barked."
SUMMARY = "The cat barked on the mat"


def test_fragments_coverage_and_density_by_hand():
    """Summary tokens: the cat barked on the mat (|S| = 6). Figure 3's greedy scan finds "the cat" (the article's
    first "the"; its second one is followed by "mat"), then "barked", then "on the mat": lengths 2, 1, 3.
    Coverage (2 + 1 + 3) / 6 = 1; density (4 + 1 + 9) / 6 = 7/3."""
    summary, article = fragment_tokens(SUMMARY), fragment_tokens(ARTICLE)
    assert summary == ["the", "cat", "barked", "on", "the", "mat"]
    assert fragments(summary, article) == [["the", "cat"], ["barked"], ["on", "the", "mat"]]
    assert coverage_density(summary, article) == (pytest.approx(1.0), pytest.approx(7 / 3))


def test_fragments_take_the_longest_match_and_skip_unmatched_tokens():
    """At "a" the scan meets "a b" first, then "a b c": the longer one is kept. "z" is in no fragment: of 4
    summary tokens 3 are covered (coverage 3/4), in one fragment of 3 (density 9/4)."""
    summary, article = ["a", "b", "c", "z"], ["a", "b", "x", "a", "b", "c"]
    assert fragments(summary, article) == [["a", "b", "c"]]
    assert coverage_density(summary, article) == (0.75, 2.25)
    assert coverage_density([], article) == (0.0, 0.0)


def test_novel_ngrams_repetition_and_compression_by_hand():
    summary, article = fragment_tokens(SUMMARY), fragment_tokens(ARTICLE)
    assert novel_ngram_share(summary, article, 1) == 0.0
    # bigrams: the cat | cat barked | barked on | on the | the mat -> 2 of 5 are not in the article
    assert novel_ngram_share(summary, article, 2) == pytest.approx(2 / 5)
    # trigrams: the cat barked | cat barked on | barked on the | on the mat -> 3 of 4 new
    assert novel_ngram_share(summary, article, 3) == pytest.approx(3 / 4)
    assert novel_ngram_share(["one"], article, 2) is None
    # 6 trigrams of "the cat sat the cat sat the cat", 3 distinct: half repeat an earlier one
    assert repeated_trigram_share("the cat sat the cat sat the cat".split()) == pytest.approx(0.5)
    statistics = summary_statistics(SUMMARY, ARTICLE)
    assert statistics["words"] == 6 and statistics["compression"] == pytest.approx(9 / 6)
    assert statistics["repeated_trigrams"] == 0.0 and statistics["density"] == pytest.approx(7 / 3)
    assert summary_statistics("", ARTICLE)["compression"] is None


def test_aggregate_is_mean_and_median_over_the_defined_values():
    rows = [{"coverage": 1.0, "compression": None}, {"coverage": 0.2, "compression": 4.0}, {"coverage": 0.3}]
    summary = aggregate(rows)
    assert summary["coverage"] == {"mean": pytest.approx(0.5), "median": pytest.approx(0.3)}
    assert summary["compression"] == {"mean": 4.0, "median": 4.0}
