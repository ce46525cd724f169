"""Runs that go wrong say so, at once: divergence, unsafe files, bad settings, resume surprises (issue 13)."""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from lsgtrain.callbacks import TrainingDiverged
from lsgtrain.checkpointing import CheckpointError, saved_run_config
from lsgtrain.data.tokenizer import train_pegasus_tokenizer
from lsgtrain.evaluate import evaluate
from lsgtrain.train import train

from .conftest import assert_refused_before_data_work
from .test_train import SHORT


def test_divergence_stops_the_run_at_the_step_without_success_marker_or_export(make_cfg, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"training diverged at optimizer step \d+ \(epoch \d\)") as error:
        train(make_cfg(*SHORT, "module.optimizer.lr=1000"))
    assert "module.optimizer.lr" in str(error.value)
    run = tmp_path / "run"
    assert not (run / "run_summary.json").exists()
    assert not (run / "hf_model").exists()
    assert not list(run.glob("checkpoints/epoch*.ckpt"))  # nothing was ranked as best


class PoisonBeforeValidation(Callback):
    """Makes one weight infinite before validation: the model a diverging run would validate."""

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            pl_module.model.get_input_embeddings().weight.fill_(float("inf"))


def test_non_finite_validation_loss_stops_the_run_before_the_model_is_kept_as_best(make_cfg, tmp_path):
    poison = "+callbacks.poison._target_=tests.training.test_no_silent_failures.PoisonBeforeValidation"
    with pytest.raises(TrainingDiverged, match=r"validation loss is nan after 3 optimizer steps \(epoch 0\)"):
        train(make_cfg(*SHORT, poison))
    assert not list((tmp_path / "run").glob("checkpoints/epoch*.ckpt"))
    assert not (tmp_path / "run" / "run_summary.json").exists()


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


def test_summarize_refuses_a_model_with_non_finite_weights(tiny_checkpoint, tmp_path, capsys):
    from lsgtrain.cli import main as cli_main
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    model = LSGPegasusForConditionalGeneration.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        model.model.shared.weight[3] = float("nan")
    shutil.copytree(tiny_checkpoint, tmp_path / "nan")
    model.save_pretrained(tmp_path / "nan")
    document = tmp_path / "doc.txt"
    document.write_text("Long documents need sparse attention. " * 20)
    assert cli_main(["summarize", str(tmp_path / "nan"), str(document), "--max-new-tokens", "3"]) == 2
    assert "has non-finite weights" in capsys.readouterr().err


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
    assert "prediction" in json.loads(result.stdout.splitlines()[-1])
    assert not marker.exists()
    result = _cli("summarize", *options, "--trust-remote-code", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "ran"  # the opt-in does run the folder's code


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.max_source_length=500"], r"data.max_source_length=500 is not a multiple of model.lsg.block_size=16: "
         r".*use data.max_source_length=496 or data.max_source_length=512"),
        (["data.max_source_length=abc"], r"data.max_source_length='abc' must be an integer >= 1, e.g."),
        (["module.optimizer.lr=fast"], r"module.optimizer.lr='fast' must be a number > 0, e.g. module.optimizer.lr="),
        (["trainer.max_epochs=-1"], r"trainer.max_epochs=-1 must be an integer >= 1 \(the learning-rate schedule"),
        (["+model.lsg.blok_size=64"], r"model.lsg.blok_size is not an LSG setting; did you mean model.lsg.block_size"),
        (["model.lsg.block_size=32", "model.lsg.sparsity_factor=3"], r"valid sparsity_factor values for this "
         r"block_size: \[1, 2, 4, 8, 16\]"),
        (["ckpt_path=/nonexistent.ckpt"], r"ckpt_path=/nonexistent.ckpt: no checkpoint file there"),
        # contradictory lengths (issue 26.7): both keys named
        (["data.max_target_length=8", "+module.generation.min_new_tokens=32"], r"module.generation.min_new_tokens="
         r"32 is above data.max_target_length=8: the model learns to end its summaries within 8 tokens"),
        (["+module.generation.min_new_tokens=abc"], r"module.generation.min_new_tokens='abc' must be an integer >= 0"),
        (["+module.generation.min_new_tokens=50"], r"module.generation.min_new_tokens=50 is above "
         r"module.generation.max_new_tokens=8: no summary can be both"),
        (["+module.generation.min_new_tokens=6", "+callbacks.rouge.val_generation.max_new_tokens=4"],
         r"module.generation.min_new_tokens=6 is above callbacks.rouge.val_generation.max_new_tokens=4"),
        (["+callbacks.rouge.val_generation.max_new_tokens=300"], r"callbacks.rouge.val_generation.max_new_tokens=300 "
         r"is beyond the decoder's position table \(256 positions: model.max_source_length=256\)"),
        # label smoothing 1 trains towards the uniform distribution (issue 26.8)
        (["module.label_smoothing=1.0"], r"module.label_smoothing=1.0 must be a number >= 0 and < 1"),
        # misspelt keys, with the closest name (issues 26.9, 26.13)
        (["++model.init.d_modle=64"], r"model.init.d_modle is not a setting of the model's config "
         r"\(LSGPegasusConfig\); did you mean model.init.d_model\?"),
        (["+module.generation.num_beam=4"], r"module.generation.num_beam is not a generation setting "
         r"\(transformers' GenerationConfig\); did you mean module.generation.num_beams\?"),
    ],
)  # fmt: skip
def test_bad_settings_fail_before_any_data_work_naming_key_value_and_fix(make_cfg, tmp_path, overrides, message):
    assert_refused_before_data_work(make_cfg(*overrides, "data.max_samples=4"), tmp_path, ValueError, message)


