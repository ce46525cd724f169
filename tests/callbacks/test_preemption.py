"""SIGTERM / SIGINT save the step, exit non-zero, and the same command resumes."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ..helpers import ENV, FAST, ROOT, TINY_INIT, recorded_train_command
from ..slurm.step_recorder import read_steps


def _signal_when(command: list[str], log: Path, ready, signum: signal.Signals) -> int:
    """Start `command` (output to `log`), send it `signum` once `ready()` (at most 300 s), return its exit code."""
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not ready():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signum)
        process.wait(timeout=300)
    return process.returncode


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "rerun"), [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)])
def test_sigterm_and_sigint_save_the_step_exit_non_zero_and_the_same_command_resumes(tmp_path, signum, code, rerun):
    command, steps_file = recorded_train_command(tmp_path, "stopped", every_n_train_steps=100)
    log = tmp_path / "first.log"
    returncode = _signal_when(command, log, lambda: steps_file.exists() and len(read_steps(steps_file)) >= 2, signum)
    assert returncode == code, log.read_text()[-3000:]
    run = tmp_path / "outputs" / "train" / "runs" / "stopped"
    last = run / "checkpoints" / "last.ckpt"
    saved_step = torch.load(last, weights_only=True)["global_step"]
    assert saved_step == len(read_steps(steps_file))  # the step it was in when signalled, finished and saved
    assert (
        f"received {signal.Signals(signum).name}: saving last.ckpt at the end of this optimizer step" in log.read_text()
    )
    assert not (run / "run_summary.json").exists()
    assert not list(last.parent.glob(".*.tmp"))
    if not rerun:  # the resume itself is the same for both signals: run once
        return
    second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming from {last}" in second.stdout + second.stderr
    after = read_steps(steps_file)[saved_step:]
    assert [row["step"] for row in after] == list(range(saved_step + 1, 9))
    assert json.loads((run / "run_summary.json").read_text())["global_step"] == 8
    # the resumed run's saves replace the signal's last.ckpt (no last-v1.ckpt beside it): its epoch ends are steps 4, 8
    assert sorted(path.name for path in last.parent.glob("last*.ckpt")) == ["last.ckpt"]
    assert torch.load(last, weights_only=True)["global_step"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["callbacks.rouge.every_n_epochs=1", "callbacks.rouge.every_n_steps=1"])
def test_a_sigterm_during_the_validation_runs_that_validation_after_the_resume(tmp_path, schedule):
    """Before, the resumed run skipped the interrupted validation: no best checkpoint, the last weights exported
    with no validation metrics, exit 0. The first validation: at the epoch's end, or at step 1 of 2."""
    validated = tmp_path / "validated.jsonl"
    command = [
        sys.executable, "train.py", *FAST, *TINY_INIT, "run_name=stopped", "data.max_samples=8",
        "data.eval_batch_size=2", "trainer.max_epochs=1", "trainer.limit_train_batches=2", schedule, "test=false",
        "++module.generation.max_new_tokens=4", "++module.generation.num_beams=1",
        f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        "+callbacks.val_recorder._target_=tests.slurm.step_recorder.ValidationRecorder",
        f"+callbacks.val_recorder.path={validated}", "+callbacks.val_recorder.delay_s=1.0",
    ]  # fmt: skip
    log = tmp_path / "first.log"

    def in_the_validation() -> bool:  # a validation batch is done
        return validated.exists() and bool(validated.read_text())

    assert _signal_when(command, log, in_the_validation, signal.SIGTERM) == 143, log.read_text()[-3000:]
    run = tmp_path / "outputs" / "train" / "runs" / "stopped"
    assert not list((run / "checkpoints").glob("epoch*.ckpt"))  # stopped before the validation's end
    second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).is_file()
    assert "val/rougeLsum" in summary["metrics"]
    assert "with no validation metrics" not in second.stdout + second.stderr
    card = (run / "hf_model" / "README.md").read_text()
    assert "rougeLsum" in card
    interrupted = json.loads(validated.read_text().splitlines()[0])["step"]
    assert (run / "predictions" / f"val_{'epoch0' if 'epochs' in schedule else f'step{interrupted}'}.jsonl").is_file()
