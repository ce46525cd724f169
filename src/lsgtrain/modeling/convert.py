"""Turn a plain Pegasus checkpoint into an LSG one, or extend an LSG checkpoint to a longer length.

Follows the reference converter (`PegasusConversionScript` in `ccdv-ai/convert_checkpoint_to_lsg`): every Pegasus
weight keeps its name, both sinusoidal position tables are regenerated at the new length, and the 512 global
embeddings start from the old encoder position table (reordered with a stride) plus the BOS / mask token
embeddings. Outputs are written to a temporary folder and renamed into place, so a failure leaves nothing behind.
"""

import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import GenerationConfig, set_seed

from .configuration_lsg_pegasus import MAX_GLOBAL_TOKENS, LSGPegasusConfig
from .loading import CheckpointError, architectures, load_tokenizer, read_config
from .modeling_lsg_pegasus import (
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
    LSGPegasusModel,
    LSGPegasusPreTrainedModel,
)

logger = logging.getLogger(__name__)

# Pegasus architecture name (with or without an "LSG" prefix) -> the LSG class that replaces it.
LSG_CLASSES: dict[str, type[LSGPegasusPreTrainedModel]] = {
    "PegasusModel": LSGPegasusModel,
    "PegasusForConditionalGeneration": LSGPegasusForConditionalGeneration,
    "PegasusForSequenceClassification": LSGPegasusForSequenceClassification,
}


# What `save_pretrained` of a model and a tokenizer writes: the files a folder may hold to be replaced by overwrite.
MODEL_FOLDER_FILES = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
    "tokenizer*.json", "tokenizer.model", "spiece.model", "special_tokens_map.json", "added_tokens.json",
    "chat_template.*", "modeling_*.py", "configuration_*.py", "lsg_*.py",
)  # fmt: skip
TRANSFORMERS_LOADING_LOGGER = "transformers.modeling_utils"  # where from_pretrained logs its LOAD REPORT


class ConversionError(CheckpointError):
    """A checkpoint that cannot be converted, with the reason and the fix."""


def expected_missing_weights(*, new_global_embeddings: bool, new_classifier_head: bool) -> dict[str, str]:
    """Weights a load may lack without the checkpoint being the wrong one: regex (for `check_loading_info`) -> why."""
    expected = {r"embed_positions\.weight$": "the sinusoidal position tables (computed from the length)"}
    if new_global_embeddings:
        expected[r"global_embeddings\.weight$"] = "the global embeddings (initialised by the conversion)"
    if new_classifier_head:
        expected[r"^classification_head\."] = "the new classification head (trained by the run)"
    return expected


@contextlib.contextmanager
def _held_load_report() -> Iterator[list[logging.LogRecord]]:
    """Hold back transformers' LOAD REPORT (a table of MISSING weights with "Consider training on your downstream
    task"): `check_loading_info` explains the expected entries in one line, and logs the report as transformers
    wrote it when anything else is there, or when the load fails."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    transformers_logger = logging.getLogger(TRANSFORMERS_LOADING_LOGGER)
    transformers_logger.addFilter(hold)
    try:
        yield held
    except BaseException:
        transformers_logger.removeFilter(hold)
        _release(held)
        raise
    finally:
        transformers_logger.removeFilter(hold)


def _release(report: list[logging.LogRecord]) -> None:
    for record in report:
        logging.getLogger(TRANSFORMERS_LOADING_LOGGER).handle(record)


def load_checked(
    model_class: type[LSGPegasusPreTrainedModel],
    source: str,
    expected_missing: dict[str, str],
    allow: bool,
    *,
    name: str | None = None,
    hint: str = "",
    **kwargs: Any,
) -> LSGPegasusPreTrainedModel:
    """`model_class.from_pretrained(source, **kwargs)` checked by `check_loading_info` (`name`: how messages name
    the checkpoint, default `source`), with transformers' LOAD REPORT shown only when it reports a problem."""
    with _held_load_report() as report:
        model, info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    check_loading_info(info, name or source, expected_missing, allow, hint, report)
    return model


