"""No silent failures, round two (issue 19): run names that escape, resumes on rewritten data, untrained exports,
SIGTERM / SIGINT, leaked test data, mismatched tokenizers, late type errors, unwritable folders, refused runs'
leftovers, corrupt weight files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lsgtrain.callbacks.hf_export import UntrainedModel
from lsgtrain.checkpointing import CheckpointError
from lsgtrain.data.sources import DataSourceError
from lsgtrain.preflight import ConfigError
from lsgtrain.train import train

from ..slurm.step_recorder import read_steps
from .conftest import FAST, QUICK, TINY_INIT, assert_refused_before_data_work
from .test_train import SHORT

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}


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


@pytest.mark.parametrize("name", ["a/b", "..", ".", "/tmp/x", "a\\b", ""])
def test_run_and_task_names_must_be_plain_folder_names(make_cfg, tmp_path, name):
    cfg = make_cfg(*QUICK)
    cfg.run_name = name
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, "is not a folder name")
    cfg = make_cfg(*QUICK, "task_name=../t")
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, r"task_name='../t' is not a folder name")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=abc"], r"trainer.max_epochs='abc' must be an integer or null \(lightning.pytorch."),
        (["+trainer.max_steps=abc"], r"trainer.max_steps='abc' must be an integer \(lightning.pytorch.Trainer takes "),
        (["trainer.gradient_clip_val=abc"], r"trainer.gradient_clip_val='abc' must be a number >= 0"),
        (["+trainer.min_steps=1.5"], r"trainer.min_steps=1.5 must be an integer or null"),
        (["+trainer.max_epochz=3"], r"trainer.max_epochz is not a setting of lightning.pytorch.Trainer; did you mean "
         r"trainer.max_epochs\?"),
        (["module.optimizer.betas=[0.9,0.99]", "+module.optimizer.eps=tiny"], r"module.optimizer.eps='tiny' must be a "
         r"number \(torch.optim.AdamW takes eps: float\)"),
        (["module.scheduler.warmup_ratio=x"], r"module.scheduler.warmup_ratio='x' must be a number \(lsgtrain.tasks."),
        (["module.scheduler.warmup_ratio=1.5"], r"module.scheduler.warmup_ratio=1.5 must be a number >= 0 and < 1"),
        (["module.generation.no_repeat_ngram_size=x"], r"no_repeat_ngram_size='x' must be an integer >= 0"),
        (["trainer.max_epochs=0", "+trainer.max_steps=4"], r"trainer.max_epochs=0 leaves the run no optimizer step"),
        (["+trainer.max_steps=0"], r"trainer.max_steps=0 leaves the run no optimizer step"),
        (["trainer.limit_train_batches=0"], r"trainer.limit_train_batches=0 leaves the run no optimizer step"),
    ],
)  # fmt: skip
def test_trainer_and_module_numbers_are_checked_before_any_data_work(make_cfg, tmp_path, overrides, message):
    assert_refused_before_data_work(make_cfg(*QUICK, *overrides), tmp_path, ConfigError, message)


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


def test_unwritable_cache_or_outputs_are_refused_before_any_work(make_cfg, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = make_cfg(*QUICK)
    cfg.paths.cache_dir = str(blocker / "cache")
    with pytest.raises(ConfigError, match=rf"paths.cache_dir={blocker}/cache: {blocker} is a file, not a folder"):
        train(cfg)
    cfg = make_cfg(*QUICK)
    cfg.paths.output_dir = str(blocker / "run")
    with pytest.raises(RuntimeError, match=rf"paths.output_dir={blocker}/run: cannot write the run folder there "
                       r"\(Not a directory\); point LSGTRAIN_ROOT"):  # fmt: skip
        train(cfg)
    if os.geteuid() != 0:  # permissions bind only other users than root
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        cfg = make_cfg(*QUICK)
        cfg.paths.cache_dir = str(read_only)
        with pytest.raises(ConfigError, match=r"cannot write in"):
            train(cfg)


def test_an_unwritable_export_folder_is_refused_before_any_work(make_cfg, tmp_path):
    """Before: the export failed after the training (issue 26.13)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = make_cfg("data.max_samples=4", f"callbacks.hf_export.dirpath={blocker}/export")
    message = rf"callbacks.hf_export.dirpath={blocker}/export: {blocker} is a file, not a folder; the export is"
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, message)


def test_a_summary_column_that_is_not_text_is_named_before_a_tokenizer_is_trained(make_cfg, standin_files, tmp_path):
    """Before: transformers' message while tokenising, after the tokenizer was trained, naming no file, column or
    row (issue 26.13)."""
    files = standin_files("classification", "document", "summary")  # `summary` holds class ids
    cfg = make_cfg(*QUICK, "data.source=files", _files(files))
    message = rf"data.summary_column='summary' of the train split \({files['train']}\) holds int values, not text: "
    with pytest.raises(DataSourceError, match=message + r"the first is row 0, 0. Give that column as strings"):
        train(cfg)
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_a_refused_run_leaves_no_run_folder_but_a_resumable_one_is_kept(tmp_path):
    result = _train_py(tmp_path, "run_name=refused", "trainer.max_epochs=abc")
    assert result.returncode == 1 and "trainer.max_epochs='abc' must be an integer" in result.stderr
    assert not (tmp_path / "outputs" / "train" / "runs" / "refused").exists()


