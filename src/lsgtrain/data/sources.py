"""Where a run's text comes from: the embedded aclsum papers, local files, or a hub dataset.

Every source yields a `datasets.DatasetDict` with the splits `train`, `val`, `test`, whose columns are then
checked against the configured ones, so that a typo names the columns that do exist.
"""

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from .aclsum import load_aclsum_split

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DataSourceError(ValueError):
    """A dataset that cannot be read as configured, with the reason and the fix."""


def load_splits(
    source: str,
    *,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    data_files: Mapping[str, str] | None = None,
    split_names: Mapping[str, str] | None = None,
    max_samples: int | None = None,
) -> DatasetDict:
    """Load the train/val/test splits.

    Args:
        source: `aclsum` (embedded papers), `files` (`data_files`: split -> json/jsonl/csv/parquet path) or `hub`
            (`dataset_name`, optional `dataset_config`).
        split_names: our split name -> the dataset's (e.g. `{"val": "validation"}`); defaults to the same names.
        max_samples: keep the first N rows of each split (quick runs).
    """
    split_names = {split: (split_names or {}).get(split, split) for split in SPLITS}
    if source == "aclsum":
        splits = DatasetDict({split: Dataset.from_list(list(load_aclsum_split(split))) for split in SPLITS})
    elif source == "files":
        splits = _load_files(data_files or {}, split_names)
    elif source == "hub":
        splits = _load_hub(dataset_name, dataset_config, split_names)
    else:
        raise DataSourceError(f"data.source={source!r} is unknown; choose one of 'aclsum', 'files', 'hub'")
    if max_samples is not None:
        splits = DatasetDict({k: v.select(range(min(max_samples, len(v)))) for k, v in splits.items()})
    empty = [split for split, dataset in splits.items() if len(dataset) == 0]
    if empty:
        raise DataSourceError(f"data.source={source!r}: no rows in the {', '.join(empty)} split; each split needs rows")
    return splits


def _load_files(data_files: Mapping[str, str], split_names: Mapping[str, str]) -> DatasetDict:
    splits = {}
    for split in SPLITS:
        path = data_files.get(split_names[split]) or data_files.get(split)
        if path is None:
            raise DataSourceError(f"data.data_files has no '{split}' file; give one per split: {list(SPLITS)}")
        path = Path(os.path.expanduser(path))
        if not path.is_file():
            raise DataSourceError(f"data.data_files.{split}: no such file {path}")
        file_format = FILE_FORMATS.get(path.suffix)
        if file_format is None:
            raise DataSourceError(f"{path}: unsupported format '{path.suffix}'; use one of {sorted(FILE_FORMATS)}")
        if path.stat().st_size == 0:
            raise DataSourceError(f"data.data_files.{split}: {path} is empty; give a file with one row per document")
        splits[split] = load_dataset(file_format, data_files=str(path), split="train")
    return DatasetDict(splits)


def _load_hub(dataset_name: str | None, dataset_config: str | None, split_names: Mapping[str, str]) -> DatasetDict:
    if not dataset_name:
        raise DataSourceError("data.source='hub' needs data.dataset_name (e.g. ccdv/arxiv-summarization)")
    try:
        return DatasetDict(
            {split: load_dataset(dataset_name, dataset_config, split=split_names[split]) for split in SPLITS}
        )
    except (OSError, ConnectionError, ValueError) as error:
        if "split" in str(error).lower() and "hub" not in str(error).lower():
            raise
        raise DataSourceError(
            f"could not fetch dataset '{dataset_name}' from the Hugging Face hub (offline? HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it where there is internet and point the config "
            "at local files: data.source=files data.data_files.train=... data.data_files.val=... "
            f"data.data_files.test=... (json, jsonl, csv or parquet). Cause: {error}"
        ) from error


def drop_empty_rows(splits: DatasetDict, columns: Mapping[str, str]) -> DatasetDict:
    """Drop rows with nothing to learn from or score against: a configured column that is null, or blank text.

    Our documented choice (README "Data with holes"): such rows are dropped from every split and counted in the
    log, rather than trained on (an empty summary teaches the model to stop at once) or failing inside the
    tokenizer; a split left without rows is an error.
    """
    kept = {}
    for split, dataset in splits.items():
        values = zip(*(dataset[column] for column in columns.values()), strict=True)
        keep = [i for i, row in enumerate(values) if all(_has_content(value) for value in row)]
        if not keep:
            raise DataSourceError(
                f"the {split} split has no row with every one of the columns {sorted(columns.values())} filled"
            )
        if len(keep) < len(dataset):
            logger.warning("%s: dropped %d of %d rows with an empty or null %s", split, len(dataset) - len(keep),
                           len(dataset), " or ".join(columns.values()))  # fmt: skip
            dataset = dataset.select(keep)
        kept[split] = dataset
    return DatasetDict(kept)


SHORT_DOCUMENT_WORDS = 20  # below this a "long document" is more likely a broken row than a text


def log_lengths(splits: DatasetDict, text_column: str) -> None:
    """Log each split's row count and its shortest and median document in words, and warn with a count when some
    documents are shorter than `SHORT_DOCUMENT_WORDS` (kept: short is not empty, but usually a sign of broken
    data such as 3-word stand-ins)."""
    for split, dataset in splits.items():
        words = sorted(len(text.split()) for text in dataset[text_column])
        logger.info("%s: %d rows, document words min %d, median %d", split, len(words), words[0],
                    words[len(words) // 2])  # fmt: skip
        short = sum(count < SHORT_DOCUMENT_WORDS for count in words)
        if short:
            logger.warning("%s: %d of %d documents have fewer than %d words (shortest: %d); check the data",
                           split, short, len(words), SHORT_DOCUMENT_WORDS, words[0])  # fmt: skip


def _has_content(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def check_columns(splits: DatasetDict, columns: Mapping[str, str]) -> None:
    """Raise if a configured column (key: the config key naming it) is missing from a split."""
    for split, dataset in splits.items():
        for key, column in columns.items():
            if column not in dataset.column_names:
                raise DataSourceError(
                    f"data.{key}={column!r} is not a column of the {split} split; "
                    f"columns present: {dataset.column_names}"
                )
