"""The user's own data (docs/data.md "Your own data"): optional validation and test splits, split name aliases,
per-split caps, tokenisation processes and cache, and bad files or rows named before any tokenizer is trained."""

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset
from hydra.utils import instantiate
from omegaconf import open_dict

from lsgtrain.data import sources
from lsgtrain.data.sources import DataSourceError
from lsgtrain.evaluate import evaluate
from lsgtrain.preflight import ConfigError
from lsgtrain.train import train

from .conftest import QUICK, WORDS, assert_refused_before_data_work


def _rows(count: int, start: int = 0) -> list[dict]:
    """Summarization rows whose text says which row they are, long enough for a tokenizer and a batch."""
    text = " ".join(WORDS * 3)
    return [
        {"document": f"document {start + i}. {text}", "summary": f"summary {start + i} {WORDS[i % len(WORDS)]}"}
        for i in range(count)
    ]


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _files(tmp_path: Path, **sizes: int) -> dict[str, str]:
    """One jsonl file per split key (`train=12, dev=4`), rows numbered across files."""
    files, start = {}, 0
    for key, size in sizes.items():
        files[key] = _write(tmp_path / f"{key}.jsonl", _rows(size, start))
        start += size
    return files


def _files_override(files: dict[str, str]) -> str:
    return "data.data_files={" + ",".join(f"{key}:{path}" for key, path in files.items()) + "}"


def _datamodule(make_cfg, files: dict[str, str], *overrides: str):
    return instantiate(make_cfg("data.source=files", _files_override(files), *overrides).data, _convert_="all")


def _raw(make_cfg, files: dict[str, str], *overrides: str):
    """The datamodule's loaded, checked, held-out and capped splits."""
    return _datamodule(make_cfg, files, *overrides).raw


def _documents(dataset) -> set[str]:
    return set(dataset["document"])


# -- optional splits -------------------------------------------------------------------------------------------------
def test_without_a_validation_split_a_seeded_share_of_train_is_held_out_and_logged(make_cfg, tmp_path, caplog):
    files = _files(tmp_path, train=20, test=3)
    with caplog.at_level(logging.INFO):
        raw = _raw(make_cfg, files, "data.val_fraction=0.2", "seed=3")
    assert (len(raw["train"]), len(raw["val"]), len(raw["test"])) == (16, 4, 3)
    assert _documents(raw["train"]) | _documents(raw["val"]) == {row["document"] for row in _rows(20)}
    assert not _documents(raw["train"]) & _documents(raw["val"])
    assert (
        "no validation split: held out 4 of 20 training rows as val (data.val_fraction=0.2, seed 3); "
        "train 16 rows, val 4 rows" in caplog.text
    )
    again = _datamodule(make_cfg, files, "data.val_fraction=0.2", "seed=3").raw["val"]
    other_seed = _datamodule(make_cfg, files, "data.val_fraction=0.2", "seed=4").raw["val"]
    assert _documents(again) == _documents(raw["val"]) != _documents(other_seed)

    with pytest.raises(DataSourceError, match=r"no validation split and data.val_fraction=null; give one"):
        _raw(make_cfg, files, "data.val_fraction=null")
    with pytest.raises(DataSourceError, match=r"1 training rows are too few"):
        _raw(make_cfg, _files(tmp_path, train=1))


def test_split_names_have_documented_aliases_and_an_unknown_key_is_refused(make_cfg, tmp_path):
    for name in ("validation", "dev"):
        files = _files(tmp_path, train=4, **{name: 2}, test=3)
        raw = _raw(make_cfg, files)
        assert _documents(raw["val"]) == {row["document"] for row in _rows(2, start=4)}
    files = _files(tmp_path, train=4, holdout=2)
    assert len(_datamodule(make_cfg, files, "data.split_names={val: holdout}").raw["val"]) == 2

    typo = _files(tmp_path, train=4, val=2, tset=3)  # would silently skip the test
    with pytest.raises(DataSourceError, match=r"data.data_files: \['tset'\] is not a split name; use train, val"):
        _raw(make_cfg, typo)
    twice = _files(tmp_path, train=4, val=2, dev=2)
    with pytest.raises(DataSourceError, match=r"data.data_files has \['val', 'dev'\], all names of the val split"):
        _raw(make_cfg, twice)
    with pytest.raises(DataSourceError, match=r"data.data_files has no train split"):
        _raw(make_cfg, _files(tmp_path, val=2, test=2))


