"""Where a run's text comes from: the embedded aclsum papers, local files, or a hub dataset.

Every source yields a `datasets.DatasetDict` with a `train` split and, when the data has them, `val` and `test`
(their names in the data: `SPLIT_ALIASES`), plus where each split came from (a file, a hub split) so that errors and
warnings about rows name it. The datamodule then checks the columns, drops rows without text (`drop_empty_rows`),
carves a validation split from train when there is none (`carve_validation`) and caps each split (`cap_splits`).
"""

import codecs
import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, load_dataset
from datasets import config as datasets_config
from datasets.exceptions import DatasetGenerationError

from .aclsum import load_aclsum_split

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The names a split may have in `data.data_files` or in a hub dataset; `data.split_names` maps any other name.
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validation", "dev"), "test": ("test",)}
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_FORMATS = (".json", ".jsonl", ".csv")  # read as text: their bytes must be UTF-8
MAX_ROWS_NAMED = 10  # a warning about bad rows names this many of them
UTF8_CHUNK_BYTES = 1 << 24  # check_utf8 reads files in chunks of this size


class DataSourceError(ValueError):
    """A dataset that cannot be read as configured, with the reason and the fix."""


def load_splits(
    source: str,
    *,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    data_files: Mapping[str, str] | None = None,
    split_names: Mapping[str, str] | None = None,
) -> tuple[DatasetDict, dict[str, str]]:
    """Load the train split and whichever of val/test the data has.

    Args:
        source: `aclsum` (embedded papers), `files` (`data_files`: split -> json/jsonl/csv/parquet path) or `hub`
            (`dataset_name`, optional `dataset_config`).
        split_names: our split -> the data's name for it (e.g. `{"val": "holdout"}`); without it a split is found
            under any of its `SPLIT_ALIASES`.

    Returns:
        The splits, and where each came from (a file path, a hub split) for messages that name rows.
    """
    split_names = dict(split_names or {})
    unknown = sorted(set(split_names) - set(SPLITS))
    if unknown:
        raise DataSourceError(f"data.split_names: {unknown} are not splits; map our splits {list(SPLITS)} to names")
    if source == "aclsum":
        splits = DatasetDict({split: Dataset.from_list(list(load_aclsum_split(split))) for split in SPLITS})
        origins = {split: f"aclsum {split} split" for split in SPLITS}
    elif source == "files":
        splits, origins = _load_files(data_files or {}, split_names)
    elif source == "hub":
        splits, origins = _load_hub(dataset_name, dataset_config, split_names)
    else:
        raise DataSourceError(f"data.source={source!r} is unknown; choose one of 'aclsum', 'files', 'hub'")
    empty = [origins[split] for split, dataset in splits.items() if len(dataset) == 0]
    if empty:
        raise DataSourceError(f"data.source={source!r}: no rows in {', '.join(empty)}; each split needs rows")
    return splits, origins


def _match_splits(
    available: Iterable[str], split_names: Mapping[str, str], where: str, *, strict: bool
) -> dict[str, str]:
    """Our split -> the data's name for it. `strict`: every available name must be a split (a typo in a
    `data.data_files` key would otherwise drop that file, and with it the test, without a word)."""
    available = list(available)
    matched = {}
    for split in SPLITS:
        names = (split_names[split],) if split in split_names else SPLIT_ALIASES[split]
        found = [name for name in names if name in available]
        if split in split_names and not found:
            raise DataSourceError(
                f"data.split_names.{split}={split_names[split]!r} is not a split of {where}; it has {available}"
            )
        if len(found) > 1:
            raise DataSourceError(f"{where} has {found}, all names of the {split} split; keep one")
        if found:
            matched[split] = found[0]
    unused = [name for name in available if name not in matched.values()]
    if unused and strict:
        raise DataSourceError(
            f"{where}: {unused} is not a split name; use train, val (or validation, dev) and test, or map other "
            "names with data.split_names (e.g. data.split_names.val=holdout)"
        )
    if unused:
        logger.info("%s: not using the splits %s", where, unused)
    if "train" not in matched:
        raise DataSourceError(f"{where} has no train split (it has {available}); a run needs training data")
    return matched


def _load_files(data_files: Mapping[str, str], split_names: Mapping[str, str]) -> tuple[DatasetDict, dict[str, str]]:
    splits, origins = {}, {}
    for split, key in _match_splits(data_files, split_names, "data.data_files", strict=True).items():
        path = Path(os.path.expanduser(data_files[key]))
        splits[split] = read_table(path, f"data.data_files.{key}")
        origins[split] = str(path)
    return DatasetDict(splits), origins


