"""What a run's ROUGE evaluation writes: intervals, statistics, length buckets, figures, in every output."""

import json

from huggingface_hub import ModelCard


def test_a_runs_evaluation_has_intervals_statistics_length_buckets_and_figures(exported_run):
    """Issue 29 end to end: every ROUGE (and the lead's) with its 95% interval in the metrics, run_summary.json and
    the card; statistics in each predictions row and aggregated; ROUGE by source length; the figures, linked."""
    metrics, folder = exported_run["metrics"], exported_run["export"].parent
    summary = json.loads((folder / "run_summary.json").read_text())["metrics"]
    buckets = sorted({key.split("/")[1] for key in metrics if key.startswith("test/len_")})
    assert buckets == ["len_8k-16k"]  # the 4 first aclsum test papers: 8-16k tokens of the 600-piece vocabulary
    for key in ("test/rouge1", "test/lead_rougeLsum", "test/len_8k-16k/rouge2", "val/rougeL"):
        assert metrics[f"{key}_low"] <= metrics[key] <= metrics[f"{key}_high"], key
        assert summary[f"{key}_low"] == metrics[f"{key}_low"]
    assert metrics["test/len_8k-16k/documents"] == metrics["test/len_8k-16k/truncated"] == 4  # all cut at 256
    assert metrics["test/stats/lead/coverage"] == 1.0 and metrics["test/stats/ref/coverage_median"] < 1
    rows = [json.loads(line) for line in (folder / "predictions" / "test.jsonl").read_text().splitlines()]
    assert {"words", "tokens", "reference_words", "document_tokens", "coverage", "density", "novel_2gram",
            "repeated_trigrams", "compression", "lead_rouge1"} <= set(rows[0])  # fmt: skip
    figures = sorted(path.name for path in (folder / "figures").glob("*.png"))
    kinds = ["coverage_density", "lengths", "rouge_by_length"]
    assert figures == [*(f"test_{k}.png" for k in kinds), *(f"val_{k}.png" for k in kinds), "validation_curve.png"]
    text = ModelCard.load(exported_run["export"] / "README.md").text
    low, high = metrics["test/rouge1_low"], metrics["test/rouge1_high"]
    assert (
        f"| rouge1 | {metrics['val/rouge1']:.4f} [" in text
        and f"{metrics['test/rouge1']:.4f} [{low:.4f}, {high:.4f}] |" in text
    )
    lead = f"{metrics['test/len_8k-16k/lead_rouge1']:.2f}"
    assert "| source tokens | documents | cut | rouge1 |" in text and "| 8k-16k | 4 | 4 |" in text and lead in text
    assert "| coverage | " in text and "[test_rouge_by_length.png](../figures/test_rouge_by_length.png)" in text
    assert "rouge1_low" not in text and "len_" not in text  # bounds sit beside their metric, buckets in their table
