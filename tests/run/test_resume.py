"""Resuming: the right step, schedule and batches, the same dropout masks, after a kill -9; changed settings or
rewritten data refused unless allowed; checkpoints of older lsgtrain versions."""

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from lsgtrain.checkpointing import CheckpointError, complete_last, saved_run_config
from lsgtrain.train import train

from ..helpers import (
    QUICK,
    SHORT,
    data_files_override,
    finished_run,
    recorded_train_command,
    tokenizer_vocab,
)
from ..slurm.step_recorder import assert_same_steps, read_steps

ROOT = Path(__file__).resolve().parents[2]


def _rewrite(path: Path) -> None:
    """Other rows in the same file (its rows reversed), written after the run saw it."""
    path.write_text("\n".join(reversed(path.read_text().splitlines())) + "\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))


def test_resume_continues_at_the_right_step(make_cfg, tmp_path):
    _, objects = train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false"))
    first = objects["trainer"]
    assert first.global_step == 3
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["global_step"] == 3 and saved["lr_schedulers"][0]["last_epoch"] == 3
    resumed_cfg = make_cfg(*SHORT, "trainer.max_epochs=2", "test=false", f"ckpt_path={checkpoint}")
    resumed_cfg.paths.output_dir = str(tmp_path / "resumed")
    _, objects = train(resumed_cfg)
    trainer = objects["trainer"]
    assert trainer.global_step == 6  # 3 restored + 3 new, not 3 + 6
    assert trainer.current_epoch == 2
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 6  # the schedule continued rather than restarting
    assert trainer.optimizers[0].state  # AdamW moments restored and updated


def test_mid_epoch_resume_trains_exactly_like_an_uninterrupted_run(make_cfg, tmp_path):
    """A checkpoint taken in the middle of epoch 1 resumes on the right batches with the same dropout masks."""
    snapshot = [
        "+callbacks.snapshot._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        f"+callbacks.snapshot.dirpath={tmp_path / 'run' / 'snapshots'}", "+callbacks.snapshot.every_n_train_steps=4",
        "+callbacks.snapshot.save_top_k=-1", "+callbacks.snapshot.filename='at-{step}'",
        "+callbacks.snapshot.auto_insert_metric_name=false",
    ]  # fmt: skip
    common = [*SHORT, "test=false", "callbacks.hf_export=null", "model.init.dropout=0.3"]
    _, uninterrupted = train(make_cfg(*common, *snapshot))
    checkpoint = tmp_path / "run" / "snapshots" / "at-4.ckpt"  # in the run folder, beside its tokenizer
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1  # 3 steps per epoch: step 4 is mid-epoch
    resumed_cfg = make_cfg(*common, f"ckpt_path={checkpoint}")
    resumed_cfg.paths.output_dir = str(tmp_path / "resumed")
    _, resumed = train(resumed_cfg)
    assert resumed["trainer"].global_step == uninterrupted["trainer"].global_step == 6
    expected = dict(uninterrupted["module"].named_parameters())
    for name, parameter in resumed["module"].named_parameters():
        torch.testing.assert_close(parameter, expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_same_command_resumes_with_the_right_step_count(tmp_path):
    command, steps_file = recorded_train_command(tmp_path, "crash", every_n_train_steps=2)
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


def test_resume_with_changed_training_settings_is_refused_listing_them(make_cfg, tmp_path):
    last = finished_run(make_cfg, tmp_path) / "checkpoints" / "last.ckpt"
    cfg = make_cfg(*SHORT, "test=false", f"ckpt_path={last}", "module.optimizer.lr=0.5", "data.batch_size=1")
    cfg.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(CheckpointError, match=r"data.batch_size: 2 in the checkpoint, 1 now; module.optimizer.lr: "
                       r"0.001 in the checkpoint, 0.5 now\. Rerun with the checkpoint's values"):  # fmt: skip
        train(cfg)


def test_resuming_on_rewritten_data_is_refused_unless_allowed_and_keeps_the_tokenizer(
    make_cfg, standin_files, tmp_path, caplog
):
    files = standin_files("summarization", "document", "summary")
    data = tmp_path / "data"
    data.mkdir()
    local = {split: data / f"{split}.jsonl" for split in files}
    for split, path in local.items():
        path.write_text(Path(files[split]).read_text())
    common = [*SHORT, "test=false", "callbacks.hf_export=null", "data.source=files", data_files_override(local)]
    train(make_cfg(*common, "trainer.max_epochs=1"))
    run = tmp_path / "run"
    (run / "run_summary.json").unlink()  # as if killed after its last checkpoint
    tokenizer_before = (run / "tokenizer" / "tokenizer.json").read_bytes()
    _rewrite(local["train"])
    changed = r"other data than this run reads: data_files.train.modified: '[^']+' in the checkpoint, '[^']+' now"
    with pytest.raises(CheckpointError, match=changed + ".*data.allow_data_change=true"):
        train(make_cfg(*common, "trainer.max_epochs=2"))
    assert (run / "checkpoints" / "last.ckpt").is_file()  # the run to resume is kept
    with caplog.at_level("WARNING"):
        _, objects = train(make_cfg(*common, "trainer.max_epochs=2", "data.allow_data_change=true"))
    assert "data.allow_data_change=true: resuming on the data as it is now" in caplog.text
    assert objects["trainer"].global_step > 3
    assert (run / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer_before
    assert objects["datamodule"].tokenizer.get_vocab() == tokenizer_vocab(run / "tokenizer")


def test_a_local_dataset_folder_is_identified_by_its_fingerprint_and_a_hub_dataset_by_name(tmp_path):
    from lsgtrain.checkpointing import changed_data
    from lsgtrain.data.sources import data_identity

    folder = tmp_path / "arxiv-summarization"
    (folder / "section").mkdir(parents=True)
    (folder / "section" / "train.jsonl").write_text('{"article": "a", "abstract": "b"}\n')
    before = data_identity("hub", dataset_name=str(folder), dataset_config="section", data_files=None)
    (folder / "section" / "train.jsonl").write_text('{"article": "c", "abstract": "d"}\n')  # a new download
    os.utime(folder / "section" / "train.jsonl", ns=(time.time_ns(), time.time_ns() + 10**9))
    after = data_identity("hub", dataset_name=str(folder), dataset_config="section", data_files=None)
    assert after["folder"] == str(folder) and after["fingerprint"].startswith("arxiv-summarization-")
    assert changed_data(before, after) == [
        f"fingerprint: {before['fingerprint']!r} in the checkpoint, {after['fingerprint']!r} now"
    ]
    hub = data_identity("hub", dataset_name="ccdv/arxiv-summarization", dataset_config="section", data_files=None)
    assert hub == {"dataset_name": "ccdv/arxiv-summarization", "config": "section"}  # + revision once loaded


def test_a_checkpoint_of_an_older_lsgtrain_resumes_with_the_new_keys_named(make_cfg, tmp_path, caplog):
    """A run started before a setting existed has no value for it in its checkpoint: that is no change (the new
    key's default keeps the old behaviour), so the resume goes on and names it, instead of refusing to resume."""
    run = finished_run(make_cfg, tmp_path)
    (run / "run_summary.json").unlink()  # as if it had been killed after its last checkpoint
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    saved = saved_run_config(checkpoint)
    del saved["data"]["val_fraction"], saved["module"]["freeze"]  # keys an older lsgtrain did not have
    del saved["model"]["attention_dropout"]  # ... and one whose value in the recipes changes what a run does
    torch.save(checkpoint, last)
    # that run trained with the checkpoint's attention dropout (null): 0 now would change it mid-run
    with pytest.raises(CheckpointError, match=r"model.attention_dropout: None in the checkpoint, 0.0 now"):
        train(make_cfg(*SHORT, "test=false", "callbacks.hf_export=null", "trainer.max_epochs=2",
                       "model.attention_dropout=0.0"))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lsgtrain.train"):
        train(make_cfg(*SHORT, "test=false", "callbacks.hf_export=null", "trainer.max_epochs=2"))
    assert "data.val_fraction=0.1 (not in the checkpoint)" in caplog.text
    assert "module.freeze.token_embeddings=False (not in the checkpoint)" in caplog.text
    assert "attention_dropout" not in caplog.text  # null now: the behaviour of that run, nothing to name


def test_a_resume_continues_with_the_tokenizer_its_checkpoint_was_trained_with(make_cfg, standin_files, tmp_path):
    """Before, a run that failed after training its tokenizer left `<run>/tokenizer/`; the rerun on the fixed data
    trained another one but kept the folder, and its resume continued with the failed attempt's (other ids)."""
    files = standin_files("summarization", "document", "summary")
    local = {split: tmp_path / f"{split}.jsonl" for split in files}
    rows = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    local["train"].write_text("".join(json.dumps({**row, "summary": i}) + "\n" for i, row in enumerate(rows)))
    for split in ("val", "test"):
        local[split].write_text(Path(files[split]).read_text())
    common = [*QUICK, "data.source=files", data_files_override(local)]
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="str"):  # the summaries are numbers: found while tokenising
        train(make_cfg(*common))
    assert not (run / "tokenizer").exists()  # nothing the next attempt could take for its own
    # the fixed file: text summaries, other documents (the tokenizer is trained on them: another vocabulary)
    local["train"].write_text("".join(json.dumps({**row, "document": row["summary"]}) + "\n" for row in rows))
    _, objects = train(make_cfg(*common))  # the same run_name
    trained_with = objects["datamodule"].tokenizer.get_vocab()
    assert tokenizer_vocab(run / "tokenizer") == trained_with
    (run / "run_summary.json").unlink()  # as if stopped after its last checkpoint
    last = run / "checkpoints" / "last.ckpt"
    intact = last.read_bytes()
    checkpoint = torch.load(last, weights_only=True)
    recorded = checkpoint["callbacks"]["RunConfigCheckpoint"]["tokenizer"]
    checkpoint["callbacks"]["RunConfigCheckpoint"]["tokenizer"] = "0123456789abcdef"  # as if trained with another
    torch.save(checkpoint, last)
    message = (
        rf"trained with the tokenizer 0123456789abcdef, but this resume would continue with another one, {recorded}"
    )
    with pytest.raises(CheckpointError, match=message + ".*data.tokenizer.pretrained"):
        train(make_cfg(*common, "trainer.max_epochs=2"))
    last.write_bytes(intact)
    _, objects = train(make_cfg(*common, "trainer.max_epochs=2"))
    assert objects["trainer"].global_step > checkpoint["global_step"]
    assert objects["datamodule"].tokenizer.get_vocab() == trained_with


def test_a_truncated_last_checkpoint_names_the_intact_one_beside_it_and_a_truncated_tokenizer_its_file(
    make_cfg, tiny_checkpoint, tmp_path
):
    """Before: a truncated last.ckpt was refused with no way out; a truncated tokenizer.json gave the JSON parser's
    message only."""
    train(make_cfg(*QUICK))
    run = tmp_path / "run"
    (run / "run_summary.json").unlink()  # as if killed while writing last.ckpt (a copy cut short, a full disk)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    (best,) = (run / "checkpoints").glob("epoch*.ckpt")
    way_out = rf"Beside it: {best.name}; to go on from the newest, rerun with ckpt_path={best}"
    with pytest.raises(CheckpointError, match=rf"{last} is not a readable checkpoint .*{way_out}"):
        train(make_cfg(*QUICK, "trainer.max_epochs=2"))
    _, objects = train(make_cfg(*QUICK, "trainer.max_epochs=2", f"ckpt_path={best}"))  # the way out it names
    assert objects["trainer"].global_step == 4
    folder = tmp_path / "cut-tokenizer"
    shutil.copytree(tiny_checkpoint, folder)
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:2000])
    cfg = make_cfg(*QUICK, f"model.pretrained={folder}")
    cfg.paths.output_dir = str(tmp_path / "other-run")
    with pytest.raises(CheckpointError, match=rf"model.pretrained={folder}: its tokenizer.json is damaged \(truncated"):
        train(cfg)


def test_a_sharded_last_checkpoint_moved_aside_by_a_kill_mid_replace_is_resumed_from(tmp_path):
    """A kill between the two renames that replace a sharded last.ckpt (lsgtrain.sharding) leaves only
    `.last.ckpt.old`: the resume goes on from it rather than from scratch."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert complete_last(last) is None
    previous = last.with_name(".last.ckpt.old")
    previous.mkdir(parents=True)
    assert complete_last(last) is None  # a folder without Lightning's meta.pt is not a checkpoint
    (previous / "meta.pt").write_bytes(b"")
    assert complete_last(last) == previous
    last.mkdir()
    (last / "meta.pt").write_bytes(b"")
    assert complete_last(last) == last