def test_a_hub_dataset_without_validation_split_gets_one_held_out(make_cfg, tmp_path):
    folder = tmp_path / "hub_dataset" / "data"
    folder.mkdir(parents=True)
    Dataset.from_list(_rows(10)).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    Dataset.from_list(_rows(3, start=10)).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    cfg = make_cfg("data.source=hub", f"data.dataset_name={folder.parent}", "data.val_fraction=0.3")
    raw = instantiate(cfg.data, _convert_="all").raw
    assert (len(raw["train"]), len(raw["val"]), len(raw["test"])) == (7, 3, 3)


def test_without_a_test_split_the_run_is_not_tested_and_says_so(make_cfg, tmp_path, caplog):
    """Only a training file: val is held out (the checkpoint still monitors val/rougeLsum), the test is skipped."""
    files = _files(tmp_path, train=12)
    overrides = [*QUICK, "test=true", "data.max_samples=null", "data.source=files", _files_override(files)]
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
    files = _files(tmp_path, train=10, val=6, test=6)
    caps = ["data.max_samples=5", "data.max_train_samples=3", "data.max_predict_samples=2"]
    datamodule = _datamodule(make_cfg, files, *caps)
    with caplog.at_level(logging.INFO):
        assert {split: len(dataset) for split, dataset in datamodule.raw.items()} == {"train": 3, "val": 5, "test": 2}
    assert "train: keeping the first 3 of 10 rows (data.max_train_samples=3)" in caplog.text
    assert "val: keeping the first 5 of 6 rows (data.max_samples=5)" in caplog.text
    assert "test: keeping the first 2 of 6 rows (data.max_predict_samples=2)" in caplog.text
    assert len(datamodule.tokenizer_training_texts()) == 3
    datamodule = _datamodule(make_cfg, files, "data.max_eval_samples=4")
    assert {split: len(dataset) for split, dataset in datamodule.raw.items()} == {"train": 10, "val": 4, "test": 6}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=1.5", r"data.val_fraction=1.5 must be a number > 0 and < 1, e.g. data.val_fraction=0.1"),
        ("data.val_fraction=0", r"data.val_fraction=0 must be a number > 0 and < 1"),
        ("data.num_proc=0", r"data.num_proc=0 must be an integer >= 1, e.g. data.num_proc=4"),
        ("data.max_train_samples=0", r"data.max_train_samples=0 must be an integer >= 1"),
        ("data.max_eval_samples=-2", r"data.max_eval_samples=-2 must be an integer >= 1"),
        ("data.max_predict_samples=abc", r"data.max_predict_samples='abc' must be an integer >= 1"),
    ],
)
def test_own_data_settings_are_checked_before_any_data_work(make_cfg, tmp_path, override, message):
    assert_refused_before_data_work(make_cfg(override), tmp_path, ConfigError, message)


def _tokenized_files(cache: Path) -> dict[str, float]:
    return {path.name: path.stat().st_mtime_ns for path in (cache / "tokenized").glob("*.arrow")}


def test_num_proc_tokenises_in_processes_and_overwrite_cache_tokenises_again(make_cfg, tmp_path):
    files = _files(tmp_path, train=8, val=4, test=4)
    tokenizer = _datamodule(make_cfg, files).train_tokenizer()

    def datamodule(cache: Path, *overrides: str):
        module = _datamodule(make_cfg, files, *overrides)
        module.cache_dir = cache
        module.tokenizer = tokenizer
        module.prepare_data()
        module.setup("fit")
        return module

    single = datamodule(tmp_path / "cache")
    written = _tokenized_files(tmp_path / "cache")
    assert len(written) == 3
    assert _tokenized_files(datamodule(tmp_path / "cache").cache_dir) == written  # reused as it is
    rewritten = _tokenized_files(datamodule(tmp_path / "cache", "data.overwrite_cache=true").cache_dir)
    assert rewritten.keys() == written.keys() and all(rewritten[name] != written[name] for name in written)

    parallel = datamodule(tmp_path / "parallel_cache", "data.num_proc=2")
    shards = [name for name in _tokenized_files(parallel.cache_dir) if name.endswith("_of_00002.arrow")]
    assert len(shards) == 6  # 2 per split, one per process
    for split in ("train", "val", "test"):
        assert list(parallel.datasets[split]["input_ids"]) == list(single.datasets[split]["input_ids"])