def _files(files: dict) -> str:
    return "data.data_files={" + ",".join(f"{split}:{path}" for split, path in files.items()) + "}"


def test_the_same_file_as_two_splits_is_refused_unless_allowed(make_cfg, standin_files, tmp_path, caplog):
    files = standin_files("summarization", "document", "summary")
    same = {**files, "test": files["train"]}
    cfg = make_cfg(*QUICK, "data.source=files", _files(same))
    with pytest.raises(DataSourceError, match=r"data.data_files.train=.* and data.data_files.test=.* hold the same "
                       r"rows.*data.allow_split_overlap=true"):  # fmt: skip
        train(cfg)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(Path(files["train"]).read_bytes())
    cfg = make_cfg(*QUICK, "data.source=files", _files({**files, "val": str(copy)}))
    with pytest.raises(DataSourceError, match=r"data.data_files.val=.*copy.jsonl hold the same rows"):
        train(cfg)
    from hydra.utils import instantiate

    cfg = make_cfg("data.source=files", _files(same), "data.allow_split_overlap=true")
    with caplog.at_level("WARNING"):
        assert len(instantiate(cfg.data, _convert_="all").raw["test"]) == 6
    assert "data.allow_split_overlap=true: going on" in caplog.text
    assert "test: 6 of 6 rows are also in the training split" in caplog.text


def test_test_rows_that_are_also_training_rows_are_counted_and_named(make_cfg, standin_files, tmp_path, caplog):
    from hydra.utils import instantiate

    files = standin_files("summarization", "document", "summary")
    train_rows = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    test_rows = [json.loads(line) for line in Path(files["test"]).read_text().splitlines()]
    test_rows[1]["document"] = "  " + train_rows[3]["document"].replace(" ", "\n  ", 3) + "\n"  # whitespace differs
    test_rows[4]["document"] = train_rows[0]["document"]
    test_rows[2]["document"] = train_rows[2]["document"] + " More."  # not the same text
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text("".join(json.dumps(row) + "\n" for row in test_rows))
    cfg = make_cfg("data.source=files", _files({**files, "test": str(leaked)}))
    with caplog.at_level("WARNING"):
        assert len(instantiate(cfg.data, _convert_="all").raw["test"]) == 5
    assert (f"test: 2 of 5 rows are also in the training split (same document after collapsing whitespace; {leaked} "
            "rows 2, 5)") in caplog.text  # fmt: skip
    assert "val:" not in caplog.text


def test_test_rows_that_are_also_validation_rows_are_counted_and_named(make_cfg, standin_files, tmp_path, caplog):
    """The best checkpoint is chosen on the validation documents: a test document among them is not held-out."""
    from hydra.utils import instantiate

    files = standin_files("summarization", "document", "summary")
    val_rows = [json.loads(line) for line in Path(files["val"]).read_text().splitlines()]
    test_rows = [json.loads(line) for line in Path(files["test"]).read_text().splitlines()]
    test_rows[0] = {**test_rows[0], "id": "another-id", "document": val_rows[2]["document"]}
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text("".join(json.dumps(row) + "\n" for row in test_rows))
    cfg = make_cfg("data.source=files", _files({**files, "test": str(leaked)}))
    with caplog.at_level("WARNING"):
        assert len(instantiate(cfg.data, _convert_="all").raw["test"]) == len(test_rows)  # warned, not dropped
    assert (f"test: 1 of {len(test_rows)} rows are also in the validation split (same document after collapsing "
            f"whitespace; {leaked} rows 1): their scores are not held-out (used to choose the best checkpoint)"
            ) in caplog.text  # fmt: skip
    assert "training split" not in caplog.text


