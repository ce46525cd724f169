"""A bad setting is refused before any data work (no cache folder, no run folder written), naming the key, the value and
the fix: every component's checks as `train()` meets them."""

import os
import shutil

import pytest
from transformers import T5Config, T5ForConditionalGeneration

from lsgtrain.data.tokenizer import train_pegasus_tokenizer
from lsgtrain.modeling.loading import CheckpointError
from lsgtrain.preflight import ConfigError
from lsgtrain.train import train

from ..helpers import ONE_EPOCH, QUICK, REPO, SHORT, assert_refused_before_data_work, finished_run


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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["module.freeze.token_embeddings=true"], r"module.freeze.token_embeddings=true on a randomly initialised "
         r"model: the frozen weights would stay random"),
        (["+module.freeze.embeddings=true"], r"module.freeze.embeddings is not a freezing option; options: "
         r"token_embeddings, all_but_global_embeddings"),
        (["module.scheduler.name=cosin"], r"module.scheduler.name='cosin' is unknown; choose one of linear, cosine, "
         r"constant"),
        (["trainer.precision=16-mixed"], r"trainer.precision=16-mixed: Pegasus overflows in float16 .* Use "
         r"trainer.precision=bf16-mixed .* add allow_fp16=true"),
        (["trainer.precision=16"], r"trainer.precision=16: Pegasus overflows in float16"),
        (["trainer.precision=16-true"], r"trainer.precision=16-true: Pegasus overflows in float16"),
    ],
)  # fmt: skip
def test_bad_training_controls_fail_before_any_data_work(make_cfg, tmp_path, overrides, message):
    assert_refused_before_data_work(make_cfg(*overrides, "data.max_samples=4"), tmp_path, ValueError, message)


def test_impossible_lsg_parameters_fail_before_any_data_work(make_cfg, cache_dir, tmp_path):
    cfg = make_cfg("model.lsg.block_size=12", "model.lsg.sparsity_factor=4", "data.max_samples=4")
    message = r"^model.lsg: block_size // sparsity_factor = 12 // 4 = 3 is odd"
    assert_refused_before_data_work(cfg, tmp_path, ValueError, message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=1.5", r"data.val_fraction=1.5 must be a number > 0 and < 1, e.g. data.val_fraction=0.1"),
        ("data.val_fraction=0", r"data.val_fraction=0 must be a number > 0 and < 1"),
        ("data.num_proc=0", r"data.num_proc=0 must be an integer >= 1, e.g. data.num_proc=4"),
        ("data.max_train_samples=0", r"data.max_train_samples=0 must be an integer >= 1"),
        ("data.max_eval_samples=-2", r"data.max_eval_samples=-2 must be an integer >= 1"),
        ("data.max_predict_samples=abc", r"data.max_predict_samples='abc' must be an integer >= 1"),
    ],
)
def test_own_data_settings_are_checked_before_any_data_work(make_cfg, tmp_path, override, message):
    assert_refused_before_data_work(make_cfg(override), tmp_path, ConfigError, message)


@pytest.mark.parametrize("name", ["a/b", "..", ".", "/tmp/x", "a\\b", ""])
def test_run_and_task_names_must_be_plain_folder_names(make_cfg, tmp_path, name):
    cfg = make_cfg(*QUICK)
    cfg.run_name = name
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, "is not a folder name")
    cfg = make_cfg(*QUICK, "task_name=../t")
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, r"task_name='../t' is not a folder name")


def test_a_t5_checkpoint_is_refused_before_any_data_work(make_cfg, tmp_path):
    """Before, a T5 folder as `model.pretrained` trained a randomly initialised "Pegasus" (exit code 0)."""
    t5 = tmp_path / "t5-small-ish"
    T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
                               ).save_pretrained(t5)  # fmt: skip
    cfg = make_cfg(f"model.pretrained={t5}", "data.max_samples=4")
    assert_refused_before_data_work(cfg, tmp_path, CheckpointError, rf"model.pretrained={t5} is a 't5' checkpoint")
    assert not (tmp_path / "run" / "tokenizer").exists()


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


def test_unusable_checkpoints_are_reported_before_tokenising(make_cfg, tmp_path):
    last = finished_run(make_cfg, tmp_path) / "checkpoints" / "last.ckpt"
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


@pytest.mark.parametrize(
    ("setting", "error"),
    [("repo_id=a/b/c", "is not a hub repository id"), ("private=maybe", "must be true or false")],
)
def test_a_bad_push_setting_is_refused_before_anything_is_read(make_cfg, tmp_path, setting, error):
    with pytest.raises(ValueError, match=rf"callbacks\.hf_export\.push_to_hub .*{error}"):
        train(make_cfg(f"callbacks.hf_export.push_to_hub.{setting}"))
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_a_run_that_cannot_push_fails_before_training(make_cfg, tmp_path):
    cfg = make_cfg(*ONE_EPOCH, f"callbacks.hf_export.push_to_hub.repo_id={REPO}")
    with pytest.raises(ConfigError, match=r"push_to_hub\.repo_id=.*HF_HUB_OFFLINE is set"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "tokenizer").exists()


def test_generation_settings_the_export_cannot_save_fail_before_training(make_cfg, tmp_path):
    """A length penalty with greedy search: generate() only warns, GenerationConfig.save_pretrained refuses it."""
    cfg = make_cfg(*ONE_EPOCH, "module.generation.length_penalty=2.0")  # make_cfg: num_beams=1
    with pytest.raises(ValueError, match=r"(?s)module\.generation .*`length_penalty`: `num_beams` is set to 1"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


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


def test_an_unwritable_export_folder_is_refused_before_any_work(make_cfg, tmp_path):
    """Before: the export failed after the training (issue 26.13)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = make_cfg("data.max_samples=4", f"callbacks.hf_export.dirpath={blocker}/export")
    message = rf"callbacks.hf_export.dirpath={blocker}/export: {blocker} is a file, not a folder; the export is"
    assert_refused_before_data_work(cfg, tmp_path, ConfigError, message)
