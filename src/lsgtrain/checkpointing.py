"""Checkpoint files that are either complete or absent, where a resumed run finds the last one and its tokenizer, how
checkpoints are read without running code from them, and what a resume must agree on with the checkpoint's run."""

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from typing_extensions import override

from .modeling.loading import CheckpointError
from .run.keys import resume_fixed, values_before_the_keys

if TYPE_CHECKING:
    from .data.datamodule import LongDocumentDataModule

logger = logging.getLogger(__name__)

POSITION_TABLE = "embed_positions.weight"  # the sinusoidal tables, as long as the length a model was built for
SHARDED_WEIGHTS = "state_dict."  # the prefix of the module's weights among a sharded checkpoint's tensors
SHARDED_INDEX = ".metadata"  # torch.distributed.checkpoint's index of the shards
SHARDED_INDEX_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem", "pathlib")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that saves to `.name.tmp` and `os.replace`s it, so a crash or kill during a save never
    leaves a truncated `.ckpt` that a resume could pick up; a save that fails (disk full) removes its temporary
    file. Remote paths fall back to the plain save."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """`last.ckpt` in the first `ModelCheckpoint`'s folder (`<run dir>/checkpoints` when none is configured)."""
    callback = trainer.checkpoint_callback
    folder = Path(callback.dirpath) if isinstance(callback, ModelCheckpoint) and callback.dirpath else None
    folder = folder or Path(trainer.default_root_dir) / "checkpoints"
    return folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


