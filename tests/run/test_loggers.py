"""Experiment loggers: wandb offline without credentials, a resumed run appending to its metrics history."""

import csv

from lsgtrain.train import train

from ..helpers import SHORT, finished_run


def test_wandb_offline_writes_a_run(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "logger=wandb"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))


def test_a_resumed_run_keeps_its_metrics_history(make_cfg, tmp_path):
    common = [*SHORT, "test=false", "callbacks.hf_export=null", "logger=csv", "trainer.log_every_n_steps=1"]
    run = finished_run(make_cfg, tmp_path, *common[2:])
    (run / "run_summary.json").unlink()  # as if it had been killed after its last checkpoint
    first = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    train(make_cfg(*common, "trainer.max_epochs=2"))
    rows = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    steps = [int(row["step"]) for row in csv.DictReader(rows) if row.get("train/loss")]
    assert rows[: len(first)] == first or rows[1 : len(first)] == first[1:]  # kept (the header may gain columns)
    assert steps == sorted(steps) and min(steps) < 3 <= max(steps)  # both runs' training steps