def read_table(path: Path, key: str) -> Dataset:
    """The rows of a json / jsonl / csv / parquet file (by extension; `key` names it in errors): the one reader of
    a data file, for a run's `data.data_files` and `lsgtrain predict --input` alike. A missing, empty, non-UTF-8,
    row-less or unparsable file is an error naming the key and the file."""
    if not path.is_file():
        raise DataSourceError(f"{key}: no such file {path}")
    file_format = FILE_FORMATS.get(path.suffix)
    if file_format is None:
        raise DataSourceError(f"{path}: unsupported format '{path.suffix}'; use one of {sorted(FILE_FORMATS)}")
    if path.stat().st_size == 0:
        raise DataSourceError(f"{key}: {path} is empty; give a file with one row per document")
    if path.suffix in TEXT_FORMATS:
        check_utf8(path, key)
    try:
        return load_dataset(file_format, data_files=str(path), split="train")
    except (OSError, ValueError, DatasetGenerationError) as error:
        if "corresponds to no data" in str(error):  # datasets' words for a file that parses to nothing: `[]`, a header
            raise DataSourceError(f"{key}: {path} has no rows; give a file with one row per document") from error
        where = _bad_jsonl_line(path) if path.suffix == ".jsonl" else None
        raise DataSourceError(
            f"{key}: cannot read {path} as {path.suffix[1:]}: {where or error.__cause__ or error}; fix the file or "
            "export it again (one row per document)"
        ) from error


def _bad_jsonl_line(path: Path) -> str | None:
    """The first line of a jsonl file that is not one JSON value, with the parser's reason (datasets' own error
    gives a byte position in a block, and the line only in a log line above)."""
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line.rstrip("\n"))
            except json.JSONDecodeError as error:
                return f"line {number}, column {error.colno}: {error.msg} in {line.strip()[:80]!r}"
    return None


