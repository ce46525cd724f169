"""A local run killed with SIGKILL mid-epoch resumes when the same command is run again (`ckpt_path=last`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..slurm.step_recorder import assert_same_steps, read_steps
from .conftest import FAST, TINY_INIT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kill_9_mid_epoch_then_same_command_resumes_with_the_right_step_count(tmp_path):
    steps_file = tmp_path / "steps.jsonl"
    command = [
        sys.executable, "train.py", *FAST, *TINY_INIT, "run_name=crash", "data.max_samples=8",
        "trainer.max_epochs=2", "trainer.limit_train_batches=4", "callbacks.rouge.every_n_epochs=100",
        "callbacks.hf_export=null", "test=false", "callbacks.step_checkpoint.every_n_train_steps=2",
        f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        "+callbacks.step_recorder._target_=tests.slurm.step_recorder.StepRecorder",
        f"+callbacks.step_recorder.path={steps_file}", "+callbacks.step_recorder.delay_s=0.7",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (steps_file.exists() and len(read_steps(steps_file)) >= 3):  # in epoch 0, after the step-2 save
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = read_steps(steps_file)
    assert 3 <= len(before) < 8

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "train" / "runs" / "crash"
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in second.stdout + second.stderr
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["global_step"] == 8 and summary["epochs"] == 2

    after = read_steps(steps_file)[len(before) :]
    # resumed from the last step checkpoint (every 2 steps; the one after the last recorded step may not exist)
    resumed_from = after[0]["step"] - 1
    assert resumed_from in (2, 4, 6) and len(before) - 2 <= resumed_from <= len(before)
    # the steps after that checkpoint are redone on the same documents, then training goes on to step 8
    assert [row["step"] for row in after] == list(range(resumed_from + 1, 9))
    redone = [row for row in before if row["step"] > resumed_from]
    # redone steps repeat the killed run's exactly: same documents, same dropout masks (restored random states)
    assert_same_steps(after[: len(redone)], redone)
