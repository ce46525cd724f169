"""What trains: frozen embeddings stay bit-identical and leave the optimizer, global embeddings alone (and a
classifier's head), fixed position tables, dropout on in a pretrained model."""

import logging
from functools import partial

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration, LSGPegasusForSequenceClassification
from lsgtrain.tasks.classification import ClassificationModule
from lsgtrain.train import build

from ..helpers import QUICK


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
