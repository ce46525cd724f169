"""Training runs on CPU: artefacts, resume, bf16, export reload, wandb offline, classification, clear errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lsgtrain.evaluate import evaluate
from lsgtrain.train import train

from .conftest import assert_refused_before_data_work

SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "data.max_samples=8",
    "callbacks.rouge.every_n_epochs=1",
]


def test_summarization_run_leaves_checkpoints_predictions_and_export(make_cfg, tmp_path):
    metrics, objects = train(make_cfg(*SHORT))
    run = tmp_path / "run"
    assert objects["trainer"].global_step == 6
    for stage in ("val", "test"):
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert 0.0 <= metrics[f"{stage}/{name}"] <= 100.0
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"last.ckpt"}
    assert len(list((run / "checkpoints").glob("epoch*.ckpt"))) == 1
    test_rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert [row["id"] for row in test_rows] == list(range(8))
    assert all(row["reference"] and "prediction" in row for row in test_rows)
    per_row = [row["rougeLsum"] for row in test_rows]  # each row's own ROUGE; their mean is the logged one
    assert sum(per_row) / len(per_row) == pytest.approx(metrics["test/rougeLsum"], abs=0.01)
    assert (run / "predictions" / "val_epoch1.jsonl").is_file()
    assert {"config.json", "model.safetensors", "modeling_lsg_pegasus.py", "tokenizer.json"} <= {
        p.name for p in (run / "hf_model").iterdir()
    }
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["metrics"]["test/rougeLsum"] == metrics["test/rougeLsum"]


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


class TrainingForwardDtypes(Callback):
    """Records the dtypes the model's linear layers compute in during training steps, and the weights before fit."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()
        self.initial: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.initial = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
        for module in pl_module.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        if module.training:
            self.dtypes.add(output.dtype)


def test_bf16_mixed_cpu_run_trains(make_cfg):
    recorder = f"+callbacks.dtypes._target_={__name__}.TrainingForwardDtypes"
    metrics, objects = train(make_cfg(*SHORT, "trainer.precision=bf16-mixed", "test=false", recorder))
    assert objects["trainer"].global_step == 6
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    recorded = next(c for c in objects["trainer"].callbacks if isinstance(c, TrainingForwardDtypes))
    assert recorded.dtypes == {torch.bfloat16}  # every training matmul ran under bf16 autocast
    parameters = dict(objects["module"].named_parameters())
    assert {p.dtype for p in parameters.values()} == {torch.float32}  # mixed: the weights stay float32
    assert all(torch.isfinite(p).all() for p in parameters.values())
    changed = [name for name, p in parameters.items() if not torch.equal(p, recorded.initial[name])]
    assert len(changed) > len(parameters) // 2  # the optimizer stepped on the bf16 gradients


def test_exported_folder_reloads_in_a_fresh_process(make_cfg, tmp_path):
    _, objects = train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false"))
    export = tmp_path / "run" / "hf_model"
    batch = next(iter(objects["datamodule"].val_dataloader()))
    # the export decodes with the run's settings (generation_config.json), so compare with the module's generate
    expected = objects["module"].eval().generate(batch, max_new_tokens=6, num_beams=2)
    torch.save({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, tmp_path / "in.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.modules["lsgtrain"] = None
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        model = AutoModelForSeq2SeqLM.from_pretrained({str(export)!r}, trust_remote_code=True).eval()
        AutoTokenizer.from_pretrained({str(export)!r})
        batch = torch.load({str(tmp_path / "in.pt")!r})
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=6, num_beams=2)
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_wandb_offline_writes_a_run(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "logger=wandb"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))


