"""Local summarization files for the data tests: rows that say which row they are, one file per split key, the
datamodule reading them."""

import json
from pathlib import Path

from hydra.utils import instantiate

from ..helpers import WORDS


def own_rows(count: int, start: int = 0) -> list[dict]:
    """Summarization rows whose text says which row they are, long enough for a tokenizer and a batch."""
    text = " ".join(WORDS * 3)
    return [
        {"document": f"document {start + i}. {text}", "summary": f"summary {start + i} {WORDS[i % len(WORDS)]}"}
        for i in range(count)
    ]


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def own_files(tmp_path: Path, **sizes: int) -> dict[str, str]:
    """One jsonl file per split key (`train=12, dev=4`), rows numbered across files."""
    files, start = {}, 0
    for key, size in sizes.items():
        files[key] = write_rows(tmp_path / f"{key}.jsonl", own_rows(size, start))
        start += size
    return files


def own_files_override(files: dict[str, str]) -> str:
    return "data.data_files={" + ",".join(f"{key}:{path}" for key, path in files.items()) + "}"


def own_datamodule(make_cfg, files: dict[str, str], *overrides: str):
    return instantiate(make_cfg("data.source=files", own_files_override(files), *overrides).data, _convert_="all")


def own_raw(make_cfg, files: dict[str, str], *overrides: str):
    """The datamodule's loaded, checked, held-out and capped splits."""
    return own_datamodule(make_cfg, files, *overrides).raw


def documents_of(dataset) -> set[str]:
    return set(dataset["document"])


EOS = 1
