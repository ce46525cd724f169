"""Checks of a run's config that would otherwise fail late (after tokenising) or unclearly (in torch or a scheduler).

`check_config` runs before anything is read, trained or tokenised and raises `ConfigError` naming the key, the
value and a value that works.
"""

import difflib
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from .checkpointing import first_process_of_run
from .hub import HubUnavailable, PushTarget, check_push_target
from .modeling.configuration_lsg_pegasus import LSGPegasusConfig

LSG_KEYS = tuple(LSGPegasusConfig.__annotations__)


class ConfigError(ValueError):
    """A config value that cannot work, with the key, the value and the fix."""


@dataclass(frozen=True)
class Number:
    """A numeric config key: its type, smallest allowed value, and an example for the error message."""

    key: str
    kind: type
    minimum: float
    example: str
    exclusive: bool = False  # the minimum itself is not allowed (a learning rate of 0)

    def check(self, cfg: DictConfig) -> None:
        value = OmegaConf.select(cfg, self.key, default=None)
        if value is None:
            return
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int:
            numeric = numeric and float(value).is_integer()
        low_ok = numeric and (value > self.minimum if self.exclusive else value >= self.minimum)
        if not low_ok:
            what = "an integer" if self.kind is int else "a number"
            bound = f"> {self.minimum:g}" if self.exclusive else f">= {self.minimum:g}"
            raise ConfigError(f"{self.key}={value!r} must be {what} {bound}, e.g. {self.key}={self.example}")


NUMBERS = (
    Number("data.max_source_length", int, 1, "4096"),
    Number("data.max_target_length", int, 1, "256"),
    Number("data.batch_size", int, 1, "4"),
    Number("data.eval_batch_size", int, 1, "16"),
    Number("data.max_samples", int, 1, "100"),
    Number("module.optimizer.lr", float, 0, "5e-4", exclusive=True),
    Number("module.weight_decay", float, 0, "0.01"),
    Number("module.label_smoothing", float, 0, "0.1"),
    Number("trainer.accumulate_grad_batches", int, 1, "1"),
    Number("effective_batch_size", int, 1, "32"),
)


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` for values that cannot work; cheap, so it runs before any data or model work."""
    for number in NUMBERS:
        number.check(cfg)
    _check_lsg_keys(cfg)
    _check_length_fits_blocks(cfg)
    _check_finite_schedule(cfg)
    _check_push_to_hub(cfg)


def _check_lsg_keys(cfg: DictConfig) -> None:
    for key in cfg.model.get("lsg") or {}:
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


def _check_push_to_hub(cfg: DictConfig) -> None:
    """A run that is to push its export checks the hub now (offline mode, network, token, the repository's
    visibility), not after hours of training; once per run (whoami is rate-limited), not per DDP rank."""
    target = PushTarget.from_config(OmegaConf.select(cfg, "callbacks.hf_export.push_to_hub", default=None))
    if target.repo_id is None or not cfg.get("train", True) or not first_process_of_run():
        return
    try:
        check_push_target(target)
    except (HubUnavailable, ValueError) as error:
        raise ConfigError(
            f"callbacks.hf_export.push_to_hub.repo_id={target.repo_id}: the export cannot be pushed: {error}. "
            "Fix that, or set callbacks.hf_export.push_to_hub.repo_id=null and push the export after the run with "
            "`lsgtrain push <run folder>/hf_model REPO_ID`"
        ) from error
