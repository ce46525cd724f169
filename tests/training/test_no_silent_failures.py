"""Runs that go wrong say so, at once: divergence, unsafe files, bad settings, resume surprises (issue 13)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lsgtrain.callbacks import TrainingDiverged
from lsgtrain.checkpointing import CheckpointError
from lsgtrain.evaluate import evaluate
from lsgtrain.train import train

from .test_train import SHORT


def test_divergence_stops_the_run_at_the_step_without_success_marker_or_export(make_cfg, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"training diverged at optimizer step \d+ \(epoch \d\)") as error:
        train(make_cfg(*SHORT, "module.optimizer.lr=1000"))
    assert "module.optimizer.lr" in str(error.value)
    run = tmp_path / "run"
    assert not (run / "run_summary.json").exists()
    assert not (run / "hf_model").exists()
    assert not list(run.glob("checkpoints/epoch*.ckpt"))  # nothing was ranked as best


def test_export_refuses_non_finite_weights(make_cfg, tmp_path):
    from lsgtrain.callbacks import HFExport

    _, objects = train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null"))
    trainer, module = objects["trainer"], objects["module"]
    trainer.checkpoint_callback.best_model_path = ""
    with torch.no_grad():
        next(module.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite weights"):
        HFExport(str(tmp_path / "export")).on_fit_end(trainer, module)
    assert not (tmp_path / "export").exists()


class RunsCode:
    """Pickles to a call of `exec`: loading it with plain `pickle` runs the code."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_checkpoints_load_with_weights_only_and_a_crafted_one_runs_no_code(make_cfg, tmp_path):
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null"))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)  # plain data only
    marker = tmp_path / "code-ran"
    saved["state_dict"]["payload"] = RunsCode(f"open({str(marker)!r}, 'w').write('ran')")
    crafted = tmp_path / "crafted.ckpt"
    torch.save(saved, crafted)
    cfg = make_cfg(*SHORT, f"ckpt_path={crafted}", config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors.*weights_only=True"):
        evaluate(cfg)
    resume = make_cfg(*SHORT, f"ckpt_path={crafted}")
    resume.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors"):
        train(resume)
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # the file does run code when loaded without the restriction
    assert marker.read_text() == "ran"


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(home / "modules"), "HF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lsgtrain.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def test_summarize_does_not_run_a_model_folders_code_unless_asked(tiny_checkpoint, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    marker = tmp_path / "code-ran"
    with open(folder / "modeling_lsg_pegasus.py", "a") as modeling:
        modeling.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    document = tmp_path / "doc.txt"
    document.write_text("Long documents need sparse attention. " * 20)
    options = [str(folder), str(document), "--num-beams", "1", "--max-new-tokens", "3"]
    result = _cli("summarize", *options, home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary" in json.loads(result.stdout.splitlines()[-1])
    assert not marker.exists()
    result = _cli("summarize", *options, "--trust-remote-code", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "ran"  # the opt-in does run the folder's code
