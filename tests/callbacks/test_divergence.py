"""A non-finite loss or validation loss stops the run at that step: no success marker, no best checkpoint, no export."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lsgtrain.callbacks import TrainingDiverged
from lsgtrain.train import train

from ..helpers import SHORT


class PoisonBeforeValidation(Callback):
    """Makes one weight infinite before validation: the model a diverging run would validate."""

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            pl_module.model.get_input_embeddings().weight.fill_(float("inf"))


def test_divergence_stops_the_run_at_the_step_without_success_marker_or_export(make_cfg, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"training diverged at optimizer step \d+ \(epoch \d\)") as error:
        train(make_cfg(*SHORT, "module.optimizer.lr=1000"))
    assert "module.optimizer.lr" in str(error.value)
    run = tmp_path / "run"
    assert not (run / "run_summary.json").exists()
    assert not (run / "hf_model").exists()
    assert not list(run.glob("checkpoints/epoch*.ckpt"))  # nothing was ranked as best


def test_non_finite_validation_loss_stops_the_run_before_the_model_is_kept_as_best(make_cfg, tmp_path):
    poison = "+callbacks.poison._target_=tests.callbacks.test_divergence.PoisonBeforeValidation"
    with pytest.raises(TrainingDiverged, match=r"validation loss is nan after 3 optimizer steps \(epoch 0\)"):
        train(make_cfg(*SHORT, poison))
    assert not list((tmp_path / "run").glob("checkpoints/epoch*.ckpt"))
    assert not (tmp_path / "run" / "run_summary.json").exists()