def test_editing_a_data_file_retokenises_and_retrains_the_tokenizer(make_cfg, tmp_path):
    files = _files(tmp_path, train=8, val=4, test=4)
    cache = tmp_path / "cache"

    def tokenized_train():
        module = _datamodule(make_cfg, files)
        module.cache_dir = cache
        module.tokenizer = module.train_tokenizer()
        module.setup("fit")
        return module.tokenizer.decode(module.datasets["train"][0]["input_ids"], skip_special_tokens=True)

    assert tokenized_train().startswith("document 0.")
    rows = _rows(8)
    rows[0]["document"] = rows[0]["document"].replace("document 0.", "edited text.")
    _write(Path(files["train"]), rows)
    assert tokenized_train().startswith("edited text.")
    assert len(list((cache / "tokenizers").iterdir())) == 2  # the tokenizer trained on the old texts is not reused


def _dataset_folder(root: Path, rows: dict[str, list[dict]]) -> Path:
    """A downloaded hub dataset: `section/<split>-00000-of-00001.parquet` and a README whose `configs:` names them."""
    folder = root / "arxiv-summarization"
    (folder / "section").mkdir(parents=True, exist_ok=True)
    files = "".join(f"  - split: {split}\n    path: section/{split}-*\n" for split in rows)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: section\n  data_files:\n{files}---\n")
    for split, split_rows in rows.items():
        Dataset.from_list(split_rows).to_parquet(str(folder / "section" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_a_local_dataset_folder_is_read_from_its_own_current_files(make_cfg, tmp_path):
    """datasets 5.2 caches a local folder under its name and config only: a second folder of the same name (a sample
    beside the full download) and rewritten files (a new download) silently loaded the first copy's rows, and the
    tokenized cache kept them (found in the full-size rehearsal: its 4,096-token runs trained on the papers of the
    tiny test stand-ins)."""
    cache = tmp_path / "cache"

    def first_train_document(folder: Path, tokenizer=None):
        module = instantiate(make_cfg("data.source=hub", f"data.dataset_name={folder}",
                                      "data.dataset_config=section").data, _convert_="all")  # fmt: skip
        module.cache_dir = cache
        module.tokenizer = tokenizer or module.train_tokenizer()
        module.setup("fit")
        decoded = module.tokenizer.decode(module.datasets["train"][0]["input_ids"], skip_special_tokens=True)
        return module.raw["train"]["document"][0], decoded, module.tokenizer

    first = _dataset_folder(tmp_path / "a", {"train": _rows(8), "validation": _rows(4, start=8)})
    raw, decoded, tokenizer = first_train_document(first)
    assert raw.startswith("document 0.") and decoded.startswith("document 0.")
    second = _dataset_folder(tmp_path / "b", {"train": _rows(8, start=100), "validation": _rows(4, start=8)})
    assert first_train_document(second, tokenizer)[0].startswith("document 100.")
    edited = _rows(8)
    edited[0]["document"] = edited[0]["document"].replace("document 0.", "edited text.")
    _dataset_folder(tmp_path / "a", {"train": edited, "validation": _rows(4, start=8)})
    raw, decoded, _ = first_train_document(first, tokenizer)  # same tokenizer: only the rows changed
    assert raw.startswith("edited text.") and decoded.startswith("edited text.")


# -- bad files and rows ----------------------------------------------------------------------------------------------
def test_rows_without_text_or_summary_are_dropped_naming_file_rows_and_columns(make_cfg, tmp_path, caplog):
    rows = _rows(6)
    rows[1]["document"] = None
    del rows[2]["summary"]  # a missing key reads as null
    rows[4]["summary"] = " \u00a0\n"
    train_file = _write(tmp_path / "holes.jsonl", rows)
    files = {**_files(tmp_path, val=2, test=2), "train": train_file}
    with caplog.at_level(logging.WARNING):
        raw = _raw(make_cfg, files)
    assert len(raw["train"]) == 3
    assert (
        f"train: dropped 3 of 6 rows with an empty or null document or summary ({train_file}: row 2: document; "
        "row 3: summary; row 5: summary)" in caplog.text
    )
    blank = _write(tmp_path / "blank.jsonl", [{"document": "", "summary": None}] * 2)
    with pytest.raises(DataSourceError, match=rf"{blank}: no row of the val split has every one of the columns"):
        _raw(make_cfg, {**files, "val": blank})


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jsonl", b""), ("blank_lines.jsonl", b"\n\n"), ("empty_list.json", b"[]"), ("header.csv", b"document\n")],
)
def test_a_file_without_rows_is_an_error_naming_it(make_cfg, tmp_path, name, content):
    files = _files(tmp_path, train=4, val=2, test=2)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataSourceError, match=rf"data.data_files.test: {path} (is empty|has no rows)"):
        _raw(make_cfg, {**files, "test": str(path)})


