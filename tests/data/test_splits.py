"""Splits: a held-out validation share when there is none, split-name aliases, no test split, per-split caps, the same
rows in two splits refused or counted."""

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset
from hydra.utils import instantiate
from omegaconf import open_dict

from lsgtrain.data.sources import DataSourceError
from lsgtrain.evaluate import evaluate
from lsgtrain.train import train

from ..helpers import QUICK, data_files_override
from .helpers import documents_of, own_datamodule, own_files, own_files_override, own_raw, own_rows


# -- optional splits -------------------------------------------------------------------------------------------------
def test_without_a_validation_split_a_seeded_share_of_train_is_held_out_and_logged(make_cfg, tmp_path, caplog):
    files = own_files(tmp_path, train=20, test=3)
    with caplog.at_level(logging.INFO):
        raw = own_raw(make_cfg, files, "data.val_fraction=0.2", "seed=3")
    assert (len(raw["train"]), len(raw["val"]), len(raw["test"])) == (16, 4, 3)
    assert documents_of(raw["train"]) | documents_of(raw["val"]) == {row["document"] for row in own_rows(20)}
    assert not documents_of(raw["train"]) & documents_of(raw["val"])
    assert (
        "no validation split: held out 4 of 20 training rows as val (data.val_fraction=0.2, seed 3); "
        "train 16 rows, val 4 rows" in caplog.text
    )
    again = own_datamodule(make_cfg, files, "data.val_fraction=0.2", "seed=3").raw["val"]
    other_seed = own_datamodule(make_cfg, files, "data.val_fraction=0.2", "seed=4").raw["val"]
    assert documents_of(again) == documents_of(raw["val"]) != documents_of(other_seed)

    with pytest.raises(DataSourceError, match=r"no validation split and data.val_fraction=null; give one"):
        own_raw(make_cfg, files, "data.val_fraction=null")
    with pytest.raises(DataSourceError, match=r"1 training rows are too few"):
        own_raw(make_cfg, own_files(tmp_path, train=1))


def test_split_names_have_documented_aliases_and_an_unknown_key_is_refused(make_cfg, tmp_path):
    for name in ("validation", "dev"):
        files = own_files(tmp_path, train=4, **{name: 2}, test=3)
        raw = own_raw(make_cfg, files)
        assert documents_of(raw["val"]) == {row["document"] for row in own_rows(2, start=4)}
    files = own_files(tmp_path, train=4, holdout=2)
    assert len(own_datamodule(make_cfg, files, "data.split_names={val: holdout}").raw["val"]) == 2

    typo = own_files(tmp_path, train=4, val=2, tset=3)  # would silently skip the test
    with pytest.raises(DataSourceError, match=r"data.data_files: \['tset'\] is not a split name; use train, val"):
        own_raw(make_cfg, typo)
    twice = own_files(tmp_path, train=4, val=2, dev=2)
    with pytest.raises(DataSourceError, match=r"data.data_files has \['val', 'dev'\], all names of the val split"):
        own_raw(make_cfg, twice)
    with pytest.raises(DataSourceError, match=r"data.data_files has no train split"):
        own_raw(make_cfg, own_files(tmp_path, val=2, test=2))


def test_a_hub_dataset_without_validation_split_gets_one_held_out(make_cfg, tmp_path):
    folder = tmp_path / "hub_dataset" / "data"
    folder.mkdir(parents=True)
    Dataset.from_list(own_rows(10)).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    Dataset.from_list(own_rows(3, start=10)).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    cfg = make_cfg("data.source=hub", f"data.dataset_name={folder.parent}", "data.val_fraction=0.3")
    raw = instantiate(cfg.data, _convert_="all").raw
    assert (len(raw["train"]), len(raw["val"]), len(raw["test"])) == (7, 3, 3)


