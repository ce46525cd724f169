"""Random number generator states saved with every checkpoint, so a resumed run draws the same dropout masks."""

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)


class RandomStateCheckpoint(Callback):
    """Saves each rank's Python, NumPy, torch and CUDA generator states in the checkpoint and restores them.

    Lightning checkpoints hold weights, optimizer and loop state but not the generators, so after a resume dropout
    would draw other masks than the uninterrupted run. Each DDP rank has its own state (ranks see different batch
    shapes), so all of them are gathered; a resume on another number of ranks keeps its fresh seeds.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is None:
            return {}
        states = _current_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        per_rank = state_dict.get("per_rank") or []
        world, rank = (self._trainer.world_size, self._trainer.global_rank) if self._trainer else (1, 0)
        if len(per_rank) != world:
            logger.warning("checkpoint has random states for %d ranks, this run has %d: not restored",
                           len(per_rank), world)  # fmt: skip
            return
        _restore_states(per_rank[rank])


def _current_states() -> dict[str, Any]:
    # NumPy's key array as a list of ints: checkpoints hold only tensors and plain values (`weights_only=True`)
    name, key, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = (name, key.tolist(), position, has_gauss, cached_gaussian)
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _restore_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, key, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
