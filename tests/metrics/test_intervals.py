"""95% bootstrap intervals of ROUGE (seeded, per-document) and ROUGE by document length."""

import pytest

from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.metrics.by_length import bucket_name, rouge_by_length
from lsgtrain.metrics.evaluation import evaluate_summaries
from lsgtrain.metrics.intervals import mean_intervals, paired_difference
from lsgtrain.metrics.rouge import ROUGE_TYPES, lead, mean_rouge, score_documents


@pytest.fixture(scope="module")
def papers() -> list[dict]:
    return load_aclsum_split("test")[:30]


@pytest.fixture(scope="module")
def scored(papers) -> list[dict[str, float]]:
    return score_documents([lead(p["document"], 60) for p in papers], [p["summary"] for p in papers])


def test_intervals_are_deterministic_for_a_seed_and_contain_the_point_estimate(scored):
    intervals = mean_intervals(scored, ROUGE_TYPES, resamples=500, seed=3)
    assert intervals == mean_intervals(scored, ROUGE_TYPES, resamples=500, seed=3)
    assert intervals != mean_intervals(scored, ROUGE_TYPES, resamples=500, seed=4)
    for name, value in mean_rouge(scored).items():
        low, high = intervals[name]
        assert low < value < high, name
        assert high - low > 1.0  # 30 papers: the interval is points wide, not a rounding of the mean


def test_paired_difference_of_a_system_with_itself_is_zero_with_p_one(scored):
    values = [s["rouge1"] for s in scored]
    paired = paired_difference(values, values, resamples=200, seed=0)
    assert (paired.difference, paired.low, paired.high, paired.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_rouge_by_length_buckets_by_untruncated_tokens_with_intervals(scored):
    """Lengths 500, 1500, 1600, 20000 (and 26 more at 900): 0-1k, 1k-2k, 16k+; the empty 2k-16k buckets are left
    out; a truncation at 1536 cuts 1600 and 20000."""
    lengths = [500, 1500, 1600, 20000] + [900] * 26
    buckets = rouge_by_length(scored, lengths, truncation=1536, resamples=100, seed=0, lead=scored)
    assert [(b.name, b.documents, b.truncated) for b in buckets] == [("0-1k", 27, 0), ("1k-2k", 2, 1), ("16k+", 1, 1)]
    assert buckets[1].rouge == mean_rouge(scored[1:3]) == buckets[1].lead
    assert buckets[2].intervals["rouge1"] == (scored[3]["rouge1"], scored[3]["rouge1"])
    assert bucket_name(4096, 8192) == "4k-8k"
    metrics = buckets[1].metrics("test/")
    assert metrics["test/len_1k-2k/documents"] == 2 and metrics["test/len_1k-2k/truncated"] == 1
    assert (
        metrics["test/len_1k-2k/rouge1_low"]
        <= metrics["test/len_1k-2k/rouge1"]
        <= metrics["test/len_1k-2k/rouge1_high"]
    )


def test_an_evaluation_logs_intervals_the_lead_statistics_and_buckets(papers):
    documents, references = [p["document"] for p in papers], [p["summary"] for p in papers]
    predictions = [lead(d, 40) for d in documents]
    evaluation = evaluate_summaries(
        predictions, references, documents, count_tokens=lambda texts: [len(t.split()) for t in texts],
        source_tokens=[len(d.split()) for d in documents], truncation=4096, resamples=200, seed=0,
    )  # fmt: skip
    metrics = evaluation.metrics("test")
    for name in ROUGE_TYPES:
        assert metrics[f"test/{name}_low"] < metrics[f"test/{name}"] < metrics[f"test/{name}_high"]
        assert metrics[f"test/lead_{name}_low"] < metrics[f"test/lead_{name}"] < metrics[f"test/lead_{name}_high"]
    assert metrics["test/stats/gen/coverage"] == pytest.approx(1.0)  # a prefix of the document is copied whole
    assert metrics["test/stats/gen/words"] == 40 and metrics["test/stats/gen/tokens"] == 40
    assert metrics["test/stats/ref/coverage"] < 1 and metrics["test/stats/ref/novel_2gram"] > 0
    assert sum(metrics[k] for k in metrics if k.endswith("/documents")) == len(papers)
    row = evaluation.row_statistics(0)
    assert row["document_tokens"] == len(documents[0].split()) and row["reference_words"] == len(references[0].split())
    assert row["lead_rouge1"] == evaluation.lead_per_document[0]["rouge1"]
