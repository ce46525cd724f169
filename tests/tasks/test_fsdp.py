"""trainer=fsdp_cpu (FSDP2 over 2 gloo processes): the same losses as DDP, a kill -9 and a resume that train like an
uninterrupted run, an export that loads in one process with the sharded model's logits, and the evaluation of a
sharded checkpoint."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from lsgtrain.checkpointing import CheckpointError, load_checkpoint, saved_run_config

from ..entry.test_evaluate import evaluate_checkpoint
from ..helpers import ENV, ROOT, recorded_train_command
from ..slurm.step_recorder import read_steps

pytestmark = pytest.mark.slow

# 10 optimizer steps of 2 processes x 2 rows over 3 epochs, ROUGE (4 greedy tokens) choosing the best checkpoint
# after each epoch, last.ckpt every 2 steps; the export is on.
TEN_STEPS = [
    "data.max_samples=16", "trainer.max_epochs=3", "++trainer.max_steps=10", "callbacks.rouge.every_n_epochs=1",
    "++module.generation.max_new_tokens=4", "++module.generation.num_beams=1", "callbacks.step_recorder.delay_s=0",
]  # fmt: skip


class RunsCode:
    """An object whose unpickling runs a shell command."""

    def __reduce__(self):
        return os.system, ("echo ran",)


def _command(tmp_path: Path, name: str, trainer: str, *overrides: str) -> tuple[list[str], Path, Path]:
    """A recorded 2-process run (`recorded_train_command`) of `TEN_STEPS` with trainer=`trainer`, writing each
    process's losses to its returned jsonl file; returns the command, that file and the run folder."""
    folder = tmp_path / name
    folder.mkdir()
    command, _ = recorded_train_command(folder, name, every_n_train_steps=2)
    losses = folder / "losses.jsonl"
    command += [
        f"trainer={trainer}", "trainer.devices=2", *TEN_STEPS, *overrides,
        "+callbacks.losses._target_=tests.slurm.step_recorder.LossRecorder", f"+callbacks.losses.path={losses}",
    ]  # fmt: skip
    command.remove("callbacks.hf_export=null")
    return command, losses, folder / "outputs" / "train" / "runs" / name


def _run(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def _losses(path: Path) -> list[tuple[int, int, float]]:
    """(step, rank, loss) of each training batch, in order."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((row["step"], row["rank"], row["loss"]) for row in rows)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A DDP run, and the same run with fsdp_cpu killed (-9) after step 5 and resumed by the same command."""
    tmp_path = tmp_path_factory.mktemp("fsdp")
    ddp, ddp_losses, _ = _command(tmp_path, "ddp", "ddp_cpu", "model.gradient_checkpointing=true")
    _run(ddp)
    logits = tmp_path / "logits.pt"
    command, losses, run = _command(
        tmp_path, "fsdp", "fsdp_cpu", "model.gradient_checkpointing=true", "callbacks.step_recorder.delay_s=0.7",
        "+callbacks.logits._target_=tests.slurm.step_recorder.LogitsRecorder", f"+callbacks.logits.path={logits}",
    )  # fmt: skip
    first = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    steps_file = losses.parent / "steps.jsonl"
    while not (steps_file.exists() and len(read_steps(steps_file)) >= 6):  # step 5 done, after the step-4 save
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = losses.with_name("killed.jsonl")
    losses.rename(killed)
    _run(command)
    return {"ddp": ddp_losses, "killed": killed, "resumed": losses, "run": run, "logits": logits}


def test_fsdp_trains_with_the_losses_of_ddp(runs):
    fsdp, ddp = _losses(runs["killed"]), {row[:2]: row[2] for row in _losses(runs["ddp"])}
    assert len(fsdp) >= 10 and {rank for _, rank, _ in fsdp} == {0, 1}  # 5 steps or more, 2 processes
    assert [loss for *_, loss in fsdp] == pytest.approx([ddp[row[:2]] for row in fsdp], abs=1e-5)
    best = sorted((runs["run"] / "checkpoints").glob("epoch*.ckpt"))[-1]  # sharded: a folder, a shards file a process
    assert sorted(path.name for path in best.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def test_fsdp_resumed_after_kill_9_trains_on_with_the_uninterrupted_losses(runs):
    ddp, resumed = _losses(runs["ddp"]), _losses(runs["resumed"])
    assert len(ddp) == 20  # 10 steps x 2 processes
    # from a sharded checkpoint before the kill (every 2 steps and at epoch ends), not from scratch, on to step 10
    assert 1 < resumed[0][0] <= _losses(runs["killed"])[-1][0] + 1 and resumed[-1][0] == 10
    uninterrupted = {row[:2]: row[2] for row in ddp}
    assert [loss for *_, loss in resumed] == pytest.approx([uninterrupted[row[:2]] for row in resumed], abs=1e-5)
    assert json.loads((runs["run"] / "run_summary.json").read_text())["global_step"] == 10


def test_fsdp_export_loads_in_one_process_with_the_sharded_models_logits(runs):
    sharded = torch.load(runs["logits"])
    model = AutoModelForSeq2SeqLM.from_pretrained(runs["run"] / "hf_model", trust_remote_code=True).eval()
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()  # still tied
    with torch.no_grad():
        logits = model(input_ids=sharded["input_ids"], decoder_input_ids=sharded["input_ids"][:, :8]).logits
    torch.testing.assert_close(logits, sharded["logits"], atol=1e-5, rtol=1e-5)


def test_a_sharded_checkpoint_is_checked_evaluated_in_one_process_and_a_partial_one_named(runs, tmp_path):
    run = runs["run"]
    # the killed attempt's best is left beside the resumed one's, which the ModelCheckpoint state of the step-4
    # last.ckpt (saved before that epoch's validation) did not know of: either is a sharded checkpoint to evaluate
    best = sorted((run / "checkpoints").glob("epoch*.ckpt"))[-1]
    checkpoint = load_checkpoint(best)  # the run state and the weights' shapes, for the resume and eval checks
    assert checkpoint["global_step"] > 0 and checkpoint["state_dict"]["model.model.shared.weight"].shape[0] == 600
    assert saved_run_config(checkpoint)["trainer"]["strategy"]["_target_"] == "lsgtrain.sharding.FullyShardedStrategy"
    cache = run.parents[3] / "cache"
    # 4 documents one at a time: the same mean loss whether 1 process or 2 score them
    data = ["data.max_samples=4", "data.eval_batch_size=1"]
    sharded = evaluate_checkpoint(tmp_path, "sharded", best, cache, *data, "trainer.devices=2")  # the run's fsdp_cpu
    one = evaluate_checkpoint(tmp_path, "one", best, cache, "trainer=cpu", *data)  # the weights gathered in one
    assert one["val/loss"] == pytest.approx(sharded["val/loss"], abs=1e-5)
    assert one["test/loss"] == pytest.approx(sharded["test/loss"], abs=1e-5)
    evil = tmp_path / "evil.ckpt"
    shutil.copytree(best, evil)
    (evil / ".metadata").write_bytes(pickle.dumps(RunsCode()))  # torch itself would unpickle it as it is
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors .*posix.system is not part of"):
        load_checkpoint(evil)
    last = run / "checkpoints" / "last.ckpt"
    (last / "meta.pt").unlink()  # a folder cut short (written elsewhere than through the strategy's rename)
    with pytest.raises(CheckpointError, match=rf"{last} is not a readable checkpoint .*Beside it: {best.name}"):
        load_checkpoint(last)