def resolve_resume_checkpoint(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """`last` -> this run directory's `last.ckpt` if there is one (a rerun, a requeued job), else a fresh start."""
    if ckpt_path != "last":
        return ckpt_path
    last = complete_last(last_checkpoint_path(trainer))
    return str(last) if last else None


def load_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors and plain values only, so no code in the file runs.

    Our checkpoints hold nothing else (the optimizer and scheduler factories stay out of the hyper-parameters,
    NumPy's generator state is stored as a list). `key` names the config key in error messages. A sharded checkpoint
    (a folder, trainer=fsdp) gives its run state and, as its `state_dict`, each weight's shape as a meta tensor
    (`consolidated_checkpoint` gathers the values).
    """
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"{key}={path}: no checkpoint file there; give an existing .ckpt, or {key}=null")
    try:
        if path.is_dir():
            return _sharded_checkpoint(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        refused = str(error).split("\n\n")[1] if "\n\n" in str(error) else str(error)
        raise CheckpointError(
            f"{key}={path} holds objects other than tensors and plain values ({refused.strip()[:300]}); lsgtrain "
            "loads checkpoints with weights_only=True, so that a file cannot run code. Checkpoints written by "
            "lsgtrain never need more; re-save this one as plain tensors where it came from."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{key}={path} is not a readable checkpoint (truncated, or not a torch file): {error}{_others(path, key)}"
        ) from error


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """A folder a sharded strategy wrote (`torch.distributed.checkpoint` shards and Lightning's `meta.pt`)."""
    return (Path(path) / _METADATA_FILENAME).is_file()


def checkpoint_exists(path: Path) -> bool:
    """A checkpoint file, or a complete sharded checkpoint folder (`lsgtrain.sharding` renames it in when done)."""
    return path.is_file() or is_sharded_checkpoint(path)


def complete_last(last: Path) -> Path | None:
    """`last`, or when a kill came between the two renames that replace a sharded `last.ckpt` (`lsgtrain.sharding`)
    the previous one, moved aside as `.last.ckpt.old`; None when there is neither."""
    previous = last.with_name(f".{last.name}.old")
    return next((path for path in (last, previous) if checkpoint_exists(path)), None)


def _sharded_checkpoint(folder: Path) -> dict[str, Any]:
    """The run state of a sharded checkpoint (its `meta.pt`), with the shape of each weight as `state_dict` (meta
    tensors, from the shards' index): enough for every check a resume or an evaluation makes before loading."""
    checkpoint = torch.load(folder / _METADATA_FILENAME, map_location="cpu", weights_only=True)
    with (folder / SHARDED_INDEX).open("rb") as file:
        index = _ShardIndexUnpickler(file).load().state_dict_metadata
    checkpoint["state_dict"] = {
        name.removeprefix(SHARDED_WEIGHTS): torch.empty(meta.size, dtype=meta.properties.dtype, device="meta")
        for name, meta in index.items()
        if name.startswith(SHARDED_WEIGHTS) and isinstance(meta, TensorStorageMetadata)
    }
    return checkpoint


class _ShardIndexUnpickler(pickle.Unpickler):
    """Reads a sharded checkpoint's index (`.metadata`, which torch writes and reads as a plain pickle) refusing
    anything but the index's own classes, sizes, dtypes, layouts and paths: read before torch or Lightning load the
    folder, so that, as with `weights_only=True`, no code in a checkpoint runs."""

    @override
    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        index_class = isinstance(found, type) and module in SHARDED_INDEX_MODULES
        if index_class or isinstance(found, torch.dtype) or found in (torch.Size, torch.serialization._get_layout):
            return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a sharded checkpoint's index")


def consolidated_checkpoint(folder: Path, output: Path) -> Path:
    """Write the sharded checkpoint `folder` as one Lightning checkpoint file `output` with the full weights (no
    optimizer state), in this one process: what a single-process evaluation loads."""
    dcp_to_torch_save(folder, output)
    full = torch.load(output, map_location="cpu", weights_only=True)
    state = torch.load(folder / _METADATA_FILENAME, map_location="cpu", weights_only=True)
    torch.save({**state, "state_dict": full["state_dict"]}, output)
    return output


def _others(path: Path, key: str) -> str:
    """The way out of an unreadable checkpoint: the other checkpoints beside it (the best one, epochNN-stepN.ckpt),
    newest first, and the `key=` that starts from the newest."""
    others = [p for p in path.parent.glob("*.ckpt") if p.name != path.name and checkpoint_exists(p)]
    others.sort(key=lambda p: -p.stat().st_mtime)
    if not others:
        return ""
    return f". Beside it: {', '.join(p.name for p in others)}; to go on from the newest, rerun with {key}={others[0]}"


def check_weights_fit(checkpoint: dict[str, Any], module: L.LightningModule, path: str, key: str = "ckpt_path") -> None:
    """Raise if the checkpoint's weights do not fit the model this config builds (another vocabulary or size)."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{key}={path} has no state_dict: it is not a Lightning checkpoint of a training run")
    expected = module.state_dict()
    reshaped = [name for name, value in expected.items() if name in saved and saved[name].shape != value.shape]
    if reshaped and all(name.endswith(POSITION_TABLE) for name in reshaped):
        raise CheckpointError(_other_length(checkpoint, saved, expected, reshaped[0], path, key))
    problems = [f"{name} is {tuple(saved[name].shape)} there, {tuple(expected[name].shape)} here" for name in reshaped]
    missing = sorted(set(expected) - set(saved))
    if missing:
        problems.append(f"{len(missing)} weights missing there (e.g. {missing[0]})")
    unexpected = sorted(set(saved) - set(expected))
    if unexpected:
        problems.append(f"{len(unexpected)} weights unknown here (e.g. {unexpected[0]})")
    if problems:
        raise CheckpointError(
            f"{key}={path} does not fit the model this config builds: {'; '.join(problems[:4])}. It comes from a "
            "run with another tokenizer (vocabulary), model size or task: use that run's data.tokenizer and model "
            f"settings, or {key}=null to start from scratch."
        )


def _other_length(
    checkpoint: dict[str, Any], saved: dict[str, Any], expected: dict[str, Any], table: str, path: str, key: str
) -> str:
    """The error for a checkpoint whose only difference is the length of its position tables: it was trained at
    another `data.max_source_length` (a random model's tables are that long; a pretrained one's, at least that)."""
    rows, here = saved[table].shape[0], expected[table].shape[0]
    run = saved_run_config(checkpoint) or {}
    trained = run.get("data", {}).get("max_source_length")
    length = f"data.max_source_length={trained}" if trained else f"a length of {rows} tokens"
    return (
        f"{key}={path} was trained at {length} (its position tables have {rows} rows), but this config builds "
        f"{here}: set data.max_source_length={trained or rows} to use it (a resume must keep the length; to train "
        f"at another one, start a new run from its exported weights: model.pretrained=<run folder>/hf_model)"
    )


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings a resume must keep (`lsgtrain.run.keys`) whose values differ between a checkpoint's run config
    and the current one.

    Settings in only one of them are not changes (see `settings_in_one_config`): a run started with an older
    lsgtrain lacks the keys added since, whose defaults keep the old behaviour, except those with a `Key.before`.
    """
    before, now = _saved_settings(saved), flatten_config(current)
    return [
        f"{key}: {before[key]!r} in the checkpoint, {now[key]!r} now"
        for key in sorted(set(before) & set(now))
        if resume_fixed(key) and before[key] != now[key]
    ]


def settings_in_one_config(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings a resume must keep that only the checkpoint's run config or only the current one has."""
    before, now = _saved_settings(saved), flatten_config(current)
    only_now = [f"{key}={now[key]!r} (not in the checkpoint)" for key in sorted(set(now) - set(before))]
    only_before = [f"{key}={before[key]!r} (only in the checkpoint)" for key in sorted(set(before) - set(now))]
    return [setting for setting in only_now + only_before if resume_fixed(setting.split("=", 1)[0])]


def _saved_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's flattened run config, with the value before the key for the keys it predates."""
    return {**values_before_the_keys(), **flatten_config(saved)}


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as `{dotted key: leaf value}` (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        flat.update(flatten_config(value, f"{prefix}.{name}" if prefix else str(name)))
    return flat


def tokenizer_identity(tokenizer: Any) -> str:
    """A digest of a tokenizer's vocabulary (piece -> id): what pairs it with a model's embedding rows."""
    pieces = json.dumps(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]), ensure_ascii=False)
    return hashlib.sha256(pieces.encode()).hexdigest()[:16]


class RunConfigCheckpoint(Callback):
    """Stores the run's resolved config, what it trains on (`data_identity()`, e.g. the datamodule's `identity`)
    and the identity of its tokenizer (`tokenizer_identity`) in every checkpoint, so a resume can say which
    settings, which data or which tokenizer changed."""

    def __init__(
        self,
        config: dict[str, Any],
        data_identity: Callable[[], dict[str, Any]] | None = None,
        tokenizer: str | None = None,
    ):
        self.config = config
        self.data_identity = data_identity
        self.tokenizer = tokenizer

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"config": self.config}
        if self.data_identity:
            state["data"] = self.data_identity()
        if self.tokenizer:
            state["tokenizer"] = self.tokenizer
        return state


def _saved_state(checkpoint: dict[str, Any], key: str) -> Any:
    state = checkpoint.get("callbacks", {}).get(RunConfigCheckpoint.__qualname__)
    return state.get(key) if isinstance(state, dict) else None


def saved_run_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The run config `RunConfigCheckpoint` stored in a checkpoint (None for checkpoints written without it)."""
    return _saved_state(checkpoint, "config")


def saved_data_identity(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """What the checkpoint's run trained on (None for checkpoints of an lsgtrain that did not record it)."""
    return _saved_state(checkpoint, "data")


def changed_data(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The parts of two data identities that differ, as `key: before in the checkpoint, now now`."""
    before, now = flatten_config(saved), flatten_config(current)
    return [
        f"{key}: {before.get(key)!r} in the checkpoint, {now.get(key)!r} now"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]


def first_process_of_run() -> bool:
    """True in the process that starts a run: not a DDP rank launched by Lightning, torchrun or srun."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


# A run folder keeps the tokenizer its model was trained with, beside `checkpoints/`.
RUN_TOKENIZER_DIR = "tokenizer"


def resumed_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint `cfg.ckpt_path` resumes from, known before the trainer exists: `last` is this run folder's
    `checkpoints/last.ckpt` when there is one (where `callbacks.step_checkpoint` writes it)."""
    ckpt_path = cfg.ckpt_path
    if ckpt_path != "last":
        return Path(ckpt_path) if ckpt_path else None
    return complete_last(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")


def tokenizer_choice(cfg: DictConfig, datamodule: "LongDocumentDataModule") -> dict[str, Any]:
    """The tokenizer arguments of `build_model`: a resumed run reuses the tokenizer saved in its checkpoint's run
    folder (weights and ids must stay paired, whatever the data now holds); otherwise `data.tokenizer.pretrained`,
    or one trained on the data (random model only)."""
    checkpoint = resumed_checkpoint(cfg)
    if checkpoint is None:
        return {"tokenizer": datamodule.pretrained_tokenizer, "train_tokenizer": datamodule.train_tokenizer}
    saved = checkpoint.parent.parent / RUN_TOKENIZER_DIR
    if saved.is_dir():
        return {"tokenizer": str(saved), "train_tokenizer": None}
    return {"tokenizer": datamodule.pretrained_tokenizer, "train_tokenizer": _no_saved_tokenizer(checkpoint, saved)}


def _no_saved_tokenizer(checkpoint: Path, saved: Path) -> Callable[[], Any]:
    def refuse():
        raise FileNotFoundError(
            f"resuming from {checkpoint}, whose run folder has no saved tokenizer ({saved}): a tokenizer trained "
            "again would pair the weights with other ids. Set data.tokenizer.pretrained to the tokenizer it was "
            "trained with (e.g. the run's hf_model folder)"
        )

    return refuse


def check_resume(checkpoint: dict[str, Any], cfg: DictConfig, datamodule: "LongDocumentDataModule", path: str) -> None:
    """Refuse a resume whose settings (those `lsgtrain.run.keys` marks fixed) or data differ from the run that wrote
    the checkpoint: it goes on with that run's optimizer, schedule, tokenizer and data order, which would win without a
    word."""
    saved = saved_run_config(checkpoint)
    if saved is None:
        logger.warning("%s holds no run config (older lsgtrain): cannot check that the settings match", path)
    else:
        _refuse_changed_settings(saved, OmegaConf.to_container(cfg, resolve=True), path)
    _refuse_changed_data(checkpoint, datamodule, path)
    _refuse_other_tokenizer(checkpoint, datamodule, path)


def _refuse_other_tokenizer(checkpoint: dict[str, Any], datamodule: "LongDocumentDataModule", path: str) -> None:
    """The same ids must mean the same pieces as in the steps before: a run folder's `tokenizer/` from an earlier
    attempt (older lsgtrain kept one after a failure) would pair the weights with other pieces, without a word."""
    saved = _saved_state(checkpoint, "tokenizer")
    if saved is None:
        logger.warning("%s records no tokenizer identity (older lsgtrain): cannot check that it is the same", path)
        return
    now = tokenizer_identity(datamodule.tokenizer)
    if now != saved:
        raise CheckpointError(
            f"ckpt_path={path} was trained with the tokenizer {saved}, but this resume would continue with another "
            f"one, {now} (its run folder's {RUN_TOKENIZER_DIR}/, or data.tokenizer.pretrained): the same ids would "
            "mean other pieces. Set data.tokenizer.pretrained to the tokenizer it was trained with (e.g. an "
            f"export's hf_model folder), or start a new run (another run_name, or ckpt_path=null)"
        )


def _refuse_changed_settings(saved: dict[str, Any], current: dict[str, Any], path: str) -> None:
    unmatched = settings_in_one_config(saved, current)
    if unmatched:
        logger.warning(
            "%s was written by a run whose config lacks (or has) these settings, taken as they are now (a run started "
            "with an older lsgtrain lacks the keys added since): %s", path, "; ".join(unmatched),
        )  # fmt: skip
    changed = changed_settings(saved, current)
    if changed:
        raise CheckpointError(
            f"ckpt_path={path}: a resume continues that run's optimizer, schedule and data order, but these "
            f"settings differ from the run that wrote it: {'; '.join(changed)}. Rerun with the checkpoint's "
            "values, or start a new run (another run_name, or ckpt_path=null), e.g. from its exported weights "
            "with model.pretrained=<run folder>/hf_model"
        )


def _refuse_changed_data(checkpoint: dict[str, Any], datamodule: "LongDocumentDataModule", path: str) -> None:
    """On other data (a rewritten file, a new download) a resume would train on rows the run never chose, without a
    word. Refused unless data.allow_data_change."""
    saved = saved_data_identity(checkpoint)
    if saved is None:
        logger.warning("%s records no data identity (older lsgtrain): cannot check that the data is unchanged", path)
        return
    changed = changed_data(saved, datamodule.identity())
    if not changed:
        return
    message = f"ckpt_path={path} was trained on other data than this run reads: {'; '.join(changed)}"
    if datamodule.allow_data_change:
        logger.warning("%s. data.allow_data_change=true: resuming on the data as it is now, with the checkpoint's "
                       "tokenizer", message)  # fmt: skip
        return
    raise CheckpointError(
        f"{message}. Put the data back as it was, or start a new run (another run_name, or ckpt_path=null); to "
        "resume on the changed data on purpose (the checkpoint's tokenizer is kept), add data.allow_data_change=true"
    )
