"""Experiment loggers whose defaults fit both a cluster with wandb credentials and an offline machine."""

import netrc
import os

from lightning.pytorch.loggers import WandbLogger


def wandb_available_online() -> bool:
    """True when wandb can log online: an API key in the environment or a `wandb login` in ~/.netrc."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def make_wandb_logger(*, offline: bool | None = None, **kwargs) -> WandbLogger:
    """`WandbLogger`, offline unless credentials are found (or `offline` says otherwise)."""
    if offline is None:
        offline = not wandb_available_online()
    return WandbLogger(offline=offline, **kwargs)