def test_without_a_test_split_the_run_is_not_tested_and_says_so(make_cfg, tmp_path, caplog):
    """Only a training file: val is held out (the checkpoint still monitors val/rougeLsum), the test is skipped."""
    files = own_files(tmp_path, train=12)
    overrides = [*QUICK, "test=true", "data.max_samples=null", "data.source=files", own_files_override(files)]
    with caplog.at_level(logging.WARNING):
        metrics, objects = train(make_cfg(*overrides, "data.val_fraction=0.25"))
    assert "not testing: the data has no test split" in caplog.text
    assert "val/rougeLsum" in metrics and not any(key.startswith("test/") for key in metrics)
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["tested"] is False and summary["test_skipped_because"] == "the data has no test split"
    best = Path(summary["best_checkpoint"])
    assert best.is_file() and best.parent == tmp_path / "run" / "checkpoints"
    assert len(objects["datamodule"].raw["val"]) == 3

    cfg = make_cfg(*overrides, "data.val_fraction=0.25", f"ckpt_path={best}", config_name="eval")
    evaluated = evaluate(cfg)
    assert "val/rougeLsum" in evaluated and not any(key.startswith("test/") for key in evaluated)
    cfg = make_cfg(*overrides, "data.val_fraction=0.25", "train=false", f"ckpt_path={best}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "test_only")
    with pytest.raises(ValueError, match="train=false runs only the test, but the data has no test split"):
        train(cfg)


# -- caps, processes, cache ------------------------------------------------------------------------------------------
def test_per_split_caps_apply_before_tokenizer_training_and_are_logged(make_cfg, tmp_path, caplog):
    files = own_files(tmp_path, train=10, val=6, test=6)
    caps = ["data.max_samples=5", "data.max_train_samples=3", "data.max_predict_samples=2"]
    datamodule = own_datamodule(make_cfg, files, *caps)
    with caplog.at_level(logging.INFO):
        assert {split: len(dataset) for split, dataset in datamodule.raw.items()} == {"train": 3, "val": 5, "test": 2}
    assert "train: keeping the first 3 of 10 rows (data.max_train_samples=3)" in caplog.text
    assert "val: keeping the first 5 of 6 rows (data.max_samples=5)" in caplog.text
    assert "test: keeping the first 2 of 6 rows (data.max_predict_samples=2)" in caplog.text
    assert len(datamodule.tokenizer_training_texts()) == 3
    datamodule = own_datamodule(make_cfg, files, "data.max_eval_samples=4")
    assert {split: len(dataset) for split, dataset in datamodule.raw.items()} == {"train": 10, "val": 4, "test": 6}


def test_the_same_file_as_two_splits_is_refused_unless_allowed(make_cfg, standin_files, tmp_path, caplog):
    files = standin_files("summarization", "document", "summary")
    same = {**files, "test": files["train"]}
    cfg = make_cfg(*QUICK, "data.source=files", data_files_override(same))
    with pytest.raises(DataSourceError, match=r"data.data_files.train=.* and data.data_files.test=.* hold the same "
                       r"rows.*data.allow_split_overlap=true"):  # fmt: skip
        train(cfg)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(Path(files["train"]).read_bytes())
    cfg = make_cfg(*QUICK, "data.source=files", data_files_override({**files, "val": str(copy)}))
    with pytest.raises(DataSourceError, match=r"data.data_files.val=.*copy.jsonl hold the same rows"):
        train(cfg)
    from hydra.utils import instantiate

    cfg = make_cfg("data.source=files", data_files_override(same), "data.allow_split_overlap=true")
    with caplog.at_level("WARNING"):
        assert len(instantiate(cfg.data, _convert_="all").raw["test"]) == 6
    assert "data.allow_split_overlap=true: going on" in caplog.text
    assert "test: 6 of 6 rows are also in the training split" in caplog.text


def test_test_rows_that_are_also_training_rows_are_counted_and_named(make_cfg, standin_files, tmp_path, caplog):
    from hydra.utils import instantiate

    files = standin_files("summarization", "document", "summary")
    train_rows = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    test_rows = [json.loads(line) for line in Path(files["test"]).read_text().splitlines()]
    test_rows[1]["document"] = "  " + train_rows[3]["document"].replace(" ", "\n  ", 3) + "\n"  # whitespace differs
    test_rows[4]["document"] = train_rows[0]["document"]
    test_rows[2]["document"] = train_rows[2]["document"] + " More."  # not the same text
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text("".join(json.dumps(row) + "\n" for row in test_rows))
    cfg = make_cfg("data.source=files", data_files_override({**files, "test": str(leaked)}))
    with caplog.at_level("WARNING"):
        assert len(instantiate(cfg.data, _convert_="all").raw["test"]) == 5
    assert (f"test: 2 of 5 rows are also in the training split (same document after collapsing whitespace; {leaked} "
            "rows 2, 5)") in caplog.text  # fmt: skip
    assert "val:" not in caplog.text


def test_test_rows_that_are_also_validation_rows_are_counted_and_named(make_cfg, standin_files, tmp_path, caplog):
    """The best checkpoint is chosen on the validation documents: a test document among them is not held-out."""
    from hydra.utils import instantiate

    files = standin_files("summarization", "document", "summary")
    val_rows = [json.loads(line) for line in Path(files["val"]).read_text().splitlines()]
    test_rows = [json.loads(line) for line in Path(files["test"]).read_text().splitlines()]
    test_rows[0] = {**test_rows[0], "id": "another-id", "document": val_rows[2]["document"]}
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text("".join(json.dumps(row) + "\n" for row in test_rows))
    cfg = make_cfg("data.source=files", data_files_override({**files, "test": str(leaked)}))
    with caplog.at_level("WARNING"):
        assert len(instantiate(cfg.data, _convert_="all").raw["test"]) == len(test_rows)  # warned, not dropped
    assert (f"test: 1 of {len(test_rows)} rows are also in the validation split (same document after collapsing "
            f"whitespace; {leaked} rows 1): their scores are not held-out (used to choose the best checkpoint)"
            ) in caplog.text  # fmt: skip
    assert "training split" not in caplog.text
