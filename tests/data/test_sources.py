"""Reading data (data/sources.py): local files in every format, local dataset folders from their own files, bad files
and rows named (empty, blank, non-UTF-8, missing columns), hub datasets offline."""

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset
from hydra.utils import instantiate
from omegaconf import open_dict

from lsgtrain.data import sources
from lsgtrain.data.sources import DataSourceError
from lsgtrain.train import train

from ..helpers import QUICK, WORDS, data_files_override
from .helpers import own_files, own_files_override, own_raw, own_rows, write_rows


def _dataset_folder(root: Path, rows: dict[str, list[dict]]) -> Path:
    """A downloaded hub dataset: `section/<split>-00000-of-00001.parquet` and a README whose `configs:` names them."""
    folder = root / "arxiv-summarization"
    (folder / "section").mkdir(parents=True, exist_ok=True)
    files = "".join(f"  - split: {split}\n    path: section/{split}-*\n" for split in rows)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: section\n  data_files:\n{files}---\n")
    for split, split_rows in rows.items():
        Dataset.from_list(split_rows).to_parquet(str(folder / "section" / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_local_files_in_every_format(suffix, tmp_path):
    from datasets import Dataset

    from lsgtrain.data.sources import load_splits

    files = {}
    for split in ("train", "val", "test"):
        data = Dataset.from_list([{"article": f"text {i}", "abstract": f"sum {i}"} for i in range(3)])
        path = tmp_path / f"{split}.{suffix}"
        {"jsonl": data.to_json, "csv": data.to_csv, "parquet": data.to_parquet}[suffix](str(path))
        files[split] = str(path)
    splits, origins = load_splits("files", data_files=files)
    assert origins["val"] == files["val"]
    assert splits["val"][1] == {"article": "text 1", "abstract": "sum 1"}


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

    first = _dataset_folder(tmp_path / "a", {"train": own_rows(8), "validation": own_rows(4, start=8)})
    raw, decoded, tokenizer = first_train_document(first)
    assert raw.startswith("document 0.") and decoded.startswith("document 0.")
    second = _dataset_folder(tmp_path / "b", {"train": own_rows(8, start=100), "validation": own_rows(4, start=8)})
    assert first_train_document(second, tokenizer)[0].startswith("document 100.")
    edited = own_rows(8)
    edited[0]["document"] = edited[0]["document"].replace("document 0.", "edited text.")
    _dataset_folder(tmp_path / "a", {"train": edited, "validation": own_rows(4, start=8)})
    raw, decoded, _ = first_train_document(first, tokenizer)  # same tokenizer: only the rows changed
    assert raw.startswith("edited text.") and decoded.startswith("edited text.")


def test_empty_data_file_and_blank_rows(make_cfg, standin_files, tmp_path, caplog):
    files = standin_files("summarization", "document", "summary")
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    cfg = make_cfg("data.source=files", data_files_override({**files, "val": empty}))
    with pytest.raises(ValueError, match=rf"data.data_files.val: {empty} is empty"):
        train(cfg)
    rows = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    rows[1]["document"], rows[2]["summary"], rows[3]["summary"] = None, "", "   "
    rows[4]["document"] = "three word document"
    holes = tmp_path / "holes.jsonl"
    holes.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = make_cfg("data.source=files", data_files_override({**files, "train": holes}))
    datamodule = instantiate(cfg.data, _convert_="all")
    with caplog.at_level("INFO"):
        assert len(datamodule.raw["train"]) == len(rows) - 3
    assert "train: dropped 3 of 6 rows with an empty or null document or summary" in caplog.text
    assert "train: 3 rows, document words min 3" in caplog.text
    assert "train: 1 of 3 documents have fewer than 20 words (shortest: 3)" in caplog.text
    assert None not in datamodule.raw["train"]["document"]


# -- bad files and rows ----------------------------------------------------------------------------------------------
def test_rows_without_text_or_summary_are_dropped_naming_file_rows_and_columns(make_cfg, tmp_path, caplog):
    rows = own_rows(6)
    rows[1]["document"] = None
    del rows[2]["summary"]  # a missing key reads as null
    rows[4]["summary"] = " \u00a0\n"
    train_file = write_rows(tmp_path / "holes.jsonl", rows)
    files = {**own_files(tmp_path, val=2, test=2), "train": train_file}
    with caplog.at_level(logging.WARNING):
        raw = own_raw(make_cfg, files)
    assert len(raw["train"]) == 3
    assert (
        f"train: dropped 3 of 6 rows with an empty or null document or summary ({train_file}: row 2: document; "
        "row 3: summary; row 5: summary)" in caplog.text
    )
    blank = write_rows(tmp_path / "blank.jsonl", [{"document": "", "summary": None}] * 2)
    with pytest.raises(DataSourceError, match=rf"{blank}: no row of the val split has every one of the columns"):
        own_raw(make_cfg, {**files, "val": blank})


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jsonl", b""), ("blank_lines.jsonl", b"\n\n"), ("empty_list.json", b"[]"), ("header.csv", b"document\n")],
)
def test_a_file_without_rows_is_an_error_naming_it(make_cfg, tmp_path, name, content):
    files = own_files(tmp_path, train=4, val=2, test=2)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataSourceError, match=rf"data.data_files.test: {path} (is empty|has no rows)"):
        own_raw(make_cfg, {**files, "test": str(path)})


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
    files = {**own_files(tmp_path, val=2, test=2), "train": str(path)}
    cfg = make_cfg("data.source=files", own_files_override(files))
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


def test_bad_column_names_the_columns_present(make_cfg):
    message = r"data.summary_column='abstract' is not a column of the train split; columns present: \['id', 'doc"
    with pytest.raises(Exception, match=message):
        train(make_cfg("data.summary_column=abstract", "data.max_samples=4"))


def test_offline_hub_dataset_gives_a_clear_error(make_cfg):
    expected = r"could not fetch dataset 'ccdv/arxiv-summarization'.*data\.dataset_name=DIR.*data\.source=files"
    with pytest.raises(Exception, match=expected):
        train(make_cfg("data=arxiv_sum", "data.tokenizer.pretrained=null"))


def test_a_file_that_does_not_parse_is_an_error_naming_key_and_file(make_cfg, tmp_path):
    """`data.data_files` and `lsgtrain predict --input` share one reader (`sources.read_table`): a broken row is
    named with the key and the file, not left to datasets' DatasetGenerationError, which names neither."""
    files = own_files(tmp_path, train=4, val=2, test=2)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"document": "a document", "summary": "a summary"}\n{"document": \n')
    message = rf"data.data_files.test: cannot read {broken} as jsonl: line 2, column 14: Expecting value in "
    with pytest.raises(DataSourceError, match=message):  # the line, not only the parser's byte position
        own_raw(make_cfg, {**files, "test": str(broken)})


def test_a_summary_column_that_is_not_text_is_named_before_a_tokenizer_is_trained(make_cfg, standin_files, tmp_path):
    """Before: transformers' message while tokenising, after the tokenizer was trained, naming no file, column or
    row (issue 26.13)."""
    files = standin_files("classification", "document", "summary")  # `summary` holds class ids
    cfg = make_cfg(*QUICK, "data.source=files", data_files_override(files))
    message = rf"data.summary_column='summary' of the train split \({files['train']}\) holds int values, not text: "
    with pytest.raises(DataSourceError, match=message + r"the first is row 0, 0. Give that column as strings"):
        train(cfg)
    assert not (tmp_path / "run" / "tokenizer").exists()
