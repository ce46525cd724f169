"""`train()` / `python train.py`: what a run leaves (checkpoints, predictions, export, summary) and its precision
(bf16-mixed trains in bf16, fp16 only with the opt-in)."""

import json
import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lsgtrain.preflight import check_config
from lsgtrain.train import train

from ..helpers import SHORT


class TrainingForwardDtypes(Callback):
    """Records the dtypes the model's linear layers compute in during training steps, and the weights before fit."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()
        self.initial: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.initial = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
        for module in pl_module.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        if module.training:
            self.dtypes.add(output.dtype)


def test_summarization_run_leaves_checkpoints_predictions_and_export(make_cfg, tmp_path):
    metrics, objects = train(make_cfg(*SHORT))
    run = tmp_path / "run"
    assert objects["trainer"].global_step == 6
    for stage in ("val", "test"):
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert 0.0 <= metrics[f"{stage}/{name}"] <= 100.0
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"last.ckpt"}
    assert len(list((run / "checkpoints").glob("epoch*.ckpt"))) == 1
    test_rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert [row["id"] for row in test_rows] == list(range(8))
    assert all(row["reference"] and "prediction" in row for row in test_rows)
    per_row = [row["rougeLsum"] for row in test_rows]  # each row's own ROUGE; their mean is the logged one
    assert sum(per_row) / len(per_row) == pytest.approx(metrics["test/rougeLsum"], abs=0.01)
    assert (run / "predictions" / "val_epoch1.jsonl").is_file()
    assert {"config.json", "model.safetensors", "modeling_lsg_pegasus.py", "tokenizer.json"} <= {
        p.name for p in (run / "hf_model").iterdir()
    }
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["metrics"]["test/rougeLsum"] == metrics["test/rougeLsum"]


def test_bf16_mixed_cpu_run_trains(make_cfg):
    recorder = f"+callbacks.dtypes._target_={__name__}.TrainingForwardDtypes"
    metrics, objects = train(make_cfg(*SHORT, "trainer.precision=bf16-mixed", "test=false", recorder))
    assert objects["trainer"].global_step == 6
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    recorded = next(c for c in objects["trainer"].callbacks if isinstance(c, TrainingForwardDtypes))
    assert recorded.dtypes == {torch.bfloat16}  # every training matmul ran under bf16 autocast
    parameters = dict(objects["module"].named_parameters())
    assert {p.dtype for p in parameters.values()} == {torch.float32}  # mixed: the weights stay float32
    assert all(torch.isfinite(p).all() for p in parameters.values())
    changed = [name for name, p in parameters.items() if not torch.equal(p, recorded.initial[name])]
    assert len(changed) > len(parameters) // 2  # the optimizer stepped on the bf16 gradients


def test_fp16_with_the_explicit_opt_in_only_warns(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="lsgtrain.preflight"):
        check_config(make_cfg("trainer.precision=16-mixed", "allow_fp16=true"))
    assert "trainer.precision=16-mixed with allow_fp16=true: Pegasus overflows in float16" in caplog.text
