"""A run folder's life: names that stay inside the outputs, one run at a time, finished runs not re-entered, refused
runs leaving nothing behind, no finished marker without a step."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lsgtrain.callbacks.hf_export import UntrainedModel
from lsgtrain.run.folder import SUMMARY, RunFolder, RunReport
from lsgtrain.train import train

from ..helpers import ENV, QUICK, ROOT, SHORT, finished_run


class _Finisher:
    def __init__(self, folder):
        self.folder, self.seen = folder, []

    def on_run_end(self, trainer, report):
        self.seen.append(("end", (self.folder / SUMMARY).exists(), report.untested))

    def on_run_finished(self, trainer):
        self.seen.append(("finished", (self.folder / SUMMARY).exists(), None))


def _train_py(tmp_path: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    paths = [f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"]
    command = [sys.executable, "train.py", *QUICK, *overrides, *paths]  # a quick run where it is not refused
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


def test_a_run_name_that_is_a_path_is_refused_before_hydra_creates_anything(tmp_path):
    result = _train_py(tmp_path / "root", "run_name=../../../../escaped")
    assert result.returncode != 0
    assert "run_name='../../../../escaped' is not a folder name" in result.stderr
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "root").exists()  # not even the outputs folder


def test_a_refused_run_leaves_no_run_folder_but_a_resumable_one_is_kept(tmp_path):
    result = _train_py(tmp_path, "run_name=refused", "trainer.max_epochs=abc")
    assert result.returncode == 1 and "trainer.max_epochs='abc' must be an integer" in result.stderr
    assert not (tmp_path / "outputs" / "train" / "runs" / "refused").exists()


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_goes_on(make_cfg, tmp_path):
    from lsgtrain.run.folder import RunFolder

    with RunFolder(tmp_path / "run"):
        with pytest.raises(RuntimeError, match=rf"run folder {tmp_path / 'run'} is in use by a run that is still "
                           rf"going \(pid {os.getpid()} on .*another run_name"):  # fmt: skip
            train(make_cfg(*SHORT))
    assert not (tmp_path / "run" / "checkpoints").exists()
    finished_run(make_cfg, tmp_path)  # the lock is gone with its holder


def test_a_finished_run_is_not_re_entered(make_cfg, tmp_path):
    run = finished_run(make_cfg, tmp_path, "logger=csv")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match=r"has finished \(run_summary.json is there\).*another run_name"):
        train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null", "logger=csv"))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_that_makes_no_step_exports_nothing_and_is_not_marked_finished(make_cfg, tmp_path):
    cfg = make_cfg(*SHORT, "test=false", "+trainer.max_time='00:00:00:00'")
    with pytest.raises(UntrainedModel, match=r"the run made no optimizer step .*not exported"):
        train(cfg)
    assert not (tmp_path / "run" / "hf_model").exists()
    assert not (tmp_path / "run" / "run_summary.json").exists()
    cfg = make_cfg(*SHORT, "test=false", "callbacks.hf_export=null", "+trainer.max_time='00:00:00:00'")
    cfg.paths.output_dir = str(tmp_path / "no-export")
    with pytest.raises(UntrainedModel):
        train(cfg)
    assert not (tmp_path / "no-export" / "run_summary.json").exists()


def test_the_run_folder_ends_a_run_card_first_summary_then_the_push(tmp_path):
    finisher = _Finisher(tmp_path / "run")
    trainer = SimpleNamespace(
        is_global_zero=True, callbacks=[finisher], checkpoint_callback=None, strategy=None, global_step=3,
        world_size=1, num_nodes=1, current_epoch=1,
    )  # fmt: skip
    with RunFolder(tmp_path / "run") as folder:
        folder.training()
        folder.finish(trainer, RunReport({}, {"val/loss": 1.0}, 2.0, resumed=False, untested="test=false"))
    assert finisher.seen == [("end", False, "test=false"), ("finished", True, None)]
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert summary["test_skipped_because"] == "test=false" and summary["global_step"] == 3
    with pytest.raises(RuntimeError, match="has finished"), RunFolder(tmp_path / "run"):
        pass
    assert (tmp_path / "run" / SUMMARY).is_file()  # a refused rerun of a finished run removes nothing