def test_a_file_that_does_not_parse_is_an_error_naming_key_and_file(make_cfg, tmp_path):
    """`data.data_files` and `lsgtrain predict --input` share one reader (`sources.read_table`): a broken row is
    named with the key and the file, not left to datasets' DatasetGenerationError, which names neither."""
    files = _files(tmp_path, train=4, val=2, test=2)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"document": "a document", "summary": "a summary"}\n{"document": \n')
    message = rf"data.data_files.test: cannot read {broken} as jsonl: line 2, column 14: Expecting value in "
    with pytest.raises(DataSourceError, match=message):  # the line, not only the parser's byte position
        _raw(make_cfg, {**files, "test": str(broken)})


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_non_utf8_bytes_are_an_error_naming_file_and_line_before_a_tokenizer_is_trained(make_cfg, tmp_path, suffix):
    rows = [{"document": f"row {i} " + " ".join(WORDS), "summary": f"summary {i}"} for i in range(40)]
    rows[30]["document"] = "Müller's café"
    data = Dataset.from_list(rows)
    path = tmp_path / f"latin1.{suffix}"
    if suffix == "csv":
        data.to_csv(str(path), index=False)  # line 32: header, then 31 rows
        line = 32
    else:
        data.to_json(str(path), lines=suffix == "jsonl", force_ascii=False)
        line = 31 if suffix == "jsonl" else 1
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    files = {**_files(tmp_path, val=2, test=2), "train": str(path)}
    cfg = make_cfg("data.source=files", _files_override(files))
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    with pytest.raises(
        DataSourceError,
        match=rf"data.data_files.train: {path} is not UTF-8: bytes b'\\xfc' on line {line} \(byte \d+ of the file\)"
        rf".*iconv -f latin1 -t utf-8 {path} > {path.with_suffix('.utf8.' + suffix)}",
    ):
        train(cfg)
    assert not (tmp_path / "cache").exists()  # no tokenizer trained, nothing tokenised


def test_utf8_check_reads_in_chunks_without_splitting_characters(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "UTF8_CHUNK_BYTES", 3)  # every "é" (2 bytes) below straddles some chunk boundary
    path = tmp_path / "accents.jsonl"
    path.write_bytes("é\nxé\néé\n".encode() * 5)
    sources.check_utf8(path, "data.data_files.train")
    path.write_bytes("é\nxé\néé\n".encode() * 5 + b"ok\nab\xe9z\n")
    with pytest.raises(DataSourceError, match=r"bytes b'\\xe9' on line 17 \(byte 65 of the file\)"):
        sources.check_utf8(path, "data.data_files.train")
    path.write_bytes("é\n".encode() + "é".encode()[:1])  # cut at the end of the file
    with pytest.raises(DataSourceError, match=r"bytes b'\\xc3' on line 2 \(byte 3 of the file\)"):
        sources.check_utf8(path, "data.data_files.train")
