"""Sweeps through the real CLI: Optuna with an impossible trial (locally and as SLURM jobs), a grid with `-m`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import QUICK

ROOT = Path(__file__).resolve().parents[2]


def _sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    swept = {override.split("=")[0] for override in overrides}
    quick = [override for override in QUICK if override.split("=")[0] not in swept]  # the sweep's values win
    command = [sys.executable, "train.py", "-m", *quick, f"hydra.sweep.dir={tmp_path / 'sweep'}",
               f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


def _trials(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep" / "trials").glob("*.json"))]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_optuna_sweep_survives_an_impossible_trial(launcher, tmp_path, request):
    submit = []
    if launcher == "slurm":  # all three trials at once, each a SLURM job
        request.getfixturevalue("slurm_cluster")
        submit = ["hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=20",
                  f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}/%j", "hydra.sweeper.n_jobs=3"]  # fmt: skip
    result = _sweep(
        tmp_path, *submit, "hparams_search=lsg_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=2",
        # command-line search space: sparsity_factor 3 cannot divide block_size 16; the rest is fixed
        "model.lsg.sparsity_factor=choice(3,4)", "model.lsg.block_size=16", "model.lsg.sparse_block_size=16",
        "model.lsg.sparsity_type=norm", "model.lsg.num_global_tokens=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _trials(tmp_path)
    assert len(trials) == 3
    failed = [t for t in trials if t["status"] == "failed"]
    finished = [t for t in trials if t["status"] == "ok"]
    assert failed and finished, trials
    assert all("block_size (16) must be a multiple of sparsity_factor (3)" in t["error"] for t in failed)
    assert all(0.0 <= t["metric"] <= 100.0 for t in finished)
    summary = (tmp_path / "sweep" / "trials.md").read_text()
    assert summary.count("| failed |") == len(failed) and summary.count("| ok |") == len(finished)
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value" in best


@pytest.mark.slow
def test_grid_sweep_runs_every_combination(tmp_path):
    result = _sweep(tmp_path, "model.lsg.sparsity_type=none,pooling")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _trials(tmp_path)
    assert sorted(t["overrides"][-1] for t in trials) == [
        "model.lsg.sparsity_type=none", "model.lsg.sparsity_type=pooling",
    ]  # fmt: skip
    assert all(t["status"] == "ok" for t in trials)


@pytest.mark.slow
def test_a_second_sweep_into_the_same_multirun_folder_is_refused_before_any_trial(tmp_path):
    first = _sweep(tmp_path, "model.lsg.sparsity_type=none")
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "sweep"
    records = {name: (sweep / name).read_bytes() for name in ("multirun.yaml", "trials.md", "trials/0.json")}
    second = _sweep(tmp_path, "model.lsg.sparsity_type=pooling")
    assert second.returncode == 1
    assert f"hydra.sweep.dir={sweep} holds an earlier sweep (multirun.yaml, trials, trials.md)" in second.stderr
    assert "Give this sweep another hydra.sweep.dir" in second.stderr
    assert {name: (sweep / name).read_bytes() for name in records} == records  # the first sweep's, untouched
    assert "Instantiating datamodule" not in second.stdout + second.stderr  # no trial ran
