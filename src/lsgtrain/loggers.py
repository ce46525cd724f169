"""Experiment loggers whose defaults fit both a cluster with wandb credentials and an offline machine."""

import hashlib
import netrc
import os
from pathlib import Path

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


def make_wandb_logger(
    *, save_dir: str, offline: bool | None = None, run_id: str | None = None, **kwargs
) -> WandbLogger:
    """`WandbLogger`, offline unless credentials are found (or `offline` says otherwise).

    The run id is derived from the run folder unless given, so a resumed or requeued run (same folder) continues
    the same wandb run instead of starting a new one.
    """
    if offline is None:
        offline = not wandb_available_online()
    run_id = run_id or hashlib.sha256(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]
    return WandbLogger(save_dir=save_dir, offline=offline, id=run_id, resume="allow", **kwargs)
