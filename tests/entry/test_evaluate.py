"""`lsgtrain eval` / `python -m lsgtrain.evaluate`: a checkpoint or a model folder scored with its run's settings, its
export reproducing the run's validation ROUGE, two DDP processes scoring like one."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lsgtrain import evaluate as evaluate_module
from lsgtrain.checkpointing import CheckpointError
from lsgtrain.evaluate import evaluate
from lsgtrain.train import CONFIG_DIR, build, train

from ..helpers import FAST, ONE_EPOCH, QUICK, SHORT, TINY_INIT, WORDS, data_files_override

ROOT = Path(__file__).resolve().parents[2]


DATA = ["data.max_samples=5", "data.eval_batch_size=1"]  # 5 documents: the 2-rank sampler repeats one


def evaluate_checkpoint(tmp_path: Path, name: str, checkpoint: Path, cache_dir: Path, *overrides: str) -> dict:
    """`python -m lsgtrain.evaluate` on `checkpoint` in a fresh process; returns its metrics."""
    run_dir = tmp_path / name
    command = [
        sys.executable, "-m", "lsgtrain.evaluate", *FAST, *TINY_INIT, *DATA, f"ckpt_path={checkpoint}",
        f"hydra.run.dir={run_dir}", f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache_dir}",
        "++module.generation.max_new_tokens=8", "++module.generation.num_beams=1", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def _predictions(folder: Path, name: str) -> list[str]:
    """The texts of a predictions file: the same words decoded the same way."""
    rows = (folder / "predictions" / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in rows]


def _val_rouge(metrics: dict[str, float]) -> dict[str, float]:
    scores = {key: value for key, value in metrics.items() if key.startswith("val/rouge")}
    assert len(scores) == 12, metrics  # 4 ROUGE, each with its interval's _low and _high
    return scores


@pytest.fixture
def run_folder_with_hydra_config(exported_run, tmp_path):
    """A copy of the run's folder with the `.hydra/config.yaml` Hydra writes for `python train.py` (unresolved)."""
    folder = tmp_path / "trained"
    shutil.copytree(exported_run["export"].parent, folder, ignore=shutil.ignore_patterns(".lock"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[o for o in exported_run["overrides"] if not o.startswith("paths.")]
        )
    GlobalHydra.instance().clear()
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return folder


def test_evaluate_entry_writes_metrics_without_training(make_cfg, tmp_path):
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = make_cfg(*SHORT, f"ckpt_path={checkpoint}", config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(cfg)
    assert {"val/rougeLsum", "test/rougeLsum"} <= metrics.keys()
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["metrics"]["test/rougeLsum"] == metrics["test/rougeLsum"]
    assert (tmp_path / "eval" / "predictions" / "test.jsonl").is_file()
    assert not (tmp_path / "eval" / "hf_model").exists()


def test_evaluate_scores_a_model_folder_without_a_checkpoint(make_cfg, tiny_checkpoint, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    cfg = make_cfg(f"model.pretrained={tiny_checkpoint}", "data.max_samples=4", "model.lsg.num_global_tokens=2",
                   config_name="eval")  # fmt: skip
    cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(cfg, overrides=["model.lsg.num_global_tokens=2"])
    assert {"val/rougeLsum", "test/rougeLsum"} <= metrics.keys()
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["model"] == str(tiny_checkpoint) and written["metrics"]["test/rouge1"] == metrics["test/rouge1"]
    assert (tmp_path / "eval" / "predictions" / "test.jsonl").is_file()
    # the LSG settings not given are the folder's own; one given that differs is named
    assert "num_global_tokens=2 (trained: 1)" in caplog.text and "pass model.lsg.num_global_tokens=1" in caplog.text
    with pytest.raises(ValueError, match=r"nothing to evaluate: give ckpt_path=PATH .* or model.pretrained=DIR"):
        evaluate(make_cfg(config_name="eval"))


def test_evaluating_a_runs_export_reproduces_its_validation_rouge(exported_run, make_cfg, tmp_path, caplog):
    """Before, the export decoded with the config's defaults (2 beams, 160 new tokens) and its position table was
    extended to data.max_source_length=2048: another setup, another score."""
    cfg = make_cfg(f"model.pretrained={exported_run['export']}", *ONE_EPOCH[:1], config_name="eval", fast=False)
    with caplog.at_level(logging.INFO, logger="lsgtrain.evaluate"):
        metrics = evaluate(cfg)
    validation = exported_run["objects"]["trainer"].callbacks
    export = next(c for c in validation if type(c).__name__ == "HFExport")
    assert _val_rouge(metrics) == pytest.approx(_val_rouge(export.validation_metrics), abs=1e-6)
    assert _predictions(tmp_path / "run", "val") == _predictions(exported_run["export"].parent, "val")
    assert "data.max_source_length=256" in caplog.text and "model.lsg.block_size=16" in caplog.text
    assert "decodes with its generation_config.json" in caplog.text and "'num_beams': 3" in caplog.text
    exported = json.loads((exported_run["export"] / "tokenizer_config.json").read_text())
    assert exported["model_max_length"] == 256  # the trained length, which eval read back
    # a key set on the command line wins over the export's own
    cfg = make_cfg(f"model.pretrained={exported_run['export']}", *ONE_EPOCH[:1], "module.generation.max_new_tokens=2",
                   config_name="eval", fast=False)  # fmt: skip
    evaluate(cfg, overrides=["module.generation.max_new_tokens=2"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions" / "test.jsonl").read_text().splitlines()]
    assert max(len(row["prediction"].split()) for row in rows) <= 2


def test_evaluating_a_checkpoint_takes_its_runs_settings(
    exported_run, run_folder_with_hydra_config, make_cfg, tmp_path
):
    """Before, `lsgtrain eval ckpt_path=...` built the config's default model (another size, length and decoding)
    and failed to load the weights, or scored another setup."""
    best = next((run_folder_with_hydra_config / "checkpoints").glob("epoch*.ckpt"))
    metrics = evaluate(make_cfg(f"ckpt_path={best}", config_name="eval", fast=False))
    export = next(c for c in exported_run["objects"]["trainer"].callbacks if type(c).__name__ == "HFExport")
    assert _val_rouge(metrics) == pytest.approx(_val_rouge(export.validation_metrics), abs=1e-6)
    assert _predictions(tmp_path / "run", "val") == _predictions(exported_run["export"].parent, "val")
    written = (run_folder_with_hydra_config / "predictions" / "test.jsonl").read_bytes()
    assert (
        written == (exported_run["export"].parent / "predictions" / "test.jsonl").read_bytes()
    )  # the run's stay as they were


def test_a_checkpoint_trained_at_another_length_is_named_as_such(exported_run, run_folder_with_hydra_config, make_cfg):
    """Before: "it comes from a run with another tokenizer (vocabulary), model size or task"."""
    best = next((run_folder_with_hydra_config / "checkpoints").glob("epoch*.ckpt"))
    cfg = make_cfg(f"ckpt_path={best}", "data.max_source_length=512", config_name="eval", fast=False)
    with pytest.raises(CheckpointError, match=r"was trained at data.max_source_length=256 .* this config builds 512"):
        evaluate(cfg, overrides=["data.max_source_length=512"])


@pytest.mark.slow
def test_two_process_ddp_rouge_equals_one_process(make_cfg, tmp_path, cache_dir):
    train(make_cfg(*DATA, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    single = evaluate_checkpoint(tmp_path, "single", checkpoint, cache_dir, "trainer=cpu")
    double = evaluate_checkpoint(tmp_path, "ddp", checkpoint, cache_dir, "trainer=ddp_cpu", "trainer.devices=2")
    for stage in ("val", "test"):
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert double[f"{stage}/{name}"] == pytest.approx(single[f"{stage}/{name}"], abs=1e-9), (stage, name)
    # the 95% intervals, the lead's, the statistics and the length buckets too: all from the gathered documents
    assert {"test/rouge1_low", "test/lead_rouge2_high", "test/stats/gen/density"} <= single.keys()
    assert any(key.startswith("test/len_") for key in single)
    scored = {key: value for key, value in single.items() if not key.endswith("/loss")}  # the loss: a synced mean
    assert {key: double[key] for key in scored} == pytest.approx(scored, abs=1e-9)
    rows = {
        name: [json.loads(line) for line in (tmp_path / name / "predictions" / "val.jsonl").open()]
        for name in ("single", "ddp")
    }
    assert [row["id"] for row in rows["ddp"]] == list(range(5))  # each document exactly once
    assert rows["ddp"] == rows["single"]


def test_evaluating_a_checkpoint_keeps_its_runs_trainer_unless_set(make_cfg, tmp_path, monkeypatch):
    """Before, eval.yaml's `trainer: cpu` scored every checkpoint on CPU in fp32, whatever the run trained with."""
    train(make_cfg(*QUICK, "trainer.precision=bf16-mixed"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    built = []

    def recording_build(cfg):
        built.append(build(cfg))
        return built[-1]

    monkeypatch.setattr(evaluate_module, "build", recording_build)
    cfg = make_cfg(*QUICK, f"ckpt_path={last}", config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    evaluate(cfg)
    assert built[-1]["trainer"].precision == "bf16-mixed"
    cfg = make_cfg(*QUICK, f"ckpt_path={last}", "trainer.precision=32-true", config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval-32")
    evaluate(cfg, overrides=["trainer.precision=32-true"])
    assert built[-1]["trainer"].precision == "32-true"


def test_a_refused_evaluation_leaves_no_folder(make_cfg):
    """Before, a refused `lsgtrain eval` left its `outputs/eval/runs/<time>/` (Hydra's config and log) behind."""
    cfg = make_cfg(config_name="eval")
    folder = Path(cfg.paths.output_dir)
    (folder / ".hydra").mkdir(parents=True)  # what Hydra writes before the evaluation starts
    (folder / "train.log").write_text("")
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(cfg)
    assert not folder.exists()


def test_evaluating_a_checkpoint_with_other_lsg_settings_names_them(make_cfg, tmp_path, caplog):
    """Before, `lsgtrain eval ckpt_path=...` scored with other LSG settings without a word (model.pretrained
    warned)."""
    train(make_cfg(*QUICK, "model.lsg.num_global_tokens=4"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    other = ["model.lsg.block_size=32", "model.lsg.num_global_tokens=1"]
    cfg = make_cfg(*QUICK, f"ckpt_path={last}", *other, config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    with caplog.at_level("WARNING"):
        evaluate(cfg, overrides=other)
    assert (
        f"ckpt_path={last} is evaluated with model.lsg settings other than those it was trained with: block_size=32 "
        "(trained: 16), num_global_tokens=1 (trained: 4); pass model.lsg.block_size=16 model.lsg.num_global_tokens=4"
    ) in caplog.text


def test_an_export_evaluated_beyond_its_trained_length_is_extended_and_says_so(
    exported_run, make_cfg, tmp_path, caplog
):
    """`lsgtrain eval model.pretrained=<export> data.max_source_length=1024` of a run trained at 256 tokens (tables of
    256): the tables are extended (`lsgtrain convert`'s extension), one warning names the trained length,
    metrics.json and the predictions rows record both lengths, and documents shorter than 256 tokens are summarized
    as at 256. Before, neither said at what length the model was read."""
    rows = [{"document": " ".join(WORDS[i:] + WORDS[:i]) * 2, "summary": " ".join(WORDS[: 6 + i])} for i in range(4)]
    files = {}
    for split in ("train", "val", "test"):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    keys = [f"model.pretrained={exported_run['export']}", "data.source=files", data_files_override(files),
            "data.allow_split_overlap=true", "data.max_samples=4"]  # fmt: skip
    written = {}
    for length in (256, 1024):
        overrides = [*keys, *([f"data.max_source_length={length}"] if length > 256 else [])]
        cfg = make_cfg(*overrides, config_name="eval", fast=False)
        cfg.paths.output_dir = str(tmp_path / f"eval{length}")
        caplog.clear()
        with caplog.at_level(logging.INFO):
            evaluate(cfg, overrides=overrides)
        written[length] = json.loads((tmp_path / f"eval{length}" / "metrics.json").read_text())
        assert (written[length]["evaluated_length"], written[length]["trained_length"]) == (length, 256)
        named = [r for r in caplog.records if r.levelname == "WARNING" and "trained at 256 tokens" in r.getMessage()]
        assert len(named) == (length > 256)
    assert "extended from 256" in named[0].getMessage() and "extending position tables from 256 to 1024" in caplog.text
    assert _predictions(tmp_path / "eval1024", "test") == _predictions(tmp_path / "eval256", "test")
    rows = (tmp_path / "eval1024" / "predictions" / "test.jsonl").read_text().splitlines()
    assert {(json.loads(row)["evaluated_length"], json.loads(row)["trained_length"]) for row in rows} == {(1024, 256)}
    assert written[1024]["metrics"]["test/rouge1"] == written[256]["metrics"]["test/rouge1"]
