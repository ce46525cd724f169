"""lsgtrain on a real SLURM cluster (two nodes on this machine): launcher sweeps, srun DDP on one node and across
two nodes, preemption and requeue.

The cluster comes from the `slurm_cluster` fixture (tests/conftest.py); jobs run the tiny model on CPU.
"""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import FAST, QUICK, TINY_INIT
from .step_recorder import assert_same_steps, read_steps

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "experiments" / "slurm" / "train.sbatch"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
GENERATION = ["++module.generation.max_new_tokens=8", "++module.generation.num_beams=1"]


def _env() -> dict[str, str]:
    # MASTER_ADDR: the test cluster's node names (n1, n2) do not resolve; Lightning's SLURM environment reads it
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
            "LSGTRAIN_PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1"}  # fmt: skip


def sbatch(tmp_path: Path, *arguments: str, tasks: int = 1, nodes: int = 1) -> str:
    """Submit the repository's sbatch template (CPU: one core per task, no GPU); returns the job id."""
    command = ["sbatch", "--parsable", f"--nodes={nodes}", f"--ntasks-per-node={tasks}", "--gpus-per-node=0",
               "--cpus-per-task=1", "--time=20", f"--output={tmp_path}/slurm-%j.out", str(TEMPLATE),
               *arguments]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=_env(), check=True)
    return result.stdout.strip().split(";")[0]


def job_info(job: str) -> dict[str, str]:
    line = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def wait_until_finished(tmp_path: Path, job: str, timeout: float = 600) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (info := job_info(job)).get("JobState") not in FINISHED:
        assert time.monotonic() < deadline, f"job {job} still {info.get('JobState')} after {timeout} s"
        time.sleep(0.5)
    log = tmp_path / f"slurm-{job}.out"
    assert info["JobState"] == "COMPLETED", log.read_text()[-4000:] if log.exists() else info
    return info


def run_dir(tmp_path: Path, job: str) -> Path:
    return tmp_path / "outputs" / "train" / "runs" / f"lsgtrain-{job}"


@pytest.mark.slow
def test_sweep_through_the_slurm_launcher_returns_each_trials_metric(slurm_cluster, tmp_path):
    submitit = tmp_path / "submitit"
    command = [
        sys.executable, "train.py", "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug",
        f"hydra.launcher.submitit_folder={submitit}/%j", "hydra.launcher.timeout_min=20", *QUICK,
        f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        "model.lsg.sparsity_type=none,pooling",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]

    outcomes = [pickle.loads(path.read_bytes()) for path in sorted(submitit.glob("*/*_result.pkl"))]
    assert [status for status, _ in outcomes] == ["success", "success"]  # two SLURM jobs, each with its result
    returned = {job_return.overrides[-1]: job_return.return_value for _, job_return in outcomes}
    records = [json.loads(path.read_text()) for path in (tmp_path / "sweep" / "trials").glob("*.json")]
    trials = {row["overrides"][-1]: row for row in records}
    assert set(returned) == set(trials) == {"model.lsg.sparsity_type=none", "model.lsg.sparsity_type=pooling"}
    for override, metric in returned.items():
        assert isinstance(metric, float) and 0.0 <= metric <= 100.0
        assert trials[override]["metric"] == metric and trials[override]["status"] == "ok"
    array_tasks = sorted(path.name for path in submitit.iterdir() if path.is_dir() and "_" in path.name)
    assert len(array_tasks) == 2
    for task in array_tasks:  # the launcher returns when results exist; SLURM may still be completing the job
        wait_until_finished(tmp_path, task)


