"""Reading a Hugging Face checkpoint named by a local folder or a hub id: the one place that decides which of the
two a name is (`local_folder`), reads its `config.json` (`read_config`) and loads its tokenizer (`load_tokenizer`).

The model factory, the converter, `lsgtrain predict`, the evaluation and the export check all go through these, so a
name means the same checkpoint everywhere and an offline hub error always names the key and the fix. (Lightning's
`.ckpt` files are `lsgtrain.checkpointing`'s.) Tokenizers are loaded here, not in `lsgtrain.data.tokenizer`, because
the factory and the converter load a checkpoint's own tokenizer and `modeling` never imports `data`.
"""

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Files that make a folder hold a tokenizer (fast `tokenizer.json`, or Pegasus' SentencePiece model).
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# Pegasus' reserved ids before the SentencePiece pieces: pad, eos, <mask_1>, <mask_2>, <unk_2>..<unk_102>.
PEGASUS_OFFSET = 103


class CheckpointError(ValueError):
    """A checkpoint, or a tokenizer, that cannot be used as configured, with the reason and the fix."""


def local_folder(name: str | os.PathLike, key: str) -> Path | None:
    """The folder `name` is, or None when it is a hub id: the one local-or-hub rule.

    Whatever exists at the path is local (a file there is an error: a checkpoint is a folder). A name that does not
    exist but can only be a path (it starts with `.`, `/` or `~`, or has more than one `/`, which no hub id has) is
    a missing folder, named at once rather than looked up on the hub.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    text = os.fspath(name)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{key}={text}: no checkpoint folder there")
    return None


def _offline_error(name: str, key: str, what: str, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"could not fetch {what} '{name}' from the Hugging Face hub (offline? HF_HUB_OFFLINE="
        f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it where there is internet "
        f"(`hf download {name} --local-dir DIR`) and set {key}=DIR. Cause: {error}"
    )


def read_config(name: str | os.PathLike, key: str) -> dict[str, Any]:
    """The raw `config.json` of a checkpoint folder or hub id (`key`: how messages name it, e.g. `model.pretrained`)."""
    folder = local_folder(name, key)
    if folder is None:
        try:
            return PretrainedConfig.get_config_dict(os.fspath(name))[0]
        except OSError as error:
            raise _offline_error(os.fspath(name), key, "model", error) from error
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{key}={name} has no config.json: it is not a Hugging Face checkpoint folder")
    return json.loads((folder / "config.json").read_text())


def architectures(config: Mapping[str, Any]) -> list[str]:
    """The model classes a `config.json` names (`save_pretrained` writes them; a hand-written config may have none)."""
    return list(config.get("architectures") or ())


def load_tokenizer(name: str | os.PathLike, key: str, *, optional: bool = False) -> PreTrainedTokenizerBase | None:
    """The tokenizer of a checkpoint folder or hub id, or a tokenizer folder: the one tokenizer loader.

    `AutoTokenizer.from_pretrained`, with a Pegasus tokenizer's ids checked against its `spiece.model`: transformers 5
    converts `spiece.model` itself when a folder has no `tokenizer.json` (google/pegasus-large), and misreads the
    `tokenizer_config.json` that transformers 4 wrote: with both `mask_token` and `mask_token_sent` named, `<mask_1>`
    and `<mask_2>` swap ids (2 <-> 3); with only one of them, every piece moves by one id. Pegasus' layout is fixed
    (pad 0, eos 1, `<mask_1>` 2, `<mask_2>` 3, `<unk_2>`..`<unk_102>` 4-104, piece i of `spiece.model` at i + 103),
    so a tokenizer that departs from it is rebuilt from `spiece.model` alone.

    Args:
        name: a folder or hub id.
        key: how messages name it (`model.pretrained`, `data.tokenizer.pretrained`, ...).
        optional: a local folder without tokenizer files (`TOKENIZER_FILES`) gives None instead of an error (the
            converter then converts the weights only).
    """
    folder = local_folder(name, key)
    if folder is not None and not any((folder / file).is_file() for file in TOKENIZER_FILES):
        if optional:
            return None
        raise CheckpointError(
            f"{key}={name} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): copy the files of the tokenizer the "
            "model was trained with into it, or, in a run, set data.tokenizer.pretrained to that tokenizer"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        if folder is None:
            raise _offline_error(os.fspath(name), key, "the tokenizer", error) from error
        damaged = _damaged_json(folder)
        if damaged:
            raise CheckpointError(
                f"{key}={name}: its {damaged[0]} is damaged (truncated, or not JSON: {damaged[1]}): copy that file "
                "again from where the tokenizer came from (the run's hf_model folder, the hub), or give another "
                "tokenizer"
            ) from error
        raise CheckpointError(f"could not load the tokenizer {key}={name}: {error}") from error
    spiece = None if folder is None else folder / "spiece.model"
    if type(tokenizer).__name__ != "PegasusTokenizer" or spiece is None or not spiece.is_file():
        return tokenizer
    return _with_pegasus_ids(tokenizer, spiece, name)


def tokenizer_overflow(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> str | None:
    """Why `tokenizer` cannot feed a model of `vocab_size` embedding rows (an id with no row: an IndexError in the
    embedding lookup), or None. The training factory and `lsgtrain predict` both ask, before any output is written."""
    largest = max(tokenizer.get_vocab().values())
    if largest < vocab_size:
        return None
    return f"its largest id is {largest} but the model has {vocab_size} embedding rows"


def _damaged_json(folder: Path) -> tuple[str, str] | None:
    """The first of a tokenizer folder's JSON files that does not parse (a copy cut short), and why; None if all do."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8", errors="replace"))
            except json.JSONDecodeError as error:
                return name, str(error)
    return None


def _with_pegasus_ids(tokenizer: PreTrainedTokenizerBase, spiece: Path, name: str | os.PathLike):
    expected = pegasus_vocabulary(spiece)
    if tokenizer.get_vocab() == expected:
        return tokenizer
    logger.warning("%s: the tokenizer as transformers loads it departs from spiece.model's ids; rebuilding it", name)
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(spiece, folder)
        config = {"tokenizer_class": "PegasusTokenizer", "model_max_length": tokenizer.model_max_length}
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps(config))
        rebuilt = AutoTokenizer.from_pretrained(folder)
    if rebuilt.get_vocab() != expected:
        raise CheckpointError(f"{name}: cannot build a tokenizer with Pegasus' ids from its spiece.model")
    rebuilt.name_or_path = str(name)
    return rebuilt


def pegasus_vocabulary(spiece: str | os.PathLike) -> dict[str, int]:
    """Token -> id of a Pegasus tokenizer over `spiece` (pieces 0 and 1, pad and eos, are the reserved ids 0 and 1)."""
    import sentencepiece

    model = sentencepiece.SentencePieceProcessor(model_file=str(spiece))
    vocabulary = {"<pad>": 0, "</s>": 1, "<mask_1>": 2, "<mask_2>": 3}
    vocabulary.update({f"<unk_{i}>": i + 2 for i in range(2, PEGASUS_OFFSET)})
    for piece_id in range(2, model.get_piece_size()):
        vocabulary.setdefault(model.id_to_piece(piece_id), piece_id + PEGASUS_OFFSET)
    return vocabulary


__all__ = [
    "TOKENIZER_FILES",
    "CheckpointError",
    "architectures",
    "load_tokenizer",
    "local_folder",
    "pegasus_vocabulary",
    "read_config",
    "tokenizer_overflow",
]
