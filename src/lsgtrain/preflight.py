"""Checks of a run's config that would otherwise fail late (after tokenising) or unclearly (in torch or a scheduler).

`check_config` runs before anything is read, trained or tokenised and raises `ConfigError` naming the key, the
value and a value that works.
"""

import difflib
import inspect
import logging
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from .arguments import AUTO, ConfigError, check_number, unwritable
from .checkpointing import first_process_of_run
from .hub import HubUnavailable, PushTarget, check_push_target
from .modeling.configuration_lsg_pegasus import LSGPegasusConfig
from .modeling.loading import CheckpointError, read_config
from .tasks.base import FREEZE_OPTIONS
from .tasks.summarization import check_generation

logger = logging.getLogger(__name__)

LSG_KEYS = tuple(LSGPegasusConfig.__annotations__)
# Lightning precisions that compute in float16 (`16` is the legacy spelling of `16-mixed`).
FP16_PRECISIONS = ("16", "16-mixed", "16-true", "transformer-engine-float16")


@dataclass(frozen=True)
class Number:
    """A numeric config key that no lsgtrain component owns (Lightning's Trainer, torch's optimizer, the model
    factory's dropout, the entry's effective batch): its kind, smallest value and an example (`check_number`)."""

    key: str
    kind: type
    minimum: float | None  # None: any value of the kind
    example: str
    exclusive: bool = False  # the minimum itself is not allowed (a learning rate of 0)
    below: float | None = None  # values must be smaller than this (a fraction below 1)

    def check(self, cfg: DictConfig) -> None:
        value = OmegaConf.select(cfg, self.key, default=None)
        check_number(self.key, value, self.kind, self.minimum, self.example, exclusive=self.exclusive, below=self.below)


