"""The export (callbacks/hf_export.py): loads in a fresh process without lsgtrain and decodes as the run's evaluation,
readable as the umask allows, bounded new tokens, no generation config for a classifier, refuses non-finite weights."""

import json
import os
import stat
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard

from lsgtrain import hub
from lsgtrain.callbacks import TrainingDiverged
from lsgtrain.callbacks.hf_export import run_generation_config
from lsgtrain.modeling import LSGPegasusForConditionalGeneration
from lsgtrain.modeling.convert import save_atomically
from lsgtrain.train import train

from ..helpers import ONE_EPOCH, SHORT

RUN_GENERATION = {"num_beams": 3, "max_new_tokens": 6, "min_new_tokens": 6, "no_repeat_ngram_size": 2,
                  "length_penalty": 2.0, "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}  # fmt: skip


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    sys.modules["lsgtrain"] = None  # only the folder's own code can load
    import torch
    from transformers import AutoModelForSeq2SeqLM
    folder, batch_file, out_file = sys.argv[1:]
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert "lsgtrain" not in type(model).__module__, type(model).__module__
    batch = torch.load(batch_file)
    with torch.no_grad():
        plain = model.generate(**batch)  # no generation arguments
        greedy = model.generate(**batch, num_beams=1, max_new_tokens=6, min_new_tokens=6)
    torch.save({"plain": plain, "greedy": greedy, "config": model.generation_config.to_diff_dict()}, out_file)
    """
)


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


def test_generate_without_arguments_decodes_as_the_runs_evaluation_in_a_fresh_process(exported_run, tmp_path):
    """Before, generation_config.json held transformers' defaults: greedy, 20 tokens."""
    module, datamodule = exported_run["objects"]["module"], exported_run["objects"]["datamodule"]
    batch = next(iter(datamodule.test_dataloader()))
    batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    expected = module.eval().generate(batch)  # what the test generated (module.generation)
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "load.py").write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), str(exported_run["export"]), str(tmp_path / "batch.pt"),
         str(tmp_path / "out.pt")],
        capture_output=True, text=True, cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert RUN_GENERATION.items() <= out["config"].items()
    assert out["plain"].shape[1] == 1 + 6  # decoder start + exactly 6 tokens, not the default 20
    assert torch.equal(out["plain"], expected)
    assert not torch.equal(out["plain"], out["greedy"])  # the 3 beams are what made the difference


def test_export_folder_is_readable_as_the_umask_allows(exported_run, tmp_path, tiny_config):
    """Before, the export was a tempfile.mkdtemp folder: 0700 whatever the umask."""
    assert stat.S_IMODE(exported_run["export"].stat().st_mode) == 0o755  # the run's umask 022
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in exported_run["export"].iterdir())
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    umask = os.umask(0o027)
    try:
        save_atomically(LSGPegasusForConditionalGeneration(tiny_config()), None, tmp_path / "export")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


def test_the_export_bounds_new_tokens_without_the_checkpoints_max_length(tiny_checkpoint, tmp_path):
    """Before, a checkpoint's `max_length: 256` (google/pegasus-large) stayed beside the run's `max_new_tokens`, and
    transformers warned on every generate()."""
    model = LSGPegasusForConditionalGeneration.from_pretrained(tiny_checkpoint)
    model.generation_config.update(max_length=256, min_length=4, num_beams=8, length_penalty=0.8)  # pegasus-large's
    module = SimpleNamespace(model=model, generation_settings=lambda **overrides: {"max_new_tokens": 16, **overrides})
    config = run_generation_config(SimpleNamespace(callbacks=[]), module)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 16 and "max_length" not in saved
    assert saved["min_length"] == 4 and saved["length_penalty"] == 0.8  # the checkpoint's other settings stay


def test_classifier_export_has_a_card_and_no_generation_config(make_cfg, tmp_path):
    metrics, _ = train(make_cfg("experiment=aclsum_venue_cls", *ONE_EPOCH))
    export = tmp_path / "run" / "hf_model"
    assert not (export / "generation_config.json").exists()
    hub.check_export_folder(export)  # complete: a classifier needs no generation settings
    card = ModelCard.load(export / "README.md")
    assert card.data.pipeline_tag == "text-classification"
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results["test", "f1_macro"] == round(metrics["test/f1_macro"], 4)
    assert ("validation", "f1_macro") in results
    assert "AutoModelForSequenceClassification" in card.text and "generate(" not in card.text
    assert json.loads((export / "config.json").read_text())["architectures"] == ["LSGPegasusForSequenceClassification"]


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


def test_a_save_removes_the_staging_folders_that_killed_saves_left(tiny_checkpoint, tmp_path):
    """Before, a kill -9 during the export left `.hf_model.<hex>/` (as large as the model) for good."""
    from transformers import AutoTokenizer

    stale = tmp_path / ".hf_model.0123456789abcdef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a model")
    unrelated = tmp_path / ".hf_model.notes"
    unrelated.mkdir()
    model = LSGPegasusForConditionalGeneration.from_pretrained(tiny_checkpoint)
    save_atomically(model, AutoTokenizer.from_pretrained(tiny_checkpoint), tmp_path / "hf_model")
    assert (tmp_path / "hf_model" / "config.json").is_file()
    assert not stale.exists() and unrelated.is_dir()