def check_loading_info(
    info: dict[str, Any],
    source: str,
    expected_missing: dict[str, str],
    allow: bool,
    hint: str = "",
    report: list[logging.LogRecord] | None = None,
) -> None:
    """Raise if `from_pretrained(..., output_loading_info=True)` left weights missing or unused beyond the ones
    expected (regexes over `expected_missing`); with `allow`, log them instead. The expected ones are named in one
    line; transformers' held-back `report` is logged only when there is more.

    A missing weight stays random and an unexpected one is dropped: the checkpoint is not the model asked for.
    """
    missing = sorted(k for k in info["missing_keys"] if not any(re.search(p, k) for p in expected_missing))
    unexpected = sorted(info["unexpected_keys"])
    if not missing and not unexpected:
        found = [why for p, why in expected_missing.items() if any(re.search(p, k) for k in info["missing_keys"])]
        if found:
            logger.info("%s: not in the checkpoint, as expected (transformers' LOAD REPORT lists them as MISSING): "
                        "%s", source, "; ".join(found))  # fmt: skip
        return
    _release(report or [])
    message = (
        f"{source}: {len(missing)} weights missing from the checkpoint (they would stay random) "
        f"{missing[:5]}{' ...' if len(missing) > 5 else ''} and {len(unexpected)} unexpected (they would be "
        f"dropped) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
    )
    if allow:
        logger.warning("%s; loading anyway (allow_weight_mismatch)", message)
        return
    raise ConversionError(
        f"{message}. {hint + '. ' if hint else ''}To load it anyway, set model.allow_weight_mismatch=true "
        "(`lsgtrain convert --allow-weight-mismatch`)"
    )