def test_classification_trains_and_reports_f1_and_writes_its_predictions(make_cfg, tmp_path):
    """Before, classification runs wrote no predictions at all."""
    metrics, objects = train(make_cfg("experiment=aclsum_venue_cls", "trainer.max_epochs=2", "data.max_samples=12"))
    assert objects["trainer"].global_step == 12
    for stage in ("val", "test"):
        assert 0.0 <= metrics[f"{stage}/f1_macro"] <= 1.0
        assert 0.0 <= metrics[f"{stage}/f1_micro"] <= 1.0
        assert 0.0 <= metrics[f"{stage}/acc"] <= 1.0
    assert objects["model"].config.num_labels == objects["datamodule"].num_labels
    predictions = tmp_path / "run" / "predictions"
    assert sorted(p.name for p in predictions.iterdir()) == ["test.jsonl", "val_epoch0.jsonl", "val_epoch1.jsonl"]
    rows = [json.loads(line) for line in (predictions / "test.jsonl").read_text().splitlines()]
    references = objects["datamodule"].references("test")
    assert [row["id"] for row in rows] == list(range(len(references)))  # the format of summarization runs
    assert [row["reference"] for row in rows] == references
    assert all(row["prediction"] in objects["datamodule"].labels for row in rows)
    assert all(row["correct"] == (row["prediction"] == row["reference"]) for row in rows)
    assert sum(row["correct"] for row in rows) / len(rows) == pytest.approx(metrics["test/acc"])


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


def test_bad_column_names_the_columns_present(make_cfg):
    message = r"data.summary_column='abstract' is not a column of the train split; columns present: \['id', 'doc"
    with pytest.raises(Exception, match=message):
        train(make_cfg("data.summary_column=abstract", "data.max_samples=4"))


def test_offline_hub_dataset_gives_a_clear_error(make_cfg):
    expected = r"could not fetch dataset 'ccdv/arxiv-summarization'.*data\.dataset_name=DIR.*data\.source=files"
    with pytest.raises(Exception, match=expected):
        train(make_cfg("data=arxiv_sum", "data.tokenizer.pretrained=null"))


def test_offline_hub_model_gives_a_clear_error(make_cfg):
    with pytest.raises(Exception, match=r"could not fetch model 'ccdv/lsg-pegasus-large-4096'.*model\.pretrained=DIR"):
        train(make_cfg("model=lsg_pegasus_large", "data.max_samples=4", fast=False))


def test_impossible_lsg_parameters_fail_before_any_data_work(make_cfg, cache_dir, tmp_path):
    cfg = make_cfg("model.lsg.block_size=12", "model.lsg.sparsity_factor=4", "data.max_samples=4")
    message = r"^model.lsg: block_size // sparsity_factor = 12 // 4 = 3 is odd"
    assert_refused_before_data_work(cfg, tmp_path, ValueError, message)


def test_tokenization_is_cached_and_reused(make_cfg, cache_dir):
    from hydra.utils import instantiate

    cfg = make_cfg("data.max_samples=4")
    first = instantiate(cfg.data, _convert_="all")
    first.tokenizer = first.train_tokenizer()
    first.prepare_data()
    files = {p: p.stat().st_mtime_ns for p in Path(cache_dir, "tokenized").glob("*.arrow")}
    second = instantiate(cfg.data, _convert_="all")
    second.tokenizer = second.train_tokenizer()
    second.setup("fit")
    assert {p: p.stat().st_mtime_ns for p in Path(cache_dir, "tokenized").glob("*.arrow")} == files
    assert second.datasets["train"].cache_files[0]["filename"] in {str(p) for p in files}


def test_summarize_cli_writes_a_summary_per_file(make_cfg, tmp_path):
    from lsgtrain.cli import main as cli_main

    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false"))
    documents = []
    for i in range(2):
        documents.append(tmp_path / f"doc{i}.txt")
        documents[-1].write_text("Long documents need sparse attention. " * (30 + i))
    output = tmp_path / "summaries.jsonl"
    code = cli_main(["summarize", str(tmp_path / "run" / "hf_model"), *map(str, documents), "--output", str(output),
                     "--num-beams", "1", "--max-new-tokens", "5"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == [str(d) for d in documents]
    assert all(isinstance(row["prediction"], str) and row["input_tokens"] > 100 for row in rows)
    assert all(row["reference"] is None and "rougeLsum" not in row for row in rows)  # no reference, no score
    assert cli_main(["summarize", str(tmp_path / "nowhere"), str(documents[0])]) == 2
