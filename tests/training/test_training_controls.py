"""Training controls: early stopping on evaluation epochs, warm-up schedules, freezing, fp16 refused for Pegasus."""

import logging
import math
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping

from lsgtrain.modeling import (
    LSGPegasusConfig,
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
)
from lsgtrain.preflight import check_config
from lsgtrain.tasks.classification import ClassificationModule
from lsgtrain.train import build, train

from .conftest import QUICK, assert_refused_before_data_work


def test_early_stopping_counts_evaluations_not_epochs(make_cfg, tmp_path):
    """ROUGE every 2 epochs and a learning rate too small to change a float32 weight: the first evaluation sets the
    best, the next two do not improve on it, so patience 2 stops after the third evaluation (epoch 6 of 10), and
    the epochs without ROUGE neither crash the strict check nor count as evaluations."""
    cfg = make_cfg(
        *QUICK, "callbacks/early_stopping=default", "callbacks.early_stopping.patience=2",
        "callbacks.rouge.every_n_epochs=2", "trainer.max_epochs=10", "trainer.limit_train_batches=1",
        "module.optimizer.lr=1e-12",
    )  # fmt: skip
    _, objects = train(cfg)
    trainer = objects["trainer"]
    stopper = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    assert (stopper.monitor, stopper.mode, stopper.strict) == ("val/rougeLsum", "max", True)
    assert stopper.stopped_epoch == 5 and stopper.wait_count == 2
    assert trainer.global_step == 6  # one batch per epoch: 6 epochs ran, not 10
    evaluated = sorted(p.name for p in (tmp_path / "run" / "predictions").glob("val_epoch*.jsonl"))
    assert evaluated == ["val_epoch1.jsonl", "val_epoch3.jsonl", "val_epoch5.jsonl"]


def test_early_stopping_follows_the_experiments_checkpoint_monitor(make_cfg):
    summarization = make_cfg("callbacks/early_stopping=default").callbacks.early_stopping
    classification = make_cfg("experiment=aclsum_venue_cls", "callbacks/early_stopping=default").callbacks
    assert (summarization.monitor, summarization.mode) == ("val/rougeLsum", "max")
    stopper = instantiate(classification.early_stopping)
    assert (stopper.monitor, stopper.mode, type(stopper).__name__) == ("val/f1_macro", "max", "ScheduledEarlyStopping")
    assert "early_stopping" not in make_cfg().callbacks  # off by default