def _rewrite(path: Path) -> None:
    """Other rows in the same file (its rows reversed), written after the run saw it."""
    path.write_text("\n".join(reversed(path.read_text().splitlines())) + "\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))


def test_resuming_on_rewritten_data_is_refused_unless_allowed_and_keeps_the_tokenizer(
    make_cfg, standin_files, tmp_path, caplog
):
    files = standin_files("summarization", "document", "summary")
    data = tmp_path / "data"
    data.mkdir()
    local = {split: data / f"{split}.jsonl" for split in files}
    for split, path in local.items():
        path.write_text(Path(files[split]).read_text())
    common = [*SHORT, "test=false", "callbacks.hf_export=null", "data.source=files", _files(local)]
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
    assert objects["datamodule"].tokenizer.get_vocab() == _vocab(run / "tokenizer")


def test_a_resume_continues_with_the_tokenizer_its_checkpoint_was_trained_with(make_cfg, standin_files, tmp_path):
    """Before, a run that failed after training its tokenizer left `<run>/tokenizer/`; the rerun on the fixed data
    trained another one but kept the folder, and its resume continued with the failed attempt's (other ids)."""
    files = standin_files("summarization", "document", "summary")
    local = {split: tmp_path / f"{split}.jsonl" for split in files}
    rows = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    local["train"].write_text("".join(json.dumps({**row, "summary": i}) + "\n" for i, row in enumerate(rows)))
    for split in ("val", "test"):
        local[split].write_text(Path(files[split]).read_text())
    common = [*QUICK, "data.source=files", _files(local)]
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="str"):  # the summaries are numbers: found while tokenising
        train(make_cfg(*common))
    assert not (run / "tokenizer").exists()  # nothing the next attempt could take for its own
    # the fixed file: text summaries, other documents (the tokenizer is trained on them: another vocabulary)
    local["train"].write_text("".join(json.dumps({**row, "document": row["summary"]}) + "\n" for row in rows))
    _, objects = train(make_cfg(*common))  # the same run_name
    trained_with = objects["datamodule"].tokenizer.get_vocab()
    assert _vocab(run / "tokenizer") == trained_with
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


def _vocab(folder: Path) -> dict:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


def test_a_tokenizer_other_than_the_models_own_is_refused_naming_both(make_cfg, tiny_checkpoint, tmp_path):
    from lsgtrain.data.tokenizer import train_pegasus_tokenizer

    other = tmp_path / "other-tokenizer"
    texts = [f"term{i} of paper {i * 7} ." for i in range(2000)]
    train_pegasus_tokenizer(texts, vocab_size=60).save_pretrained(other)  # fewer ids than the model's embedding
    cfg = make_cfg(*QUICK, f"model.pretrained={tiny_checkpoint}", f"data.tokenizer.pretrained={other}")
    message = rf"the tokenizer {other} is not the model's own \({tiny_checkpoint}\): .*model.allow_tokenizer_change"
    assert_refused_before_data_work(cfg, tmp_path, CheckpointError, message)
    cfg = make_cfg(*QUICK, f"model.pretrained={tiny_checkpoint}", f"data.tokenizer.pretrained={other}",
                   "model.allow_tokenizer_change=true")  # fmt: skip
    _, objects = train(cfg)
    assert objects["datamodule"].tokenizer.get_vocab() == _vocab(other)


def test_corrupt_weight_files_are_named_with_the_fix(make_cfg, tiny_checkpoint, tmp_path, capsys):
    import shutil

    from lsgtrain.cli import main as cli_main

    folder = tmp_path / "truncated"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cfg = make_cfg(*QUICK, f"model.pretrained={folder}")
    with pytest.raises(CheckpointError, match=rf"model.pretrained={folder}: {weights} is not a readable weight file "
                       r"\(truncated or corrupt.*Download or export it again"):  # fmt: skip
        train(cfg)
    document = tmp_path / "doc.txt"
    document.write_text("Long documents need sparse attention. " * 20)
    assert cli_main(["summarize", str(folder), str(document), "--max-new-tokens", "3"]) == 2
    assert f"{weights} is not a readable weight file (truncated or corrupt" in capsys.readouterr().err


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


class RunsCode:
    def __reduce__(self):
        return exec, ("print('ran')",)


def test_a_crafted_pickle_is_refused_without_suggesting_weights_only_false(make_cfg, tiny_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": RunsCode()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as error:
        train(make_cfg(*QUICK, f"model.pretrained={folder}"))
    text = "".join(__import__("traceback").format_exception(error.value))
    assert f"{folder / 'pytorch_model.bin'} holds objects other than tensors" in text
    assert "weights_only=False" not in text


def test_stale_temporary_tokenisation_files_are_removed_by_the_next_run(make_cfg, tmp_path):
    tokenized = tmp_path / "cache" / "tokenized"
    tokenized.mkdir(parents=True)
    stale = [tokenized / "tmpabc123", tokenized / "tmp_folder_xyz"]
    stale[0].write_bytes(b"x" * 1000)
    stale[1].mkdir()
    (stale[1] / "part.arrow").write_bytes(b"x")
    cfg = make_cfg(*QUICK)
    cfg.paths.cache_dir = str(tmp_path / "cache")
    train(cfg)
    assert not any(path.exists() for path in stale)
    assert list(tokenized.glob("*.arrow"))  # the run's own cache files are there


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
    steps_file = tmp_path / "steps.jsonl"
    command = [
        sys.executable, "train.py", *FAST, *TINY_INIT, "run_name=stopped", "data.max_samples=8",
        "trainer.max_epochs=2", "trainer.limit_train_batches=4", "callbacks.rouge.every_n_epochs=100",
        "callbacks.hf_export=null", "test=false", "callbacks.step_checkpoint.every_n_train_steps=100",
        f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        "+callbacks.step_recorder._target_=tests.slurm.step_recorder.StepRecorder",
        f"+callbacks.step_recorder.path={steps_file}", "+callbacks.step_recorder.delay_s=0.7",
    ]  # fmt: skip
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