# The data, module and callback settings are checked by the components that take them (their `__init__`, the
# module's `check_arguments`), as the trainer's own arguments cannot be.
NUMBERS = (
    Number("model.attention_dropout", float, 0, "0.0", below=1),
    Number("module.optimizer.lr", float, 0, "5e-4", exclusive=True),
    Number("trainer.accumulate_grad_batches", int, 1, "1"),
    Number("trainer.gradient_clip_val", float, 0, "1.0"),
    Number("trainer.log_every_n_steps", int, 1, "50"),
    Number("trainer.check_val_every_n_epoch", int, 1, "1"),
    Number("trainer.num_nodes", int, 1, "1"),
    Number("effective_batch_size", int, 1, "32"),
)


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` for values that cannot work; cheap, so it runs before any data or model work."""
    for key in ("task_name", "run_name"):
        check_folder_name(key, cfg[key])
    for number in NUMBERS:
        number.check(cfg)
    for group in ("trainer", "module"):
        _check_types(cfg, group)
    _check_batch_size(cfg)
    _check_makes_steps(cfg)
    _check_writable(cfg)
    _check_lsg_keys(cfg)
    _check_length_fits_blocks(cfg)
    _check_generation_lengths(cfg)
    _check_finite_schedule(cfg)
    _check_freeze(cfg)
    _check_fp16(cfg)
    _check_push_to_hub(cfg)


def check_folder_name(key: str, name: Any) -> str:
    """`task_name` and `run_name` name folders under `outputs/`: a path there (`../..`, `/tmp/x`) would write the
    run, its checkpoints and its export outside the outputs folder. Returns the name; also the resolver
    `${lsgtrain.folder_name:KEY,VALUE}` that names the run folder in `conf/hydra/default.yaml`, so Hydra creates
    nothing for a bad name."""
    text = str(name) if name is not None else ""
    separators = {"/", "\\", "\0", os.sep, os.altsep} - {None}
    if text.strip() in ("", ".", "..") or any(sep in text for sep in separators):
        raise ConfigError(
            f"{key}={text!r} is not a folder name: it names the run's folder under outputs/, so it must be a plain "
            f"name without '/', '\\' or '..', e.g. {key}=arxiv-lr3e-4"
        )
    return text


OmegaConf.register_new_resolver("lsgtrain.folder_name", check_folder_name, replace=True)

# Annotations of numbers (and flags): a config value for such a parameter is checked against them.
NUMBER_KINDS = (int, float, bool, type(None), torch.Tensor)


def _check_types(cfg: DictConfig, key: str) -> None:
    """Check every setting of the `_target_` config at `key` (and of the `_target_` configs inside it) that its
    target annotates as a number or flag, and that the target takes the setting at all: `trainer.max_steps=abc`
    would otherwise fail inside Lightning after the tokenizer was trained and the data tokenised."""
    node = OmegaConf.select(cfg, key, default=None)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    target = get_object(node._target_)
    signature = inspect.signature(target)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    hints = _annotations(target)
    for name, value in node.items():
        path = f"{key}.{name}"
        if str(name).startswith("_"):
            continue
        if isinstance(value, DictConfig) and "_target_" in value:
            _check_types(cfg, path)
        elif not takes_any and name not in signature.parameters:
            close = difflib.get_close_matches(str(name), list(signature.parameters), n=1)
            hint = f"did you mean {key}.{close[0]}? " if close else ""
            raise ConfigError(f"{path} is not a setting of {node._target_}; {hint}remove it or fix its name")
        elif name in hints and not _fits(value, hints[name]):
            raise ConfigError(
                f"{path}={value!r} must be {_describe(hints[name])} ({node._target_} takes {name}: "
                f"{_spell(hints[name])})"
            )


def _annotations(target: Any) -> dict[str, Any]:
    """Parameter annotations of a function, or of a class's `__init__` and its bases' (the class's own win)."""
    functions = (
        [c.__init__ for c in reversed(inspect.getmro(target)) if "__init__" in vars(c)]
        if inspect.isclass(target)
        else [target]
    )
    hints: dict[str, Any] = {}
    for function in functions:
        try:
            hints.update(typing.get_type_hints(function))
        except (NameError, TypeError):  # annotations that do not resolve (foreign code): those are not checked
            continue
    return hints


def _kinds(annotation: Any) -> tuple[type, ...] | None:
    """The members of a number / flag annotation (`Optional[int]` -> (int, NoneType)); None for other ones."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    return members if all(member in NUMBER_KINDS for member in members) else None


def _fits(value: Any, annotation: Any) -> bool:
    kinds = _kinds(annotation)
    if kinds is None:
        return True
    if value is None or isinstance(value, bool):
        return type(value) in kinds
    numbers = (float, torch.Tensor)
    if isinstance(value, int):
        return int in kinds or any(kind in kinds for kind in numbers)
    return isinstance(value, float) and any(kind in kinds for kind in numbers)


def _describe(annotation: Any) -> str:
    kinds = _kinds(annotation) or ()
    words = ["a number" if float in kinds or torch.Tensor in kinds else "an integer" if int in kinds else None]
    words += ["true or false" if bool in kinds else None, "null" if type(None) in kinds else None]
    return " or ".join(word for word in words if word)


def _spell(annotation: Any) -> str:
    kinds = _kinds(annotation) or ()
    return " | ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)


def _check_batch_size(cfg: DictConfig) -> None:
    """`data.batch_size` is a number of rows or `auto` (the probe's choice, `lsgtrain.callbacks.batch_size`)."""
    value = OmegaConf.select(cfg, "data.batch_size", default=None)
    if value != AUTO and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(
            f"data.batch_size={value!r} must be an integer >= 1 or auto (the largest batch whose training step fits "
            "the device), e.g. data.batch_size=4 or data.batch_size=auto"
        )
    if value == AUTO and not cfg.train and OmegaConf.select(cfg, "data.eval_batch_size", default=None) is None:
        raise ConfigError(
            "data.batch_size=auto is found by probing training steps, and this run does not train (an evaluation, or "
            "train=false): set data.eval_batch_size, e.g. data.eval_batch_size=8"
        )
    rounded = OmegaConf.select(cfg, "allow_rounded_effective_batch", default=None)
    if not isinstance(rounded, bool):
        raise ConfigError(f"allow_rounded_effective_batch={rounded!r} must be true or false")


def _check_makes_steps(cfg: DictConfig) -> None:
    """A run whose settings allow no optimizer step would end "finished" with its random weights exported."""
    if not cfg.train:
        return
    none = [
        f"trainer.{key}={value!r}"
        for key in ("max_epochs", "max_steps", "limit_train_batches")
        for value in [OmegaConf.select(cfg, f"trainer.{key}", default=None)]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
    ]
    if none:
        raise ConfigError(
            f"{none[0]} leaves the run no optimizer step: it would export and mark finished an untrained model. "
            "Train at least one step (e.g. trainer.max_epochs=1, trainer.limit_train_batches=1.0), or evaluate "
            "without training: python -m lsgtrain.evaluate ckpt_path=PATH"
        )


def _check_writable(cfg: DictConfig) -> None:
    """Caches and run outputs are written long after the start (the tokenizer, checkpoints): check now."""
    for key, variable in (("paths.cache_dir", "LSGTRAIN_CACHE"), ("paths.output_dir", "LSGTRAIN_ROOT")):
        folder = OmegaConf.select(cfg, key, default=None)
        problem = folder is not None and unwritable(Path(folder))
        if problem:
            raise ConfigError(
                f"{key}={folder}: {problem}. Point it at a folder you can write, e.g. "
                f"{variable}=/scratch/$USER/lsgtrain"
            )


def _check_lsg_keys(cfg: DictConfig) -> None:
    for key in cfg.model.lsg or {}:
        if key not in LSG_KEYS:
            close = difflib.get_close_matches(str(key), LSG_KEYS, n=1)
            hint = f"did you mean model.lsg.{close[0]}? " if close else ""
            raise ConfigError(f"model.lsg.{key} is not an LSG setting; {hint}LSG settings: {', '.join(LSG_KEYS)}")


def _check_length_fits_blocks(cfg: DictConfig) -> None:
    """The model gets `max_source_length` positions and batches are padded to a multiple of the block size, so a
    length that is not a multiple would index past the position table on the first long batch."""
    length = cfg.data.max_source_length
    block = OmegaConf.select(cfg, "model.lsg.block_size", default=None)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (length, block)):
        return  # missing or impossible values are reported by the checks that own them
    if length % block == 0:
        return
    lower, upper = (length // block) * block, (length // block + 1) * block
    options = " or ".join(f"data.max_source_length={n}" for n in (lower, upper) if n > 0)
    raise ConfigError(
        f"data.max_source_length={length} is not a multiple of model.lsg.block_size={block}: batches are padded "
        f"to a multiple of the block size, past the model's {length} positions; use {options}"
    )


def _check_generation_lengths(cfg: DictConfig) -> None:
    """Generation lengths against the data, the model and each other, for the final decoding (`module.generation`,
    whose own settings the module checks) and validation's (`callbacks.rouge.val_generation` over it):
    `min_new_tokens` above `data.max_target_length` (the model learns to end summaries within it) or above
    `max_new_tokens`, and `max_new_tokens` beyond the decoder's position table, which fails with an IndexError at
    the first validation, after a whole epoch."""
    generation = OmegaConf.select(cfg, "module.generation", default=None)
    if not isinstance(generation, DictConfig):
        return  # a classifier generates nothing
    final = _lengths(generation, "module.generation")
    decodings = [final]
    validation = OmegaConf.select(cfg, "callbacks.rouge.val_generation", default=None)
    if isinstance(validation, DictConfig) and validation:
        check_generation("callbacks.rouge.val_generation", OmegaConf.to_container(validation, resolve=True))
        decodings.append({**final, **_lengths(validation, "callbacks.rouge.val_generation")})
    targets = OmegaConf.select(cfg, "data.max_target_length", default=None)
    positions, decided_by = _decoder_positions(cfg)
    for decoding in decodings:
        (min_key, shortest), (max_key, longest) = (
            decoding.get(name, ("", None)) for name in ("min_new_tokens", "max_new_tokens")
        )
        if shortest is not None and longest is not None and shortest > longest and min_key != max_key:
            raise ConfigError(
                f"{min_key}.min_new_tokens={shortest} is above {max_key}.max_new_tokens={longest} (validation "
                f"decodes with {max_key} over module.generation): no summary can be both; lower the one or raise "
                "the other"
            )
        if shortest is not None and isinstance(targets, int) and shortest > targets:
            raise ConfigError(
                f"{min_key}.min_new_tokens={shortest} is above data.max_target_length={targets}: the model learns to "
                f"end its summaries within {targets} tokens, and generation would force them longer; lower "
                f"{min_key}.min_new_tokens or raise data.max_target_length"
            )
        if positions is not None and longest is not None and longest > positions:
            raise ConfigError(
                f"{max_key}.max_new_tokens={longest} is beyond the decoder's position table ({positions} positions: "
                f"{decided_by}); set {max_key}.max_new_tokens={positions} or less, or raise data.max_target_length "
                "(the table covers it)"
            )


def _lengths(settings: DictConfig, key: str) -> dict[str, tuple[str, int]]:
    """`min_new_tokens` / `max_new_tokens` of the generation settings at `key`, as `name -> (key, value)`, where they
    are whole numbers (other values are refused by the checks of their owner, `check_generation`)."""
    return {
        name: (key, value)
        for name, value in settings.items()
        if name in ("min_new_tokens", "max_new_tokens") and isinstance(value, int) and not isinstance(value, bool)
    }


def _decoder_positions(cfg: DictConfig) -> tuple[int | None, str]:
    """The size of the position table the model factory builds (`build_model`: a checkpoint's, extended to cover
    `model.max_source_length` and `model.max_target_length`) and which of them decides it; None when a checkpoint's
    config cannot be read (the factory reports why)."""
    sizes = {}
    for key in ("model.max_source_length", "model.max_target_length"):
        size = OmegaConf.select(cfg, key, default=None)
        if isinstance(size, int) and not isinstance(size, bool):
            sizes[f"{key}={size}"] = size
    for key in ("model.pretrained", "model.convert_from"):
        checkpoint = OmegaConf.select(cfg, key, default=None)
        if not checkpoint:
            continue
        try:
            positions = read_config(checkpoint, key).get("max_position_embeddings")
        except (CheckpointError, FileNotFoundError):
            return None, key
        sizes[f"the max_position_embeddings of {key}={checkpoint}"] = positions if isinstance(positions, int) else 0
    if not sizes:
        return None, ""
    largest = max(sizes, key=sizes.get)
    return sizes[largest], largest


def _check_finite_schedule(cfg: DictConfig) -> None:
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if isinstance(max_steps, int) and max_steps > 0:
        return
    epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if epochs is None:
        return
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={epochs!r} must be an integer >= 1 (the learning-rate schedule needs a finite "
            "number of steps), e.g. trainer.max_epochs=10, or set trainer.max_steps"
        )


def _check_freeze(cfg: DictConfig) -> None:
    """Freezing keeps weights as loaded: frozen random weights never learn (the options themselves are the
    module's to check)."""
    freeze = OmegaConf.select(cfg, "module.freeze", default=None) or {}
    asked = [key for key, value in freeze.items() if value is True and key in FREEZE_OPTIONS]
    if asked and not (cfg.model.pretrained or cfg.model.convert_from):
        raise ConfigError(
            f"module.freeze.{asked[0]}=true on a randomly initialised model: the frozen weights would stay random "
            "for the whole run. Freeze a pretrained model (model.pretrained=... or model=pegasus_large_converted), "
            f"or set module.freeze.{asked[0]}=false"
        )


def _check_fp16(cfg: DictConfig) -> None:
    """Pegasus' activations overflow float16 (inf, then NaN losses: huggingface/transformers#12225); bfloat16 has
    float32's range. Every model here is a Pegasus, so float16 is refused unless `allow_fp16=true`."""
    precision = str(OmegaConf.select(cfg, "trainer.precision", default=None))
    if precision not in FP16_PRECISIONS:
        return
    if cfg.allow_fp16:
        logger.warning(
            "trainer.precision=%s with allow_fp16=true: Pegasus overflows in float16 (inf/NaN losses stop the run, "
            "callbacks.divergence); trainer.precision=bf16-mixed is the safe choice on GPUs that have bfloat16",
            precision,
        )
        return
    raise ConfigError(
        f"trainer.precision={precision}: Pegasus overflows in float16 (its activations exceed 65,504, giving inf and "
        "NaN losses; huggingface/transformers#12225). Use trainer.precision=bf16-mixed (GPUs since Ampere, A100/H100) "
        "or 32-true; to try float16 anyway, add allow_fp16=true"
    )


def _check_push_to_hub(cfg: DictConfig) -> None:
    """A run that is to push its export checks the hub now (offline mode, network, token, the repository's
    visibility), not after hours of training; once per run (whoami is rate-limited), not per DDP rank."""
    target = PushTarget.from_config(OmegaConf.select(cfg, "callbacks.hf_export.push_to_hub", default=None))
    if target.repo_id is None or not cfg.train or not first_process_of_run():
        return
    try:
        check_push_target(target)
    except (HubUnavailable, ValueError) as error:
        raise ConfigError(
            f"callbacks.hf_export.push_to_hub.repo_id={target.repo_id}: the export cannot be pushed: {error}. "
            "Fix that, or set callbacks.hf_export.push_to_hub.repo_id=null and push the export after the run with "
            "`lsgtrain push <run folder>/hf_model REPO_ID`"
        ) from error
