"""`lsgtrain compare A B`: paired bootstrap interval and permutation p-value of B - A over the same documents."""

import json

import pytest

from lsgtrain.cli import main
from lsgtrain.compare import compare, read_scored_rows
from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.metrics.predictions import prediction_row, write_predictions
from lsgtrain.metrics.rouge import lead, lead_summaries, score_documents


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two predictions files of the 100 aclsum test papers: the lead baseline, and that lead cut to 10 words
    (deliberately worse); each row carries its ROUGE and the lead's, as a run's rows do."""
    folder = tmp_path_factory.mktemp("compare")
    papers = load_aclsum_split("test")
    references = [p["summary"] for p in papers]
    _, leads = lead_summaries([p["document"] for p in papers], references)
    lead_scores = score_documents(leads, references)
    paths = {}
    for name, predictions in (("lead", leads), ("short", [lead(text, 10) for text in leads])):
        scores = score_documents(predictions, references)
        rows = [
            prediction_row(
                k, predictions[k], references[k], {**scores[k], **{f"lead_{m}": v for m, v in lead_scores[k].items()}}
            )
            for k in range(len(papers))
        ]
        paths[name] = folder / name / "predictions" / "test.jsonl"
        write_predictions(paths[name], rows)
    return paths


def test_a_run_compared_with_itself_differs_by_zero_with_p_one(runs):
    rows = compare(read_scored_rows(str(runs["lead"])), read_scored_rows(str(runs["lead"].parents[1])), resamples=500)
    for row in rows:
        assert (row.paired.difference, row.paired.low, row.paired.high, row.paired.p_value) == (0.0, 0.0, 0.0, 1.0)
    # the lead baseline side of a run is its own lead baseline: the same scores
    same = compare(read_scored_rows(f"lead:{runs['lead']}"), read_scored_rows(str(runs["lead"])), resamples=100)
    assert all(row.paired.p_value == 1.0 for row in same)


def test_the_lead_cut_to_ten_words_is_significantly_worse(runs, tmp_path, capsys):
    rows = compare(read_scored_rows(str(runs["lead"])), read_scored_rows(str(runs["short"])), resamples=2000)
    for row in rows:
        assert row.paired.difference == pytest.approx(row.b - row.a)
        assert row.paired.low <= row.paired.difference <= row.paired.high < 0, row.metric
        assert row.paired.p_value < 0.01, row.metric
    output, markdown = tmp_path / "cmp.json", tmp_path / "cmp.md"
    command = ["compare", str(runs["lead"]), str(runs["short"]), "--resamples", "2000", "--json", str(output)]
    assert main([*command, "--markdown", str(markdown)]) == 0
    table = capsys.readouterr().out
    assert "B - A" in table and "rouge1" in table and "permutation" in table
    record = json.loads(output.read_text())
    assert record["documents"] == 100 and record["metrics"]["rouge1"]["difference"] == rows[0].paired.difference
    assert "| rouge1 |" in markdown.read_text()


def test_different_documents_or_references_are_refused_with_the_counts(runs, tmp_path, capsys):
    rows = [json.loads(line) for line in runs["lead"].read_text().splitlines()]
    fewer, changed = tmp_path / "fewer.jsonl", tmp_path / "changed.jsonl"
    write_predictions(fewer, rows[:90])
    write_predictions(changed, [{**rows[0], "reference": "another summary"}, *rows[1:]])
    assert main(["compare", str(runs["lead"]), str(fewer)]) == 2
    assert "A 100, B 90, 90 in both (10 only in A" in capsys.readouterr().err
    assert main(["compare", str(runs["lead"]), str(changed)]) == 2
    assert "1 of 100 documents have different references" in capsys.readouterr().err