def order_positions(positions: torch.Tensor, stride: int) -> torch.Tensor:
    """512 rows of a position table `[N, D]`, reordered so that global j sits at a spread-out position.

    Reference `order_positions` (conversion_utils): with `f = N // 512` and `G = 512 * f / stride`, global j gets
    position `(j % G) * stride + f * (j // G)` (N=512, stride 64: 0, 64, ..., 448, 1, 65, ...). A table shorter than
    512 rows is completed with rows drawn from a normal of its mean and std (random, seeded by the caller).
    """
    n_pos, dim = positions.shape
    if n_pos % MAX_GLOBAL_TOKENS != 0:
        if n_pos > MAX_GLOBAL_TOKENS:
            positions = positions[: MAX_GLOBAL_TOKENS * (n_pos // MAX_GLOBAL_TOKENS)]
        else:
            extra = torch.normal(positions.mean().item(), positions.std().item(), size=(MAX_GLOBAL_TOKENS - n_pos, dim))
            positions = torch.cat([positions, extra.to(positions.dtype)], dim=0)
    factor = positions.shape[0] // MAX_GLOBAL_TOKENS
    group = stride // factor
    if group < 1 or MAX_GLOBAL_TOKENS % group != 0:
        raise ConversionError(
            f"global_positional_stride={stride} does not fit a {n_pos}-row position table: "
            f"stride // {factor} must divide {MAX_GLOBAL_TOKENS}; try 64"
        )
    positions = positions[::factor][:MAX_GLOBAL_TOKENS]  # [512, D]
    return positions.reshape(-1, group, dim).transpose(0, 1).reshape(-1, dim)  # [512, D]


def init_global_embeddings(
    model: LSGPegasusPreTrainedModel,
    *,
    bos_id: int,
    mask_id: int,
    stride: int,
    random_init: bool = False,
    keep_first_global_token: bool = False,
) -> None:
    """Fill `global_embeddings` from the (pre-resize) encoder position table and token embeddings.

    As the reference: row 0 = position + E[bos], rows 1.. = position + E[mask] (`random_init`: rows drawn from a
    Gaussian fitted to E, row 0 = E[bos]). E is the unscaled shared embedding, although tokens are scaled by
    sqrt(d_model) at forward time; kept so that converted checkpoints match.
    """
    encoder = model.get_encoder()
    token_embeddings = model.get_input_embeddings().weight.detach().float()  # [V, D]
    positions = order_positions(encoder.embed_positions.weight.detach().float(), stride)  # [512, D]
    if random_init:
        mean = token_embeddings.mean(dim=0)
        covariance = torch.cov(token_embeddings.T)
        dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance)
        globals_ = dist.sample((MAX_GLOBAL_TOKENS,))
        globals_[0] = token_embeddings[bos_id]
        globals_ = globals_ + positions
    else:
        globals_ = positions.clone()
        globals_[0] += token_embeddings[bos_id]
        globals_[1:] += token_embeddings[mask_id]
    weight = encoder.global_embeddings.weight
    with torch.no_grad():
        if keep_first_global_token:
            weight[1:] = globals_[1:].to(weight.dtype)
        else:
            weight.copy_(globals_.to(weight.dtype))


def _bos_and_mask_ids(tokenizer, config: LSGPegasusConfig) -> tuple[int, int]:
    """BOS and mask ids for the global init.

    PegasusTokenizer has neither BOS nor CLS, and many Pegasus configs have no `bos_token_id` (the reference then
    crashes). Our documented choice: fall back to `decoder_start_token_id` (the pad token 0 in Pegasus), the token
    the decoder itself starts from. The mask id falls back to Pegasus' `<mask_2>` (id 3) without a tokenizer.
    """
    candidates = (
        getattr(tokenizer, "bos_token_id", None),
        getattr(tokenizer, "cls_token_id", None),
        getattr(config, "bos_token_id", None),
        config.decoder_start_token_id,
    )
    bos_id = next(i for i in (*candidates, 0) if i is not None)
    mask_id = getattr(tokenizer, "mask_token_id", None)
    return bos_id, 3 if mask_id is None else mask_id


def convert_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    max_sequence_length: int = 4096,
    global_positional_stride: int = 64,
    random_global_init: bool = False,
    keep_first_global_token: bool = False,
    architecture: str | None = None,
    seed: int = 123,
    overwrite: bool = False,
    allow_weight_mismatch: bool = False,
    **lsg_kwargs: Any,
) -> tuple[LSGPegasusPreTrainedModel, Any]:
    """Convert a Pegasus (or LSG-Pegasus) checkpoint to LSG-Pegasus at `max_sequence_length` tokens.

    Args:
        source: a local checkpoint folder, or a hub name (needs internet).
        output_dir: where to write the converted model, tokenizer and modeling code; None returns them only.
        max_sequence_length: new `max_position_embeddings`; at least the current one.
        global_positional_stride: stride of the positions the global embeddings start from.
        random_global_init: draw the global embeddings from a Gaussian fitted to the token embeddings.
        keep_first_global_token: leave global row 0 as it is.
        architecture: `PegasusForConditionalGeneration`, `PegasusModel` or `PegasusForSequenceClassification`
            (with or without an `LSG` prefix); default: the checkpoint's own, else conditional generation.
        seed: seeds torch before anything random (global init, short position tables).
        overwrite: replace a non-empty `output_dir`.
        allow_weight_mismatch: convert even where the checkpoint lacks weights of the architecture (left random)
            or has weights it does not use (dropped); by default an error.
        **lsg_kwargs: LSG config keys (`block_size=64`, `sparsity_type="pooling"`, ...).

    Returns:
        The converted model and its tokenizer (None if the checkpoint has none).

    Raises:
        FileNotFoundError: `source` names a folder that does not exist.
        ConversionError: not a Pegasus checkpoint, a length below the current one, impossible LSG parameters, or
            a non-empty `output_dir` without `overwrite`.
        CheckpointError (ConversionError's base): no config.json, or hub access failing (offline).
    """
    source = os.fspath(source)
    raw_config = read_config(source, "source")
    if raw_config.get("model_type") != "pegasus":
        raise ConversionError(
            f"{source} is a '{raw_config.get('model_type')}' checkpoint, not Pegasus: only Pegasus (model_type "
            "'pegasus') checkpoints convert to LSG-Pegasus"
        )
    names = architectures(raw_config) or ["PegasusForConditionalGeneration"]
    is_lsg = raw_config.get("base_model_prefix") == "lsg" or any("LSG" in name for name in names)
    name = (architecture or names[0]).removeprefix("LSG")
    if name not in LSG_CLASSES:
        raise ConversionError(f"architecture '{name}' cannot be converted; choose one of {sorted(LSG_CLASSES)}")
    current_length = raw_config["max_position_embeddings"]
    if max_sequence_length < current_length:
        raise ConversionError(
            f"max_sequence_length={max_sequence_length} is below the checkpoint's max_position_embeddings "
            f"({current_length}); pass a length >= {current_length}"
        )
    if output_dir is not None:
        output_dir = Path(output_dir)
        _check_output_dir(output_dir, overwrite)

    set_seed(seed)
    config = LSGPegasusConfig.from_pretrained(source, **lsg_kwargs)  # invalid LSG keys fail here, before loading
    config.architectures = [f"LSG{name}"]
    expected_missing = expected_missing_weights(
        new_global_embeddings=not is_lsg,  # initialised below
        new_classifier_head=name == "PegasusForSequenceClassification" and "ForSequenceClassification" not in names[0],
    )
    model = load_checked(LSG_CLASSES[name], source, expected_missing, allow_weight_mismatch, config=config)
    if max_sequence_length % config.block_size != 0:
        # inputs are padded to a multiple of block_size: past the last position of a table of another length
        lower = (max_sequence_length // config.block_size) * config.block_size
        raise ConversionError(
            f"max_sequence_length={max_sequence_length} is not a multiple of block_size ({config.block_size}): "
            f"inputs are padded to a multiple of it, past the last position; use "
            f"{max(lower, config.block_size)} or {lower + config.block_size}"
        )
    tokenizer = load_tokenizer(source, "source", optional=True)
    if tokenizer is None:
        logger.warning("no tokenizer in %s: converting the weights only", source)

    if not is_lsg:  # an LSG checkpoint keeps its trained global embeddings
        bos_id, mask_id = _bos_and_mask_ids(tokenizer, config)
        logger.info("initialising global embeddings from positions + E[bos=%d] / E[mask=%d]", bos_id, mask_id)
        init_global_embeddings(
            model,
            bos_id=bos_id,
            mask_id=mask_id,
            stride=global_positional_stride,
            random_init=random_global_init,
            keep_first_global_token=keep_first_global_token,
        )
    model.resize_position_embeddings(max_sequence_length)
    model.config._name_or_path = str(output_dir or source)
    if tokenizer is not None:
        tokenizer.model_max_length = max_sequence_length
        tokenizer.init_kwargs["model_max_length"] = max_sequence_length

    if output_dir is not None:
        save_atomically(model, tokenizer, output_dir)
    return model, tokenizer


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """An empty or new folder is written; a model folder only with `overwrite`; any other folder is refused, so that
    `overwrite` never deletes files that are not part of a model."""
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise ConversionError(f"{output_dir} exists and is not empty; choose another folder or pass overwrite")
    others = sorted(p.name for p in output_dir.iterdir() if not any(fnmatch(p.name, f) for f in MODEL_FOLDER_FILES))
    if others or not (output_dir / "config.json").is_file():
        raise ConversionError(
            f"{output_dir} is not a model folder (it holds {others[:5] or 'no config.json'}); overwrite replaces "
            "only a model folder's files: choose another output folder, or move those files out"
        )


def _remove_stale_staging(output_dir: Path) -> None:
    """Remove the staging folders (`.<name>.<16 hex>`) that earlier saves into `output_dir` left when they were
    killed (kill -9, a node failure: no `except` ran); each can be as large as the model."""
    pattern = re.compile(rf"\.{re.escape(output_dir.name)}\.[0-9a-f]{{16}}")
    for stale in output_dir.parent.iterdir():
        if stale.is_dir() and pattern.fullmatch(stale.name):
            logger.info("removing %s, left by an earlier save into %s that did not finish", stale, output_dir)
            shutil.rmtree(stale, ignore_errors=True)


def save_atomically(
    model: LSGPegasusPreTrainedModel,
    tokenizer,
    output_dir: str | os.PathLike,
    generation_config: GenerationConfig | None = None,
) -> None:
    """`save_pretrained` model (safetensors + modeling code), tokenizer and `generation_config` (default: the
    model's own) into a temporary sibling of `output_dir`, then rename it into place: a failure never leaves a
    half-written folder."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: mkdtemp's folder is 0700, and the renamed export must be readable by whoever
    # the umask lets read a new folder (the group, usually), like the rest of the run folder.
    _remove_stale_staging(output_dir)
    staging = output_dir.parent / f".{output_dir.name}.{secrets.token_hex(8)}"
    staging.mkdir()
    try:
        try:
            model.save_pretrained(staging)
        except SafetensorError as error:  # safetensors names neither the file nor why it could not write it
            raise RuntimeError(
                f"could not write the model's weights to {output_dir} (staged in {staging.name}): {error}. Free "
                "space there, or raise the file-size limit (`ulimit -f`; the weights are one file), and run again"
            ) from error
        if generation_config is not None:
            generation_config.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        file_mode = stat.S_IMODE(staging.stat().st_mode) & 0o666  # the umask's, as the folder's
        for path in staging.iterdir():
            if path.is_file():
                path.chmod(file_mode)  # safetensors writes its file 0600
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


__all__ = [
    "ConversionError",
    "check_loading_info",
    "convert_checkpoint",
    "expected_missing_weights",
    "init_global_embeddings",
    "load_checked",
    "order_positions",
    "save_atomically",
]
