"""What the summarization and classification LightningModules share: the HF model, optimizer, schedule, freezing."""

import functools
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, get_scheduler

from ..arguments import ConfigError, check_number
from ..sharding import shard_model

logger = logging.getLogger(__name__)

# `module.scheduler.name` -> transformers' schedule (each warms up linearly from 0 first); `constant` must be
# transformers' `constant_with_warmup`, since its own `constant` has no warm-up. `inverse_sqrt` decays as
# 1/sqrt(step / warm-up steps) after the warm-up (Vaswani et al. 2017, T5 and Pegasus' rsqrt decay).
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup", "inverse_sqrt": "inverse_sqrt"}
# `module.compile`: graphs per compiled model before dynamo's limit, which is then an error (`model_forward`)
RECOMPILE_LIMIT = 256
# `module.freeze.<key>`: what each option freezes (docs/training.md "Training controls").
FREEZE_OPTIONS = ("token_embeddings", "all_but_global_embeddings")
# What a step returns: the loss, or a dict with it (`loss`) and what callbacks read (a classifier's predictions).
StepOutput = torch.Tensor | dict[str, torch.Tensor]


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    name: str = "linear",
    warmup_ratio: float = 0.1,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up over `warmup_steps` optimizer steps (or, when None, `warmup_ratio` of the steps), then `name`:
    `linear` decay to 0 (the LSG paper's schedule), `cosine` decay to 0 (half a cosine), `constant`, or
    `inverse_sqrt` (1/sqrt(step / warm-up steps); over 10,000 steps without warm-up); built by transformers'
    `get_scheduler`."""
    check_schedule(name=name, warmup_ratio=warmup_ratio, warmup_steps=warmup_steps)
    warmup = int(warmup_ratio * total_steps) if warmup_steps is None else warmup_steps
    if warmup >= total_steps and name in ("linear", "cosine"):
        raise ValueError(
            f"module.scheduler.warmup_steps={warmup} leaves none of the run's {total_steps} optimizer steps to "
            f"decay over ({name}); lower it, or use module.scheduler.warmup_ratio"
        )
    if warmup_steps is None and warmup_ratio > 0 and warmup == 0:
        logger.warning(
            "the run has %d optimizer steps, fewer than one warm-up step needs (module.scheduler.warmup_ratio=%g of "
            "them rounds to 0): the learning rate starts at its peak. Train longer (trainer.max_epochs), or with fewer "
            "rows per step (effective_batch_size, data.batch_size)", total_steps, warmup_ratio,
        )  # fmt: skip
    return get_scheduler(SCHEDULES[name], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def check_schedule(*, name: str, warmup_ratio: float, warmup_steps: int | None) -> None:
    """Raise `ConfigError` for a schedule `warmup_schedule` cannot build (the module checks its scheduler with it
    before any data work, `LongDocumentModule.check_arguments`)."""
    if name not in SCHEDULES:
        raise ConfigError(f"module.scheduler.name={name!r} is unknown; choose one of {', '.join(SCHEDULES)}")
    check_number("module.scheduler.warmup_ratio", warmup_ratio, float, 0, "0.1", below=1)
    check_number("module.scheduler.warmup_steps", warmup_steps, int, 0, "1000")


def freeze_parameters(
    model: PreTrainedModel, *, token_embeddings: bool = False, all_but_global_embeddings: bool = False
) -> list[str]:
    """Set `requires_grad=False` on what is asked; returns the names of the parameters frozen here.

    Args:
        model: an LSG-Pegasus model (seq2seq or classifier).
        token_embeddings: freeze the token embedding matrix (`model.shared`, which is also the encoder's and the
            decoder's `embed_tokens` and, tied, Pegasus' `lm_head`; `final_logits_bias` is a buffer, never trained).
        all_but_global_embeddings: train only the encoder's global embeddings, as the LSG reference's
            `train_global_only` does, plus a classifier's head (new, it would otherwise stay random; the
            reference's classification script trains it too). A seq2seq `lm_head` stays frozen.

    Raises:
        ValueError: `all_but_global_embeddings` on a model without global embeddings (nothing would train).
    """
    frozen: set[int] = set()
    if token_embeddings:
        embedding_modules = [model.get_input_embeddings()]
        embedding_modules += [m for n, m in model.named_modules() if n.endswith("embed_tokens")]
        frozen |= {id(p) for module in embedding_modules for p in module.parameters()}
    if all_but_global_embeddings:
        global_ids = {id(p) for n, p in model.named_parameters() if n.endswith("global_embeddings.weight")}
        if not global_ids:
            raise ValueError(
                f"module.freeze.all_but_global_embeddings=true: {type(model).__name__} has no global embeddings, so "
                "nothing would train; use an LSG model, or module.freeze.token_embeddings=true"
            )
        output_embeddings = model.get_output_embeddings()  # a seq2seq lm_head (tied or not); a classifier has none
        head_ids = {id(p) for p in model.parameters()} - {id(p) for p in model.base_model.parameters()}
        head_ids -= {id(p) for p in (output_embeddings.parameters() if output_embeddings is not None else ())}
        frozen |= {id(p) for p in model.parameters()} - global_ids - head_ids
    names = []
    for name, parameter in model.named_parameters():  # tied weights appear once, under their first name
        if id(parameter) in frozen and parameter.requires_grad:  # sinusoidal position tables never train
            parameter.requires_grad_(False)
            names.append(name)
    return names


def _sinusoidal_parameters(model: PreTrainedModel) -> dict[int, int]:
    """id -> size of the sinusoidal position tables' weights: computed from the length, never trained (whatever
    `module.freeze` says), so the trainable share is counted without them."""
    tables = model.get_position_embeddings() if hasattr(model, "get_position_embeddings") else ()
    tables = tables if isinstance(tables, tuple) else (tables,)
    return {id(table.weight): table.weight.numel() for table in tables if not table.weight.requires_grad}


def _shapes(inputs: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {tuple(value.shape)}" for key, value in inputs.items() if hasattr(value, "shape"))


class LongDocumentModule(LightningModule):
    """Wraps a transformers model; subclasses define `_shared_step(batch, stage)`.

    Args:
        model: the built LSG-Pegasus model.
        optimizer: partial optimizer (`_partial_: true` in YAML), bound to the parameters here.
        scheduler: partial `(optimizer, total_steps=...)` -> LR scheduler, stepped every optimizer step.
        weight_decay: applied to every weight except biases and LayerNorms.
        freeze: `module.freeze` options (`FREEZE_OPTIONS`, see `freeze_parameters`); frozen parameters get
            `requires_grad=False` and stay out of the optimizer. The trainable / total counts are logged.
        compile: run the training and validation forward (and its backward) through `torch.compile(fullgraph=True,
            dynamic=False)`; generation stays eager (see `model_forward`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        weight_decay: float = 0.01,
        freeze: Mapping[str, bool] | None = None,
        compile: bool = False,
    ):
        super().__init__()
        # the optimizer and scheduler factories are code, not data: kept out of the checkpoint's hyper-parameters,
        # so that checkpoints hold only tensors and plain values and load with `weights_only=True`
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        # `from_pretrained` returns a model in eval mode, and Lightning keeps the mode it finds: without this a
        # fine-tuned checkpoint would train without dropout.
        self.model = model.train()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._compiled: list[Any] = []  # the compiled model, in a list: an attribute would register it twice
        frozen = freeze_parameters(model, **(freeze or {}))
        fixed = _sinusoidal_parameters(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters() if id(p) not in fixed)
        asked = ", ".join(key for key, value in (freeze or {}).items() if value) or "nothing"
        logger.info(
            "trainable parameters: %s of %s (%.2f%%); module.freeze: %s (%d tensors frozen); not counted: %s in the "
            "sinusoidal position tables (computed, never trained)", f"{trainable:,}", f"{total:,}",
            100 * trainable / total, asked, len(frozen), f"{sum(fixed.values()):,}",
        )  # fmt: skip

    @classmethod
    def check_arguments(
        cls,
        *,
        scheduler: Callable[..., Any] | None = None,
        weight_decay: float = 0.01,
        freeze: Mapping[str, bool] | None = None,
        **_: Any,
    ) -> None:
        """Raise `ConfigError` for arguments `__init__` could not use. Called by the training entry with the module's
        config (its optimizer and scheduler as partials) before the model is built, which may train a tokenizer on
        the data; subclasses check their own arguments too."""
        check_number("module.weight_decay", weight_decay, float, 0, "0.01")
        if isinstance(scheduler, functools.partial) and scheduler.func is warmup_schedule:
            given = inspect.signature(warmup_schedule).bind_partial(**scheduler.keywords)
            given.apply_defaults()
            check_schedule(**{key: given.arguments[key] for key in ("name", "warmup_ratio", "warmup_steps")})
        for key, value in (freeze or {}).items():  # unknown options are typos
            if key not in FREEZE_OPTIONS:
                raise ConfigError(f"module.freeze.{key} is not a freezing option; options: {', '.join(FREEZE_OPTIONS)}")
            if not isinstance(value, bool):
                raise ConfigError(f"module.freeze.{key}={value!r} must be true or false")

    def configure_model(self) -> None:
        """Under `ModelParallelStrategy` (trainer=fsdp), shard the model (`shard_model`) over the data-parallel
        mesh, with bf16 weights in compute and fp32 gradient reduction under `bf16-mixed`; other strategies keep
        the whole model. Lightning calls this before each fit, validate and test: the model is sharded once."""
        strategy = self.trainer.strategy
        if not isinstance(strategy, ModelParallelStrategy) or isinstance(self.model, FSDPModule):
            return
        mixed = MixedPrecisionPolicy()  # fp32 throughout
        if strategy.precision_plugin.precision == "bf16-mixed":
            mixed = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        shard_model(self.model, self.device_mesh["data_parallel"], mixed)

    def model_forward(self, **inputs: Any) -> Any:
        """The model's forward for training, validation and test steps: `torch.compile`d with `module.compile`.

        `dynamic=False`: each input shape compiles once. Sources come padded to a multiple of `block_size` (the
        collator), targets are padded the same way by the summarization step, so the lengths `group_by_length`
        produces fall into at most `max_source_length / block_size x max_target_length / block_size` buckets per
        batch size and mode (train, eval). LSG's block arithmetic specialises on the length anyway, so marking it
        dynamic still recompiled per length. Dynamo's recompile limit is raised to `RECOMPILE_LIMIT`, and reaching it
        is an error rather than dynamo's silent fallback to eager; so is any compile failure.

        Generation stays eager: each new token has another cache length, a recompile per step.
        """
        if not self.hparams.compile:
            return self.model(**inputs)
        if not self._compiled:
            torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
            torch._dynamo.config.fail_on_recompile_limit_hit = True
            self._compiled.append(torch.compile(self.model, fullgraph=True, dynamic=False))
        try:
            return self._compiled[0](**inputs)
        except torch._dynamo.exc.TorchDynamoException as error:
            raise RuntimeError(
                f"module.compile=true: torch.compile failed on inputs {_shapes(inputs)}: {type(error).__name__}: "
                f"{str(error).strip()[:1000]}. Train without it: module.compile=false"
            ) from error

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch without bookkeeping keys (`idx`)."""
        return {key: value for key, value in batch.items() if key != "idx"}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        return self._shared_step(batch, "test")

    def _log_loss(self, loss: torch.Tensor, stage: str, batch_size: int) -> None:
        training = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=training, on_epoch=not training, prog_bar=True,
            sync_dist=not training, batch_size=batch_size,
        )  # fmt: skip

    def configure_optimizers(self) -> dict:
        optimizer = self.build_optimizer()
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        if any(group.get("relative_step") for group in optimizer.param_groups):
            raise ValueError(
                "module.optimizer.relative_step=true (module/optimizer=adafactor_relative): Adafactor computes its own "
                "learning rate, which module.scheduler cannot scale; set module.scheduler=null, or use "
                "module/optimizer=adafactor (a fixed module.optimizer.lr that module.scheduler shapes)"
            )
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters (no weight decay on biases and LayerNorms); also what the batch
        probe steps, so that it measures the optimizer state training holds."""
        no_decay = [p for n, p in self.model.named_parameters() if p.requires_grad and (p.ndim < 2 or "norm" in n)]
        ids = {id(p) for p in no_decay}
        decay = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        return self.optimizer_factory(
            params=[
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
        )

    def on_train_start(self) -> None:
        self._warn_epoch_shorter_than_a_step()

    def _warn_epoch_shorter_than_a_step(self) -> None:
        """An epoch with fewer batches than one optimizer step accumulates makes a single, smaller step (Lightning
        steps at the end of each epoch): the effective batch the user asked for is never reached."""
        batches, accumulate = self.trainer.num_training_batches, self.trainer.accumulate_grad_batches
        if not math.isfinite(batches) or batches >= accumulate:
            return
        logger.warning(
            "an epoch is %d batches, fewer than the %d that one optimizer step accumulates (effective_batch_size, "
            "trainer.accumulate_grad_batches): each epoch makes 1 optimizer step over %d batches, and the effective "
            "batch asked for is never reached. Lower effective_batch_size to at most the training rows, or train on "
            "more data", batches, accumulate, batches,
        )  # fmt: skip
