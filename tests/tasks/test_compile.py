"""`module.compile=true`: the compiled training forward gives eager's losses; a compile failure is an error."""

import functools

import pytest
import torch
from lightning import Callback

from lsgtrain.train import build, train

from ..helpers import QUICK

# One shape bucket: sources cut to 64 tokens (block 16), summaries to 16, no dropout (compiled and eager draw their
# masks differently), no validation (its eval graph would compile too).
SAME_SHAPES = [
    *QUICK, "data.max_source_length=64", "data.max_target_length=16", "data.max_samples=40",
    "trainer.limit_train_batches=20", "trainer.limit_val_batches=0", "++model.init.dropout=0.0",
    "model.attention_dropout=0.0",
]  # fmt: skip


class LossRecorder(Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _losses(make_cfg, *overrides: str) -> list[float]:
    objects = build(make_cfg(*SAME_SHAPES, *overrides))
    recorder = LossRecorder()
    objects["trainer"].callbacks.append(recorder)
    objects["trainer"].fit(objects["module"], datamodule=objects["datamodule"])
    return recorder.losses


@pytest.mark.slow
def test_compiled_training_gives_eagers_losses_over_20_steps(make_cfg):
    eager = _losses(make_cfg)
    compiled = _losses(make_cfg, "module.compile=true")
    assert len(eager) == len(compiled) == 20
    assert compiled == pytest.approx(eager, abs=1e-4)
    assert eager[-1] < eager[0]  # it trained


@pytest.mark.slow
def test_a_compile_failure_is_an_error_not_an_eager_fallback(make_cfg, monkeypatch):
    def failing_backend(graph, example_inputs):
        raise NotImplementedError("no kernel for this op")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=failing_backend))
    with pytest.raises(RuntimeError, match=r"module.compile=true: torch.compile failed on inputs input_ids \(2, 64\)"):
        train(make_cfg(*SAME_SHAPES, "module.compile=true"))
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # running out of graphs is an error too