def test_max_new_tokens_beyond_the_decoders_position_table_is_refused_before_data_work(
    make_cfg, tiny_checkpoint, tmp_path
):
    """Before: an IndexError at the first validation, after a whole epoch (issue 26.7). The table is a checkpoint's
    own when it is longer than the run's lengths."""
    cfg = make_cfg("data.max_samples=4")
    cfg.module.generation.max_new_tokens = 257
    message = r"module.generation.max_new_tokens=257 is beyond the decoder's position table \(256 positions: model."
    assert_refused_before_data_work(cfg, tmp_path, ValueError, message)
    cfg = make_cfg("data.max_samples=4", f"model.pretrained={tiny_checkpoint}")
    cfg.module.generation.max_new_tokens = 513
    message = rf"\(512 positions: the max_position_embeddings of model.pretrained={tiny_checkpoint}\); set "
    assert_refused_before_data_work(cfg, tmp_path, ValueError, message)


@pytest.mark.parametrize(("block_size", "factor"), [(30, 4), (32, 3), (12, 4), (16, 6)])
def test_suggested_sparsity_factors_all_validate(block_size, factor):
    from huggingface_hub.errors import StrictDataclassError

    from lsgtrain.modeling import LSGPegasusConfig

    with pytest.raises(StrictDataclassError, match="valid sparsity_factor values") as error:
        LSGPegasusConfig(block_size=block_size, sparse_block_size=block_size, sparsity_factor=factor)
    suggested = json.loads(str(error.value.__cause__).rsplit(": ", 1)[1])
    assert suggested
    for value in suggested:
        LSGPegasusConfig(block_size=block_size, sparse_block_size=block_size, sparsity_factor=value)


def _finished_run(make_cfg, tmp_path, *overrides: str) -> Path:
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null", *overrides))
    return tmp_path / "run"


def test_unusable_checkpoints_are_reported_before_tokenising(make_cfg, tmp_path):
    last = _finished_run(make_cfg, tmp_path) / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    cfg = make_cfg(*SHORT, f"ckpt_path={truncated}")
    cfg.paths.output_dir, cfg.paths.cache_dir = str(tmp_path / "a"), str(tmp_path / "cache-a")
    with pytest.raises(CheckpointError, match=r"truncated.ckpt is not a readable checkpoint \(truncated"):
        train(cfg)
    assert not (tmp_path / "cache-a").exists()
    # a checkpoint without its run's saved tokenizer beside it, and an explicit tokenizer of another size
    old = tmp_path / "old-run" / "checkpoints" / "last.ckpt"
    old.parent.mkdir(parents=True)
    shutil.copy(last, old)
    other = tmp_path / "tokenizer-400"
    train_pegasus_tokenizer([f"term{i} of paper {i * 7} ." for i in range(2000)], vocab_size=400).save_pretrained(other)
    cfg = make_cfg(*SHORT, f"ckpt_path={old}", f"data.tokenizer.pretrained={other}")
    cfg.paths.output_dir, cfg.paths.cache_dir = str(tmp_path / "b"), str(tmp_path / "cache-b")
    with pytest.raises(
        CheckpointError, match=r"does not fit the model .*shared.weight is \(\d+, 32\) there, \(\d+, 32"
    ):
        train(cfg)
    assert not (tmp_path / "cache-b" / "tokenized").exists()