def _expected_lr(name: str, step: int, lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return lr * step / warmup
    progress = (step - warmup) / (total - warmup)
    return {"linear": lr * (1 - progress), "cosine": lr * 0.5 * (1 + math.cos(math.pi * progress)), "constant": lr}[
        name
    ]


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_lr_schedules_warm_up_then_follow_their_shape(make_cfg, name):
    cfg = make_cfg(f"module.scheduler.name={name}", "module.scheduler.warmup_ratio=0.2", "module.optimizer.lr=2e-3")
    optimizer = instantiate(cfg.module.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
    scheduler = instantiate(cfg.module.scheduler)(optimizer, total_steps=50)  # as configure_optimizers builds it
    seen = []
    for _ in range(50):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([_expected_lr(name, step, 2e-3, 10, 50) for step in range(50)], abs=1e-12)
    assert seen[10] == pytest.approx(2e-3)  # the peak, after 20% of 50 steps


def _fit_and_compare(make_cfg, checkpoint, *overrides):
    """Build a run on the pretrained tiny checkpoint, train 2 steps; returns the objects and the initial weights."""
    objects = build(make_cfg(*QUICK, f"model.pretrained={checkpoint}", "trainer.limit_train_batches=2", *overrides))
    module = objects["module"]
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    objects["trainer"].fit(module, datamodule=objects["datamodule"])
    assert objects["trainer"].global_step == 2
    return objects, before


def test_frozen_token_embeddings_stay_bit_identical_and_leave_the_optimizer(make_cfg, tiny_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="lsgtrain.tasks.base"):
        objects, before = _fit_and_compare(make_cfg, tiny_checkpoint, "module.freeze.token_embeddings=true")
    model = objects["model"]
    assert model.lm_head.weight is model.model.shared.weight and not model.model.shared.weight.requires_grad
    assert torch.equal(model.model.shared.weight, before["model.shared.weight"])  # tied lm_head included
    assert not torch.equal(model.model.encoder.layers[0].fc1.weight, before["model.encoder.layers.0.fc1.weight"])
    optimized = {id(p) for group in objects["trainer"].optimizers[0].param_groups for p in group["params"]}
    assert id(model.model.shared.weight) not in optimized
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
    loaded = LSGPegasusForConditionalGeneration.from_pretrained(tiny_checkpoint)  # the same weights, unfrozen
    tables = sum(table.weight.numel() for table in loaded.get_position_embeddings())  # computed, never trained
    total = sum(p.numel() for p in loaded.parameters()) - tables
    trainable = total - loaded.model.shared.weight.numel()
    assert f"trainable parameters: {trainable:,} of {total:,}" in caplog.text
    assert f"not counted: {tables:,} in the sinusoidal position tables" in caplog.text


def test_trainable_share_leaves_out_the_sinusoidal_tables(make_cfg, caplog):
    """Before, a model with nothing frozen logged 17% trainable: the frozen sinusoidal tables counted as parameters."""
    with caplog.at_level(logging.INFO, logger="lsgtrain.tasks.base"):
        objects = build(make_cfg("data.max_samples=4"))
    model = objects["model"]
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable parameters: {total:,} of {total:,} (100.00%); module.freeze: nothing" in caplog.text


def test_training_only_global_embeddings_changes_nothing_else(make_cfg, tiny_checkpoint):
    objects, before = _fit_and_compare(make_cfg, tiny_checkpoint, "module.freeze.all_but_global_embeddings=true")
    model = objects["model"]
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained == ["model.encoder.global_embeddings.weight"]
    optimized = [p for group in objects["trainer"].optimizers[0].param_groups for p in group["params"]]
    assert optimized == [model.model.encoder.global_embeddings.weight]
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) != (name in trained), name
    assert torch.equal(model.final_logits_bias, torch.zeros_like(model.final_logits_bias))


def test_only_global_embeddings_still_trains_a_classifiers_head():
    """A new classification head is random: frozen, the classifier could never learn (the reference trains it)."""
    config = LSGPegasusConfig(
        vocab_size=60, d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=16, block_size=8,
        sparse_block_size=8, num_labels=3,
    )  # fmt: skip
    model = LSGPegasusForSequenceClassification(config)
    module = ClassificationModule(
        model=model, optimizer=partial(torch.optim.AdamW, lr=1e-3), freeze={"all_but_global_embeddings": True}
    )
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    head = {name for name, _ in model.named_parameters() if name.startswith("classification_head.")}
    assert head and trained == {"model.encoder.global_embeddings.weight", *head}
    optimizer = module.configure_optimizers()["optimizer"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()
                                                                           if p.requires_grad}  # fmt: skip


def test_only_global_embeddings_is_refused_on_a_model_without_them():
    from transformers import PegasusConfig, PegasusForConditionalGeneration

    from lsgtrain.tasks.base import freeze_parameters

    model = PegasusForConditionalGeneration(PegasusConfig(vocab_size=60, d_model=16, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16))  # fmt: skip
    with pytest.raises(ValueError, match=r"PegasusForConditionalGeneration has no global embeddings, so nothing"):
        freeze_parameters(model, all_but_global_embeddings=True)
    assert all(p.requires_grad for n, p in model.named_parameters() if "embed_positions" not in n)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["module.freeze.token_embeddings=true"], r"module.freeze.token_embeddings=true on a randomly initialised "
         r"model: the frozen weights would stay random"),
        (["+module.freeze.embeddings=true"], r"module.freeze.embeddings is not a freezing option; options: "
         r"token_embeddings, all_but_global_embeddings"),
        (["module.scheduler.name=cosin"], r"module.scheduler.name='cosin' is unknown; choose one of linear, cosine, "
         r"constant"),
        (["trainer.precision=16-mixed"], r"trainer.precision=16-mixed: Pegasus overflows in float16 .* Use "
         r"trainer.precision=bf16-mixed .* add allow_fp16=true"),
        (["trainer.precision=16"], r"trainer.precision=16: Pegasus overflows in float16"),
        (["trainer.precision=16-true"], r"trainer.precision=16-true: Pegasus overflows in float16"),
    ],
)  # fmt: skip
def test_bad_training_controls_fail_before_any_data_work(make_cfg, tmp_path, overrides, message):
    assert_refused_before_data_work(make_cfg(*overrides, "data.max_samples=4"), tmp_path, ValueError, message)


def test_fp16_with_the_explicit_opt_in_only_warns(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="lsgtrain.preflight"):
        check_config(make_cfg("trainer.precision=16-mixed", "allow_fp16=true"))
    assert "trainer.precision=16-mixed with allow_fp16=true: Pegasus overflows in float16" in caplog.text


def test_a_pretrained_model_trains_with_dropout_and_fixed_position_tables(make_cfg, tiny_checkpoint):
    """`from_pretrained` returns an eval-mode model whose sinusoidal tables transformers 5.24 makes trainable: the
    run must train in train mode (dropout on) and leave the tables exactly as computed."""
    loaded = LSGPegasusForConditionalGeneration.from_pretrained(tiny_checkpoint)
    assert not any(p.requires_grad for name, p in loaded.named_parameters() if "embed_positions" in name)

    modes = []

    class RecordModes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append({name for name, m in pl_module.model.named_modules() if not m.training})

    cfg = make_cfg(*QUICK, f"model.pretrained={tiny_checkpoint}", "trainer.limit_train_batches=2")
    objects = build(cfg)
    objects["trainer"].callbacks.append(RecordModes())
    model = objects["model"]
    tables = {name: p.detach().clone() for name, p in model.named_parameters() if "embed_positions" in name}
    assert len(tables) == 2
    objects["trainer"].fit(objects["module"], datamodule=objects["datamodule"])
    assert modes == [set(), set()]  # every module in training mode at every step: dropout applies
    for name, p in model.named_parameters():
        if name in tables:
            assert torch.equal(p, tables[name]) and not p.requires_grad, name


def test_fewer_optimizer_steps_than_an_epoch_or_a_warm_up_are_warned(make_cfg, caplog):
    """Before, effective_batch_size=32 on 4 rows (2 batches) trained 1 optimizer step without a word."""
    cfg = make_cfg(*QUICK, "effective_batch_size=32")
    with caplog.at_level(logging.WARNING, logger="lsgtrain.tasks.base"):
        _, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert "an epoch is 2 batches, fewer than the 16 that one optimizer step accumulates" in caplog.text
    assert "the run has 1 optimizer steps, fewer than one warm-up step needs" in caplog.text
