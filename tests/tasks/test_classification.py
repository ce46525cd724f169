"""The classification task: F1 and accuracy, predictions in the summarization runs' format."""

import json

import pytest

from lsgtrain.train import train


def test_classification_trains_and_reports_f1_and_writes_its_predictions(make_cfg, tmp_path):
    """Before, classification runs wrote no predictions at all."""
    metrics, objects = train(make_cfg("experiment=aclsum_venue_cls", "trainer.max_epochs=2", "data.max_samples=12"))
    assert objects["trainer"].global_step == 12
    for stage in ("val", "test"):
        assert 0.0 <= metrics[f"{stage}/f1_macro"] <= 1.0
        assert 0.0 <= metrics[f"{stage}/f1_micro"] <= 1.0
        assert 0.0 <= metrics[f"{stage}/acc"] <= 1.0
    assert objects["model"].config.num_labels == objects["datamodule"].num_labels
    predictions = tmp_path / "run" / "predictions"
    assert sorted(p.name for p in predictions.iterdir()) == ["test.jsonl", "val_epoch0.jsonl", "val_epoch1.jsonl"]
    rows = [json.loads(line) for line in (predictions / "test.jsonl").read_text().splitlines()]
    references = objects["datamodule"].references("test")
    assert [row["id"] for row in rows] == list(range(len(references)))  # the format of summarization runs
    assert [row["reference"] for row in rows] == references
    assert all(row["prediction"] in objects["datamodule"].labels for row in rows)
    assert all(row["correct"] == (row["prediction"] == row["reference"]) for row in rows)
    assert sum(row["correct"] for row in rows) / len(rows) == pytest.approx(metrics["test/acc"])