def test_resume_with_changed_training_settings_is_refused_listing_them(make_cfg, tmp_path):
    last = _finished_run(make_cfg, tmp_path) / "checkpoints" / "last.ckpt"
    cfg = make_cfg(*SHORT, "test=false", f"ckpt_path={last}", "module.optimizer.lr=0.5", "data.batch_size=1")
    cfg.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(CheckpointError, match=r"data.batch_size: 2 in the checkpoint, 1 now; module.optimizer.lr: "
                       r"0.001 in the checkpoint, 0.5 now\. Rerun with the checkpoint's values"):  # fmt: skip
        train(cfg)


def test_a_finished_run_is_not_re_entered(make_cfg, tmp_path):
    run = _finished_run(make_cfg, tmp_path, "logger=csv")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match=r"has finished \(run_summary.json is there\).*another run_name"):
        train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null", "logger=csv"))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resumed_run_keeps_its_metrics_history(make_cfg, tmp_path):
    common = [*SHORT, "test=false", "callbacks.hf_export=null", "logger=csv", "trainer.log_every_n_steps=1"]
    run = _finished_run(make_cfg, tmp_path, *common[2:])
    (run / "run_summary.json").unlink()  # as if it had been killed after its last checkpoint
    first = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    train(make_cfg(*common, "trainer.max_epochs=2"))
    rows = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    steps = [int(row["step"]) for row in csv.DictReader(rows) if row.get("train/loss")]
    assert rows[: len(first)] == first or rows[1 : len(first)] == first[1:]  # kept (the header may gain columns)
    assert steps == sorted(steps) and min(steps) < 3 <= max(steps)  # both runs' training steps


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_goes_on(make_cfg, tmp_path):
    from lsgtrain.run.folder import RunFolder

    with RunFolder(tmp_path / "run"):
        with pytest.raises(RuntimeError, match=rf"run folder {tmp_path / 'run'} is in use by a run that is still "
                           rf"going \(pid {os.getpid()} on .*another run_name"):  # fmt: skip
            train(make_cfg(*SHORT))
    assert not (tmp_path / "run" / "checkpoints").exists()
    _finished_run(make_cfg, tmp_path)  # the lock is gone with its holder


def test_a_failing_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from lsgtrain.checkpointing import AtomicCheckpointIO

    def disk_full(self, checkpoint, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def _data_files(files: dict) -> str:
    return "data.data_files={" + ",".join(f"{split}:{path}" for split, path in files.items()) + "}"


def test_empty_data_file_and_blank_rows(make_cfg, standin_files, tmp_path, caplog):
    files = standin_files("summarization", "document", "summary")
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    cfg = make_cfg("data.source=files", _data_files({**files, "val": empty}))
    with pytest.raises(ValueError, match=rf"data.data_files.val: {empty} is empty"):
        train(cfg)
    rows = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    rows[1]["document"], rows[2]["summary"], rows[3]["summary"] = None, "", "   "
    rows[4]["document"] = "three word document"
    holes = tmp_path / "holes.jsonl"
    holes.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = make_cfg("data.source=files", _data_files({**files, "train": holes}))
    datamodule = instantiate(cfg.data, _convert_="all")
    with caplog.at_level("INFO"):
        assert len(datamodule.raw["train"]) == len(rows) - 3
    assert "train: dropped 3 of 6 rows with an empty or null document or summary" in caplog.text
    assert "train: 3 rows, document words min 3" in caplog.text
    assert "train: 1 of 3 documents have fewer than 20 words (shortest: 3)" in caplog.text
    assert None not in datamodule.raw["train"]["document"]


def test_a_checkpoint_of_an_older_lsgtrain_resumes_with_the_new_keys_named(make_cfg, tmp_path, caplog):
    """A run started before a setting existed has no value for it in its checkpoint: that is no change (the new
    key's default keeps the old behaviour), so the resume goes on and names it, instead of refusing to resume."""
    run = _finished_run(make_cfg, tmp_path)
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