def check_utf8(path: Path, key: str) -> None:
    """Raise, naming the line and byte, if `path` is not UTF-8: datasets' json reader would otherwise load some
    such files with the bad bytes in the text, and its csv reader fails without naming the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0  # bytes and newlines read before the current chunk
    with path.open("rb") as file:
        while True:
            chunk = file.read(UTF8_CHUNK_BYTES)
            pending = decoder.getstate()[0]  # the start of a character cut by the previous chunk (never a newline)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                line = lines + (pending + chunk)[: error.start].count(b"\n") + 1
                at = offset - len(pending) + error.start
                bad = error.object[error.start : error.end]
                fixed = path.with_suffix(".utf8" + path.suffix)
                raise DataSourceError(
                    f"{key}: {path} is not UTF-8: bytes {bad!r} on line {line} (byte {at} of the file). Re-encode it "
                    f"from its real encoding and point {key} at the copy, e.g. "
                    f"`iconv -f latin1 -t utf-8 {path} > {fixed}` (`file -i {path}` guesses the encoding)"
                ) from None
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def _load_hub(
    dataset_name: str | None, dataset_config: str | None, split_names: Mapping[str, str]
) -> tuple[DatasetDict, dict[str, str]]:
    if not dataset_name:
        raise DataSourceError("data.source='hub' needs data.dataset_name (e.g. ccdv/arxiv-summarization)")
    try:
        everything = load_hub_dataset(dataset_name, dataset_config)
    except (OSError, ConnectionError, ValueError) as error:
        if "split" in str(error).lower() and "hub" not in str(error).lower():
            raise
        raise DataSourceError(
            f"could not fetch dataset '{dataset_name}' from the Hugging Face hub (offline? HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it where there is internet (hf download "
            f"{dataset_name} --repo-type dataset --local-dir DIR) and give the folder: data.dataset_name=DIR; or "
            "point the config at your own files: data.source=files data.data_files.train=... data.data_files.val=... "
            f"data.data_files.test=... (json, jsonl, csv or parquet). Cause: {error}"
        ) from error
    where = dataset_name + (f" ({dataset_config})" if dataset_config else "")
    matched = _match_splits(everything, split_names, where, strict=False)
    splits = DatasetDict({split: everything[name] for split, name in matched.items()})
    return splits, {split: f"{where} split {name}" for split, name in matched.items()}


def load_hub_dataset(dataset_name: str, dataset_config: str | None = None, **kwargs: Any) -> Any:
    """`datasets.load_dataset(dataset_name, dataset_config, **kwargs)`, with a cache of its own for a local folder.

    datasets (5.2) caches a local folder's arrow files under the folder's NAME and config only: another folder of
    the same name (a sample beside the full download) or rewritten files (a new download) would silently load the
    first copy's rows. The folder's own cache is named by its files' fingerprint, so it rebuilds when they change.
    """
    folder = local_dataset_folder(dataset_name)
    if folder is not None:
        kwargs["cache_dir"] = str(
            Path(datasets_config.HF_DATASETS_CACHE) / "lsgtrain-local" / local_folder_fingerprint(folder)
        )
    return load_dataset(dataset_name, dataset_config, **kwargs)


def local_dataset_folder(dataset_name: str | None) -> Path | None:
    """The folder `data.dataset_name` names (a downloaded copy of a hub dataset), or None for a hub name."""
    if not dataset_name:
        return None
    folder = Path(dataset_name).expanduser()
    return folder.resolve() if folder.is_dir() else None


def local_folder_fingerprint(folder: Path) -> str:
    """`<folder name>-<hash>` of the folder's absolute path and every file's relative path, size and modification
    time (hidden entries, e.g. `hf download`'s `.cache/`, excluded): it changes when any data file does, without
    reading gigabytes of data on every run."""
    files = sorted(
        path for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )  # fmt: skip
    stats = [(str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    digest = hashlib.sha256(repr([str(folder), stats]).encode()).hexdigest()[:16]
    return f"{folder.name}-{digest}"


def data_identity(
    source: str, *, dataset_name: str | None, dataset_config: str | None, data_files: Mapping[str, str] | None
) -> dict[str, Any]:
    """What a run trains on, cheap to compute before reading it: each data file's path, size and modification
    time, a local dataset folder's `local_folder_fingerprint`, a hub dataset's name and config (its revision:
    `hub_revision`). A checkpoint stores it, so that a resume on rewritten data is noticed."""
    if source == "files":
        files = data_files or {}
        return {"data_files": {key: _file_stamp(Path(os.path.expanduser(path))) for key, path in files.items()}}
    folder = local_dataset_folder(dataset_name) if source == "hub" else None
    if folder is not None:
        return {"folder": str(folder), "fingerprint": local_folder_fingerprint(folder), "config": dataset_config}
    if source == "hub":
        return {"dataset_name": dataset_name, "config": dataset_config}
    return {"source": source, "version": importlib.metadata.version(source)}  # aclsum: the package's papers


def _file_stamp(path: Path) -> dict[str, Any]:
    stat = path.stat()
    modified = datetime.datetime.fromtimestamp(stat.st_mtime_ns / 1e9).isoformat(timespec="microseconds")
    return {"path": str(path.resolve()), "bytes": stat.st_size, "modified": modified}


def hub_revision(splits: DatasetDict) -> str | None:
    """The commit of a hub dataset as loaded, where datasets records it (in the files' download URLs); else the
    name of its cache folder, which datasets derives from the builder config and the resolved data files."""
    for dataset in splits.values():
        for url in (dataset.info.download_checksums or {}) if dataset.info else {}:
            found = re.search(r"@([0-9a-f]{40})", url)
            if found:
                return found.group(1)
    caches = [cache["filename"] for dataset in splits.values() for cache in dataset.cache_files]
    return Path(caches[0]).parent.name if caches else None


def refuse_identical_files(data_files: Mapping[str, str], allow: bool) -> None:
    """Two splits read from one file (or two files with the same bytes): the test or validation score would be
    measured on training rows. Refused unless `allow` (data.allow_split_overlap), which only warns."""
    by_size: dict[int, list[tuple[str, Path]]] = {}
    for key, name in data_files.items():
        path = Path(os.path.expanduser(name))
        if path.is_file():
            by_size.setdefault(path.stat().st_size, []).append((f"data.data_files.{key}={name}", path))
    same = []
    for files in (files for files in by_size.values() if len(files) > 1):  # only equal sizes are read and hashed
        by_content: dict[str, list[str]] = {}
        for key, path in files:
            by_content.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(key)
        same += [keys for keys in by_content.values() if len(keys) > 1]
    if not same:
        return
    message = f"{' and '.join(same[0])} hold the same rows (the same file or identical bytes)"
    if allow:
        logger.warning("%s; data.allow_split_overlap=true: going on, scores on that split are not held-out", message)
        return
    raise DataSourceError(
        f"{message}: a split scored on training rows says nothing about unseen documents. Give each split its own "
        "rows; to go on anyway (e.g. a smoke test), set data.allow_split_overlap=true"
    )


# (split, earlier split) pairs whose shared documents make the first split's scores not held-out: a test document
# also in validation was chosen on (the best checkpoint, early stopping), one in training was trained on.
OVERLAP_PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))


def warn_split_overlap(splits: DatasetDict, text_column: str, origins: Mapping[str, str]) -> dict[tuple[str, str], int]:
    """Count the validation rows whose text (whitespace collapsed) is also a training row's, and the test rows also
    in training or in validation, by hash so that it stays cheap on arXiv-sized data, and warn naming the first
    ones; returns (split, other split) -> count."""
    hashes = {split: [_text_hash(text) for text in dataset[text_column]] for split, dataset in splits.items()}
    counts = {}
    for split, other in OVERLAP_PAIRS:
        if split not in splits or other not in splits:
            continue
        seen = set(hashes[other])
        shared = [i for i, digest in enumerate(hashes[split]) if digest in seen]
        counts[split, other] = len(shared)
        if shared:
            named = ", ".join(str(i + 1) for i in shared[:MAX_ROWS_NAMED])
            more = f" and {len(shared) - MAX_ROWS_NAMED} more" if len(shared) > MAX_ROWS_NAMED else ""
            consequence = "trained on" if other == "train" else "used to choose the best checkpoint"
            logger.warning(
                "%s: %d of %d rows are also in the %s split (same %s after collapsing whitespace; %s rows %s%s): "
                "their scores are not held-out (%s)", split, len(shared), len(splits[split]),
                "training" if other == "train" else "validation", text_column, origins[split], named, more,
                consequence,
            )  # fmt: skip
    return counts


def _text_hash(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).digest()


def drop_empty_rows(splits: DatasetDict, columns: Mapping[str, str], origins: Mapping[str, str]) -> DatasetDict:
    """Drop rows with nothing to learn from or score against: a configured column that is missing, null, or
    blank text; the warning names the file (or hub split) and the first rows, counted from 1 in file order.

    Our documented choice (docs/data.md "Data with holes"): such rows are dropped from every split and counted in the
    log, rather than trained on (an empty summary teaches the model to stop at once) or failing inside the
    tokenizer; a split left without rows is an error.
    """
    kept = {}
    for split, dataset in splits.items():
        holes = {column: _holes(dataset.with_format("arrow")[column]) for column in columns.values()}
        bad = np.flatnonzero(np.logical_or.reduce(list(holes.values())))
        if len(bad) == len(dataset):
            raise DataSourceError(
                f"{origins[split]}: no row of the {split} split has every one of the columns "
                f"{sorted(columns.values())} filled"
            )
        if len(bad):
            named = "; ".join(
                f"row {i + 1}: {', '.join(column for column, mask in holes.items() if mask[i])}"
                for i in bad[:MAX_ROWS_NAMED]
            )
            more = f"; and {len(bad) - MAX_ROWS_NAMED} more" if len(bad) > MAX_ROWS_NAMED else ""
            logger.warning("%s: dropped %d of %d rows with an empty or null %s (%s: %s%s)", split, len(bad),
                           len(dataset), " or ".join(columns.values()), origins[split], named, more)  # fmt: skip
            dataset = dataset.select(np.setdiff1d(np.arange(len(dataset)), bad))
        kept[split] = dataset
    return DatasetDict(kept)


def _holes(values: pa.ChunkedArray) -> np.ndarray:
    """True where a value is null (a missing json key reads as null) or text of whitespace only."""
    missing = pc.is_null(values)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        missing = pc.or_kleene(missing, pc.match_substring_regex(values, r"^[\s\pZ]*$"))
    return pc.fill_null(missing, False).to_numpy(zero_copy_only=False)


def carve_validation(splits: DatasetDict, fraction: float | None, seed: int, origins: dict[str, str]) -> DatasetDict:
    """Without a validation split, hold out a seeded `fraction` of train as one (at least one row, logged);
    `origins` gains the held-out split's."""
    if "val" in splits:
        return splits
    train = splits["train"]
    if fraction is None:
        raise DataSourceError(
            f"{origins['train']}: the data has no validation split and data.val_fraction=null; give one "
            "(data.data_files.val=...) or set data.val_fraction=0.1 to hold out 10% of train"
        )
    size = max(1, round(fraction * len(train)))
    if size >= len(train):
        raise DataSourceError(
            f"{origins['train']}: {len(train)} training rows are too few to hold out data.val_fraction={fraction} "
            "as a validation split and keep some to train on; give a validation file (data.data_files.val=...)"
        )
    parts = train.train_test_split(test_size=size, seed=seed)
    logger.info("no validation split: held out %d of %d training rows as val (data.val_fraction=%g, seed %d); "
                "train %d rows, val %d rows", size, len(train), fraction, seed, len(parts["train"]),
                len(parts["test"]))  # fmt: skip
    origins["val"] = f"{origins['train']} (held out)"
    return DatasetDict({**splits, "train": parts["train"], "val": parts["test"]})


def cap_splits(splits: DatasetDict, caps: Mapping[str, tuple[str, int | None]]) -> DatasetDict:
    """Keep the first N rows of a split; `caps`: split -> (the config key, N or None for all)."""
    capped = {}
    for split, dataset in splits.items():
        key, cap = caps[split]
        if cap is not None and cap < len(dataset):
            logger.info("%s: keeping the first %d of %d rows (data.%s=%d)", split, cap, len(dataset), key, cap)
            dataset = dataset.select(range(cap))
        capped[split] = dataset
    return DatasetDict(capped)


@dataclass(frozen=True)
class SplitRows:
    """How a split's rows came to be what a run used: the rows the data had, the empty ones dropped, the rows
    moved between train and val by the hold-out (`held_out`: taken from train / given to val), the rows left
    before the cap (`available`), the cap applied (`cap_key`: `max_samples` or the split's own key, None when it
    kept every row) and the rows used."""

    loaded: int
    dropped: int
    held_out: int
    available: int
    cap_key: str | None
    cap: int | None
    used: int


def count_rows(
    loaded: Mapping[str, int], kept: DatasetDict, carved: DatasetDict, capped: DatasetDict,
    caps: Mapping[str, tuple[str, int | None]],
) -> dict[str, SplitRows]:  # fmt: skip
    """Each split's `SplitRows`, from the row counts after loading (`loaded`), `drop_empty_rows` (`kept`),
    `carve_validation` (`carved`) and `cap_splits` (`capped`)."""
    rows = {}
    for split, dataset in capped.items():
        before_cap = len(carved[split])
        key, cap = caps[split]
        held_out = before_cap if split == "val" and "val" not in loaded else len(kept[split]) - before_cap
        rows[split] = SplitRows(
            loaded=loaded.get(split, 0), dropped=loaded[split] - len(kept[split]) if split in loaded else 0,
            held_out=held_out, available=before_cap, cap_key=key if len(dataset) < before_cap else None,
            cap=cap if len(dataset) < before_cap else None, used=len(dataset),
        )  # fmt: skip
    return rows


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


# Columns tokenised as text: strings (nulls are dropped as empty rows), not numbers or lists
TEXT_KEYS = ("text_column", "summary_column")


def check_columns(splits: DatasetDict, columns: Mapping[str, str], origins: Mapping[str, str]) -> None:
    """Raise if a configured column (key: the config key naming it) is missing from a split, or if a text column
    (`TEXT_KEYS`) holds other values: the tokenizer would fail on them after being trained, naming no file, column
    or row."""
    for split, dataset in splits.items():
        for key, column in columns.items():
            if column not in dataset.column_names:
                raise DataSourceError(
                    f"data.{key}={column!r} is not a column of the {split} split; "
                    f"columns present: {dataset.column_names}"
                )
            feature = dataset.features[column]
            if key not in TEXT_KEYS or getattr(feature, "dtype", None) in ("string", "large_string", "null"):
                continue
            row, value = next(((i, v) for i, v in enumerate(dataset[column]) if v is not None), (None, None))
            if row is None:
                continue  # only nulls: dropped as empty rows
            raise DataSourceError(
                f"data.{key}={column!r} of the {split} split ({origins[split]}) holds {type(value).__name__} values, "
                f"not text: the first is row {row}, {value!r:.80}. Give that column as strings, or name the text "
                f"column in data.{key}"
            )
