"""Sharded data parallelism (trainer=fsdp): Lightning's `ModelParallelStrategy` sharding over every process, with
checkpoint folders that are complete or absent, and how an LSG-Pegasus model is cut into FSDP2 units."""

import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from transformers import PreTrainedModel
from typing_extensions import override


class FullyShardedStrategy(ModelParallelStrategy):
    """`ModelParallelStrategy` with every process (devices x nodes) in the data-parallel mesh and no tensor
    parallelism: FSDP2 across the whole job. Its own `"auto"` would shard over the nodes only and tensor-split
    inside each, which LSG-Pegasus layers do not support.

    Each checkpoint (a folder of shards, `torch.distributed.checkpoint`) is written beside its place as
    `.<name>.tmp` and renamed into it once every process has written its shard, so a kill during a save never
    leaves a partial `last.ckpt` folder that a resume would pick up.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, **kwargs)

    @override
    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        path = Path(self.broadcast(str(filepath)))
        staging = path.with_name(f".{path.name}.tmp")
        if self.is_global_zero and staging.exists():  # a save killed before
            shutil.rmtree(staging)
        self.barrier()
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier()
        if self.is_global_zero:
            _replace(staging, path)
        self.barrier()


def _replace(staging: Path, path: Path) -> None:
    """Move the finished folder `staging` to `path`, the previous checkpoint there (a folder or a file) out of the
    way first: a kill between the two renames leaves no `path` (never a partial one) and the previous checkpoint as
    `.<name>.old`, where a resume finds it (`lsgtrain.checkpointing.complete_last`)."""
    if path.is_dir():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        staging.rename(path)
        shutil.rmtree(old)
        return
    path.unlink(missing_ok=True)
    staging.rename(path)


def shard_model(model: PreTrainedModel, mesh: DeviceMesh, mixed_precision: MixedPrecisionPolicy) -> None:
    """FSDP2: shard each layer the model may not split (`_no_split_modules`: the encoder and decoder layers) as its
    own unit, then the root, which takes the rest (embeddings, LM head, final norms, position tables).

    Each layer's weights are gathered just before it runs and freed after, so a process holds one layer in full at a
    time. The token embedding stays in the root's unit, so the weights tied to it (`lm_head`, the encoder's and
    decoder's `embed_tokens`) stay one parameter. Gradient checkpointing (`model.gradient_checkpointing`) composes:
    its layers recompute in backward through the same module call, whose hooks gather the weights again.
    """
    layers = tuple(model._no_split_modules)
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh, mp_policy=mixed_precision)
    fully_shard(model, mesh=mesh, mp_policy=mixed_precision)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in full: a sharded model's are gathered onto the CPU of the first process (the others
    get `{}`; every process must call this), any other model's are its `state_dict()`."""
    if not isinstance(model, FSDPModule):
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded(model: PreTrainedModel, weights: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A plain model of the class `fully_shard` wrapped, holding `weights` (`full_state_dict`'s): what
    `save_pretrained` must write, since the sharded model's class and modeling code are torch's FSDP wrappers. Any
    other model is returned as it is."""
    if not isinstance(model, FSDPModule):
        return model
    wrapped = next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))
    plain = wrapped(model.config)
    plain.load_state_dict(weights)
    plain.generation_config = model.generation_config
    return plain