LAYOUTS = [pytest.param(1, 2, id="1-node-x-2-tasks"), pytest.param(2, 1, id="2-nodes-x-1-task")]


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "tasks"), LAYOUTS)
def test_two_rank_srun_ddp_job_trains_and_scores_like_one_process(slurm_cluster, tmp_path, nodes, tasks):
    """2 ranks x batch 1 (srun, gloo; on one node or across two) against 1 process x batch 2: same documents per
    step, loss averaged over every target token of the step, no dropout -> the same model, summaries and ROUGE."""
    training = [
        *FAST, *GENERATION, "data.tokenizer.vocab_size=2000", "data.max_samples=6", "data.eval_batch_size=1",
        "++model.init.d_model=32", "++model.init.encoder_ffn_dim=64", "++model.init.decoder_ffn_dim=64",
        "++model.init.dropout=0", "++module.generation.max_new_tokens=16", "module.optimizer.lr=5e-3",
        "trainer.max_epochs=30", "callbacks.rouge.every_n_epochs=100", "callbacks.hf_export=null",
        f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    job = sbatch(tmp_path, *training, "trainer=ddp_cpu", f"trainer.devices={tasks}", "data.batch_size=1",
                 tasks=tasks, nodes=nodes)  # fmt: skip
    single = subprocess.run(
        [sys.executable, "train.py", *training, "trainer=cpu", "data.batch_size=2", "run_name=single"],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    wait_until_finished(tmp_path, job)

    runs = {name: tmp_path / "outputs" / "train" / "runs" / name for name in ("single", f"lsgtrain-{job}")}
    summaries = {name: json.loads((folder / "run_summary.json").read_text()) for name, folder in runs.items()}
    distributed, one = summaries[f"lsgtrain-{job}"], summaries["single"]
    # 6 documents -> 3 steps per epoch either way; ranks and world size taken from SLURM
    assert distributed["world_size"] == 2 and distributed["cluster_environment"] == "SLURMEnvironment"
    assert distributed["num_nodes"] == nodes
    assert distributed["global_step"] == one["global_step"] == 90
    for stage in ("val", "test"):
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            key = f"{stage}/{name}"
            assert distributed["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-9), key
        assert distributed["metrics"][f"{stage}/loss"] == pytest.approx(one["metrics"][f"{stage}/loss"], rel=1e-4)
    assert one["metrics"]["test/rouge1"] > 5  # the model has learnt words: the comparison means something
    predictions = [(folder / "predictions" / "test.jsonl").read_text() for folder in runs.values()]
    assert predictions[0] == predictions[1]


def _signal_when_running(job: str, steps_file: Path, steps: int = 2) -> None:
    """Once the job has taken `steps` optimizer steps, send what SLURM sends before a time limit or a preemption
    (`--signal=USR2@...`): it reaches every task of the job."""
    deadline = time.monotonic() + 300
    while not (steps_file.exists() and len(read_steps(steps_file)) >= steps):
        assert job_info(job).get("JobState") in ("PENDING", "RUNNING"), job_info(job)
        assert time.monotonic() < deadline, f"job {job} never reached step {steps}"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)


def _recording_run(tmp_path: Path, *overrides: str) -> list[str]:
    """A 9-step training run, slowed to 1 s per step, that records its steps."""
    return [
        *FAST, *TINY_INIT, *GENERATION, "trainer.max_epochs=3", "trainer.limit_train_batches=3",
        "callbacks.hf_export=null", "test=false", f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        "+callbacks.step_recorder._target_=tests.slurm.step_recorder.StepRecorder",
        "+callbacks.step_recorder.delay_s=1", *overrides,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "tasks"), LAYOUTS)
def test_preempted_ddp_job_checkpoints_requeues_and_resumes_without_repeating_a_step(
    slurm_cluster, tmp_path, nodes, tasks
):
    training = _recording_run(
        tmp_path, "trainer=ddp_cpu", f"trainer.devices={tasks}", "data.max_samples=12",
        "callbacks.rouge.every_n_epochs=100",
    )  # 12 documents, 2 ranks: 3 batches of 2 per rank and epoch  # fmt: skip
    layout = {"tasks": tasks, "nodes": nodes}
    preempted_steps = tmp_path / "preempted.jsonl"
    preempted = sbatch(tmp_path, *training, f"+callbacks.step_recorder.path={preempted_steps}", "logger=wandb",
                       **layout)  # fmt: skip
    reference_steps = tmp_path / "reference.jsonl"
    reference = sbatch(tmp_path, *training, f"+callbacks.step_recorder.path={reference_steps}", **layout)
    _signal_when_running(preempted, preempted_steps)

    info = wait_until_finished(tmp_path, preempted)
    wait_until_finished(tmp_path, reference)
    assert info["Restarts"] == "1"  # requeued once, by the job itself
    log = (tmp_path / f"slurm-{preempted}.out").read_text()
    assert "received SIGUSR2" in log and f"requeueing SLURM job {preempted}" in log and "Resuming from" in log

    for rank in (0, 1):
        expected = read_steps(reference_steps, rank)
        assert [row["step"] for row in expected] == list(range(1, 10))
        # every step once, on the same documents and dropout masks as the uninterrupted run, on both ranks
        assert_same_steps(read_steps(preempted_steps, rank), expected)
        # rank r ran on node r+1 in a two-node job, on n1 in a one-node one, before and after the requeue
        assert {row["node"] for row in read_steps(preempted_steps, rank)} == {f"n{rank + 1 if nodes == 2 else 1}"}
    summaries = [
        json.loads((run_dir(tmp_path, job) / "run_summary.json").read_text()) for job in (preempted, reference)
    ]
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == 9
    assert summaries[0]["world_size"] == 2 and summaries[0]["num_nodes"] == nodes
    # one run folder and one wandb run (same id) across the requeue
    runs = sorted(p.name for p in (tmp_path / "outputs" / "train" / "runs").iterdir())
    assert runs == sorted(f"lsgtrain-{job}" for job in (preempted, reference))
    wandb_runs = sorted((run_dir(tmp_path, preempted) / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and len({path.name.rsplit("-", 1)[1] for path in wandb_runs}) == 1


@pytest.mark.slow
def test_preempted_launcher_job_resumes_and_returns_its_metric(slurm_cluster, tmp_path):
    submitit, sweep = tmp_path / "submitit", tmp_path / "sweep"
    command = [
        sys.executable, "train.py", "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug",
        f"hydra.launcher.submitit_folder={submitit}/%j", "hydra.launcher.timeout_min=20", f"hydra.sweep.dir={sweep}",
        *_recording_run(tmp_path, "data.max_samples=6", "callbacks.rouge.every_n_epochs=3"),
        "+callbacks.step_recorder.path='${paths.output_dir}/steps.jsonl'", "+trial=preempted,reference",
    ]  # fmt: skip
    launcher = subprocess.Popen(
        command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (tasks := sorted(p.name for p in submitit.glob("*_0") if p.is_dir())):
            assert launcher.poll() is None and time.monotonic() < deadline, "the sweep was not submitted"
            time.sleep(0.2)
        _signal_when_running(tasks[0], sweep / "0" / "steps.jsonl")  # trial 0 is `trial=preempted`
        output, _ = launcher.communicate(timeout=600)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, output[-4000:]
    assert job_info(tasks[0])["Restarts"] == "1"

    outcomes = [pickle.loads(path.read_bytes()) for path in sorted(submitit.glob("*/*_result.pkl"))]
    assert [status for status, _ in outcomes] == ["success", "success"]
    metrics = [job_return.return_value for _, job_return in outcomes]
    assert metrics[0] == metrics[1]  # the resumed trial trained exactly like the uninterrupted one
    assert_same_steps(read_steps(sweep / "0" / "steps.jsonl"), read_steps(sweep / "1" / "steps.jsonl"))
    assert [row["step"] for row in read_steps(sweep / "0" / "steps.jsonl")] == list(range(1, 10))
