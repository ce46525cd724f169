"""A model people can share: the export's generation settings, model card, permissions, and `push` to the hub
(against a stand-in `HfApi`: no network in tests)."""

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import RepositoryNotFoundError
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from lsgtrain import hub
from lsgtrain.callbacks.hf_export import push_export, run_generation_config
from lsgtrain.checkpointing import CheckpointError
from lsgtrain.cli import main as cli_main
from lsgtrain.evaluate import evaluate
from lsgtrain.model_card import build_model_card, hub_id_of, portable_override
from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration
from lsgtrain.modeling.convert import save_atomically
from lsgtrain.preflight import ConfigError
from lsgtrain.train import CONFIG_DIR, train

from .conftest import FAST, TINY_INIT

# The run's test decoding: 3 beams, exactly 6 new tokens, no repeated bigram, a length penalty; validation during
# training decodes greedily, 2 tokens (callbacks.rouge.val_generation), which the export must not take.
GENERATION = [
    "module.generation.num_beams=3", "module.generation.max_new_tokens=6", "++module.generation.min_new_tokens=6",
    "module.generation.no_repeat_ngram_size=2", "module.generation.length_penalty=2.0",
    "+callbacks.rouge.val_generation.num_beams=1", "+callbacks.rouge.val_generation.max_new_tokens=2",
    "+callbacks.rouge.val_generation.min_new_tokens=1",
]  # fmt: skip
RUN_GENERATION = {"num_beams": 3, "max_new_tokens": 6, "min_new_tokens": 6, "no_repeat_ngram_size": 2,
                  "length_penalty": 2.0, "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}  # fmt: skip
ONE_EPOCH = ["data.max_samples=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
REPO = "someone/lsg-pegasus-aclsum"


class FakeHub:
    """Stands in for `HfApi` (no network): records what would be created and uploaded."""

    def __init__(self, existing: dict[str, bool] | None = None, upload_error: Exception | None = None):
        self.existing = existing or {}  # repo id -> private
        self.upload_error = upload_error
        self.calls: list[tuple[str, dict]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeHub":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # what `is_offline_mode()` reads
        fake = self

        class Api:
            def __init__(self, token=None, **_):
                self.token = token

            def whoami(self):
                return {"name": "someone"}

            def repo_info(self, repo_id):
                if repo_id not in fake.existing:
                    not_found = SimpleNamespace(status_code=404, headers={}, request=None)
                    raise RepositoryNotFoundError(f"{repo_id} not found", response=not_found)
                return SimpleNamespace(private=fake.existing[repo_id])

            def create_repo(self, repo_id, **kwargs):
                fake.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
                return f"https://huggingface.co/{repo_id}"

            def upload_folder(self, **kwargs):
                if fake.upload_error is not None:
                    raise fake.upload_error
                files = sorted(os.listdir(kwargs["folder_path"]))
                fake.calls.append(("upload_folder", {**kwargs, "files": files}))

        monkeypatch.setattr(hub, "HfApi", Api)
        return self


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """One tiny summarization run started as `python train.py OVERRIDES` is (Hydra's config set, so the card can
    name the command), with umask 022 and `push_to_hub` to a stand-in hub."""
    root = tmp_path_factory.mktemp("export")
    overrides = [
        *FAST, *TINY_INIT, *ONE_EPOCH, "callbacks.rouge.every_n_epochs=1", *GENERATION,
        f"callbacks.hf_export.push_to_hub.repo_id={REPO}", f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}", f"paths.cache_dir={cache_dir}",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            fake_hub = FakeHub().install(monkeypatch)
            metrics, objects = train(cfg)
    finally:
        os.umask(umask)
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    return {"metrics": metrics, "objects": objects, "export": root / "run" / "hf_model", "hub": fake_hub,
            "overrides": overrides}  # fmt: skip


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


def test_generate_without_arguments_decodes_as_the_runs_evaluation_in_a_fresh_process(run, tmp_path):
    """Before, generation_config.json held transformers' defaults: greedy, 20 tokens."""
    module, datamodule = run["objects"]["module"], run["objects"]["datamodule"]
    batch = next(iter(datamodule.test_dataloader()))
    batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    expected = module.eval().generate(batch)  # what the test generated (module.generation)
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "load.py").write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), str(run["export"]), str(tmp_path / "batch.pt"),
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


def test_export_folder_is_readable_as_the_umask_allows(run, tmp_path, tiny_config):
    """Before, the export was a tempfile.mkdtemp folder: 0700 whatever the umask."""
    assert stat.S_IMODE(run["export"].stat().st_mode) == 0o755  # the run's umask 022
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in run["export"].iterdir())
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    umask = os.umask(0o027)
    try:
        save_atomically(LSGPegasusForConditionalGeneration(tiny_config()), None, tmp_path / "export")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


def test_model_card_describes_and_reproduces_the_run(run):
    card = ModelCard.load(run["export"] / "README.md")
    data, text, metrics = card.data, card.text, run["metrics"]
    assert data.license == "apache-2.0" and data.base_model is None  # trained from scratch
    assert data.pipeline_tag == "summarization" and "lsg" in data.tags
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert results["test", name] == round(metrics[f"test/{name}"], 4)
        assert ("validation", name) in results
    assert results["validation", "rougeLsum"] == round(metrics["val/rougeLsum"], 4)  # one validation: the best
    command = "python train.py " + " ".join(map(portable_override, run["overrides"]))
    root = run["export"].parent.parent
    assert command in text and f"paths.root_dir=.../{root.name}" in command  # no path of the training machine
    assert str(root) not in str(card)
    assert "| `block_size` | 16 |" in text and "| `sparsity_type` | norm |" in text
    assert "| `num_beams` | 3 |" in text and "| `length_penalty` | 2.0 |" in text
    assert "aclsum" in text and "documents truncated to 256 tokens" in text
    assert "1 x CPU" in text and "wall time:" in text
    assert "2210.15497" in text and "Condevaux, Charles and Harispe" in text and "PAKDD 2023" in text
    assert f'model_id = "{REPO}"' in text


def test_a_runs_evaluation_has_intervals_statistics_length_buckets_and_figures(run):
    """Issue 29 end to end: every ROUGE (and the lead's) with its 95% interval in the metrics, run_summary.json and
    the card; statistics in each predictions row and aggregated; ROUGE by source length; the figures, linked."""
    metrics, folder = run["metrics"], run["export"].parent
    summary = json.loads((folder / "run_summary.json").read_text())["metrics"]
    buckets = sorted({key.split("/")[1] for key in metrics if key.startswith("test/len_")})
    assert buckets == ["len_8k-16k"]  # the 4 first aclsum test papers: 8-16k tokens of the 600-piece vocabulary
    for key in ("test/rouge1", "test/lead_rougeLsum", "test/len_8k-16k/rouge2", "val/rougeL"):
        assert metrics[f"{key}_low"] <= metrics[key] <= metrics[f"{key}_high"], key
        assert summary[f"{key}_low"] == metrics[f"{key}_low"]
    assert metrics["test/len_8k-16k/documents"] == metrics["test/len_8k-16k/truncated"] == 4  # all cut at 256
    assert metrics["test/stats/lead/coverage"] == 1.0 and metrics["test/stats/ref/coverage_median"] < 1
    rows = [json.loads(line) for line in (folder / "predictions" / "test.jsonl").read_text().splitlines()]
    assert {"words", "tokens", "reference_words", "document_tokens", "coverage", "density", "novel_2gram",
            "repeated_trigrams", "compression", "lead_rouge1"} <= set(rows[0])  # fmt: skip
    figures = sorted(path.name for path in (folder / "figures").glob("*.png"))
    kinds = ["coverage_density", "lengths", "rouge_by_length"]
    assert figures == [*(f"test_{k}.png" for k in kinds), *(f"val_{k}.png" for k in kinds), "validation_curve.png"]
    text = ModelCard.load(run["export"] / "README.md").text
    low, high = metrics["test/rouge1_low"], metrics["test/rouge1_high"]
    assert (
        f"| rouge1 | {metrics['val/rouge1']:.4f} [" in text
        and f"{metrics['test/rouge1']:.4f} [{low:.4f}, {high:.4f}] |" in text
    )
    lead = f"{metrics['test/len_8k-16k/lead_rouge1']:.2f}"
    assert "| source tokens | documents | cut | rouge1 |" in text and "| 8k-16k | 4 | 4 |" in text and lead in text
    assert "| coverage | " in text and "[test_rouge_by_length.png](../figures/test_rouge_by_length.png)" in text
    assert "rouge1_low" not in text and "len_" not in text  # bounds sit beside their metric, buckets in their table


def test_a_run_with_push_to_hub_pushes_the_finished_export_privately(run):
    calls = run["hub"].calls
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["repo_id"] == REPO and calls[0][1]["private"] is True
    upload = calls[1][1]
    assert upload["repo_id"] == REPO and Path(upload["folder_path"]) == run["export"]
    assert {"README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(
        upload["files"]
    )  # the card was written before the upload


def test_push_command_uploads_a_complete_export(run, monkeypatch, capsys):
    fake = FakeHub().install(monkeypatch)
    assert cli_main(["push", str(run["export"]), "me/private-model"]) == 0
    assert cli_main(["push", str(run["export"]), "me/public-model", "--public"]) == 0
    created = [kwargs for name, kwargs in fake.calls if name == "create_repo"]
    assert [(c["repo_id"], c["private"]) for c in created] == [("me/private-model", True), ("me/public-model", False)]
    uploads = [kwargs for name, kwargs in fake.calls if name == "upload_folder"]
    assert [Path(u["folder_path"]) for u in uploads] == [run["export"]] * 2
    assert "pushed" in capsys.readouterr().out


@pytest.mark.parametrize("missing", ["README.md", "generation_config.json", "model.safetensors"])
def test_push_refuses_an_incomplete_export(run, tmp_path, monkeypatch, capsys, missing):
    folder = tmp_path / "hf_model"
    shutil.copytree(run["export"], folder)
    (folder / missing).unlink()
    fake = FakeHub().install(monkeypatch)
    assert cli_main(["push", str(folder), "me/model"]) == 2
    error = capsys.readouterr().err
    assert "not a complete lsgtrain export" in error and missing in error
    assert fake.calls == []


def test_push_refuses_a_public_repository_when_private_is_asked(run, monkeypatch, capsys):
    fake = FakeHub(existing={"me/model": False}).install(monkeypatch)
    assert cli_main(["push", str(run["export"]), "me/model"]) == 2
    assert "exists and is public" in capsys.readouterr().err
    assert fake.calls == []


def test_push_offline_says_so(run, capsys):
    assert constants.HF_HUB_OFFLINE  # the tests' setting (tests/conftest.py)
    assert cli_main(["push", str(run["export"]), "me/model"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_push_without_network_names_the_problem(run, monkeypatch, capsys):
    with socket.socket() as probe:  # a local port nobody listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert cli_main(["push", str(run["export"]), "me/model"]) == 2
    assert "cannot reach the Hugging Face hub" in capsys.readouterr().err


def test_a_run_that_cannot_push_fails_before_training(make_cfg, tmp_path):
    cfg = make_cfg(*ONE_EPOCH, f"callbacks.hf_export.push_to_hub.repo_id={REPO}")
    with pytest.raises(ConfigError, match=r"push_to_hub\.repo_id=.*HF_HUB_OFFLINE is set"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "tokenizer").exists()


@pytest.mark.parametrize(
    ("setting", "error"),
    [("repo_id=a/b/c", "is not a hub repository id"), ("private=maybe", "must be true or false")],
)
def test_a_bad_push_setting_is_refused_before_anything_is_read(make_cfg, tmp_path, setting, error):
    with pytest.raises(ValueError, match=rf"callbacks\.hf_export\.push_to_hub .*{error}"):
        train(make_cfg(f"callbacks.hf_export.push_to_hub.{setting}"))
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_a_push_failing_at_the_end_of_a_run_says_how_to_retry(run, monkeypatch):
    FakeHub(upload_error=ConnectionResetError("connection reset by peer")).install(monkeypatch)
    with pytest.raises(RuntimeError, match=rf"the run finished .* `lsgtrain push {run['export']} me/model --public`"):
        push_export(run["export"], hub.PushTarget("me/model", private=False))


def test_generation_settings_the_export_cannot_save_fail_before_training(make_cfg, tmp_path):
    """A length penalty with greedy search: generate() only warns, GenerationConfig.save_pretrained refuses it."""
    cfg = make_cfg(*ONE_EPOCH, "module.generation.length_penalty=2.0")  # make_cfg: num_beams=1
    with pytest.raises(ValueError, match=r"(?s)module\.generation .*`length_penalty`: `num_beams` is set to 1"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


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


@pytest.mark.parametrize("local", [True, False], ids=["local-base-with-license", "hub-base-offline"])
def test_card_names_the_base_checkpoint_and_data_and_takes_the_base_license(make_cfg, tmp_path, local):
    """A base checkpoint's card decides the license when it names one; hub ids become `base_model` / `datasets`."""
    base = tmp_path / "base"
    if local:
        base.mkdir()
        (base / "README.md").write_text("---\nlicense: mit\n---\n# a base\n")
    source = str(base) if local else "ccdv/lsg-pegasus-large-4096"
    cfg = make_cfg("experiment=arxiv_sum", f"model.pretrained={source}", fast=False)
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=8, num_nodes=2, num_devices=4,
        global_step=120, current_epoch=6, accumulate_grad_batches=2, precision="bf16-mixed",
    )  # fmt: skip
    card = build_model_card(
        run_config=OmegaConf.to_container(cfg, resolve=True), model_config=LSGPegasusConfig(block_size=128),
        validation={"val/rougeLsum": 40.0}, test={"test/rougeLsum": 41.0}, generation=None, trainer=trainer,
        seconds=7200, resumed=True, license=None, repo_id=None,
    )  # fmt: skip
    assert card.data.datasets == ["ccdv/arxiv-summarization"]
    if local:  # a local folder of unknown origin is no hub id, and its path stays out of the card
        assert card.data.license == "mit" and card.data.base_model is None and str(base) not in card.text
        assert "A local checkpoint (folder `base`; its hub id: `callbacks.hf_export.base_model`)" in card.text
    else:  # offline: the hub card cannot be read, so lsgtrain's license, saying so
        assert card.data.license == "apache-2.0" and card.data.base_model == source
        assert "names no license in a model card that could be read here" in card.text
    assert "8 x CPU" in card.text and "(2 nodes x 4 devices)" in card.text and "2.0 h (the last session" in card.text
    assert "effective batch: 32" in card.text  # 2 per device x 8 devices x 2 accumulated


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


def _predictions(folder: Path, name: str) -> list[str]:
    """The texts of a predictions file: the same words decoded the same way."""
    rows = (folder / "predictions" / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in rows]


def _val_rouge(metrics: dict[str, float]) -> dict[str, float]:
    scores = {key: value for key, value in metrics.items() if key.startswith("val/rouge")}
    assert len(scores) == 12, metrics  # 4 ROUGE, each with its interval's _low and _high
    return scores


def test_evaluating_a_runs_export_reproduces_its_validation_rouge(run, make_cfg, tmp_path, caplog):
    """Before, the export decoded with the config's defaults (2 beams, 160 new tokens) and its position table was
    extended to data.max_source_length=2048: another setup, another score."""
    cfg = make_cfg(f"model.pretrained={run['export']}", *ONE_EPOCH[:1], config_name="eval", fast=False)
    with caplog.at_level(logging.INFO, logger="lsgtrain.evaluate"):
        metrics = evaluate(cfg)
    validation = run["objects"]["trainer"].callbacks
    export = next(c for c in validation if type(c).__name__ == "HFExport")
    assert _val_rouge(metrics) == pytest.approx(_val_rouge(export.validation_metrics), abs=1e-6)
    assert _predictions(tmp_path / "run", "val") == _predictions(run["export"].parent, "val")
    assert "data.max_source_length=256" in caplog.text and "model.lsg.block_size=16" in caplog.text
    assert "decodes with its generation_config.json" in caplog.text and "'num_beams': 3" in caplog.text
    exported = json.loads((run["export"] / "tokenizer_config.json").read_text())
    assert exported["model_max_length"] == 256  # the trained length, which eval read back
    # a key set on the command line wins over the export's own
    cfg = make_cfg(f"model.pretrained={run['export']}", *ONE_EPOCH[:1], "module.generation.max_new_tokens=2",
                   config_name="eval", fast=False)  # fmt: skip
    evaluate(cfg, overrides=["module.generation.max_new_tokens=2"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions" / "test.jsonl").read_text().splitlines()]
    assert max(len(row["prediction"].split()) for row in rows) <= 2


@pytest.fixture
def run_folder_with_hydra_config(run, tmp_path):
    """A copy of the run's folder with the `.hydra/config.yaml` Hydra writes for `python train.py` (unresolved)."""
    folder = tmp_path / "trained"
    shutil.copytree(run["export"].parent, folder, ignore=shutil.ignore_patterns(".lock"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[o for o in run["overrides"] if not o.startswith("paths.")])
    GlobalHydra.instance().clear()
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return folder


def test_evaluating_a_checkpoint_takes_its_runs_settings(run, run_folder_with_hydra_config, make_cfg, tmp_path):
    """Before, `lsgtrain eval ckpt_path=...` built the config's default model (another size, length and decoding)
    and failed to load the weights, or scored another setup."""
    best = next((run_folder_with_hydra_config / "checkpoints").glob("epoch*.ckpt"))
    metrics = evaluate(make_cfg(f"ckpt_path={best}", config_name="eval", fast=False))
    export = next(c for c in run["objects"]["trainer"].callbacks if type(c).__name__ == "HFExport")
    assert _val_rouge(metrics) == pytest.approx(_val_rouge(export.validation_metrics), abs=1e-6)
    assert _predictions(tmp_path / "run", "val") == _predictions(run["export"].parent, "val")
    written = (run_folder_with_hydra_config / "predictions" / "test.jsonl").read_bytes()
    assert written == (run["export"].parent / "predictions" / "test.jsonl").read_bytes()  # the run's stay as they were


def test_a_checkpoint_trained_at_another_length_is_named_as_such(run, run_folder_with_hydra_config, make_cfg):
    """Before: "it comes from a run with another tokenizer (vocabulary), model size or task"."""
    best = next((run_folder_with_hydra_config / "checkpoints").glob("epoch*.ckpt"))
    cfg = make_cfg(f"ckpt_path={best}", "data.max_source_length=512", config_name="eval", fast=False)
    with pytest.raises(CheckpointError, match=r"was trained at data.max_source_length=256 .* this config builds 512"):
        evaluate(cfg, overrides=["data.max_source_length=512"])


def _card(make_cfg, *overrides: str, **options):
    """A card for a config, its data read as a run reads it (rows per split), with a stand-in trainer."""
    cfg = make_cfg(*overrides)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.raw  # noqa: B018  (loads, drops, holds out and caps: what `rows` counts)
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1, num_nodes=1, num_devices=1,
        global_step=10, current_epoch=1, accumulate_grad_batches=1, precision="32-true",
    )  # fmt: skip
    options = {"validation": {"val/rougeLsum": 10.0}, "test": {"test/rougeLsum": 11.0}, **options}
    return build_model_card(
        run_config=OmegaConf.to_container(cfg, resolve=True), model_config=LSGPegasusConfig(block_size=16),
        generation=None, trainer=trainer, seconds=60, resumed=False, license=None, repo_id=None,
        rows=datamodule.rows, **options,
    )  # fmt: skip


def test_card_states_the_rows_each_split_used_and_model_index_carries_the_caps(make_cfg):
    """Before, the card read only data.max_samples: per-split caps gave "official splits" and an uncapped
    model-index; max_train_samples=8 with max_samples=4 said "Only the first 4 rows of each split"."""
    card = _card(make_cfg, "data.max_train_samples=8", "data.max_eval_samples=4", "data.max_predict_samples=4")
    assert "- train: 8 rows (the first 8 of 100: data.max_train_samples=8)" in card.text
    assert "- validation: 4 rows (the first 4 of 50: data.max_eval_samples=4)" in card.text
    assert "- test: 4 rows (the first 4 of 100: data.max_predict_samples=4)" in card.text
    arguments = {r.dataset_split: r.dataset_args for r in card.data.eval_results}
    assert arguments == {
        "validation": {"rows": 4, "max_eval_samples": 4}, "test": {"rows": 4, "max_predict_samples": 4}
    }  # fmt: skip
    card = _card(make_cfg, "data.max_train_samples=8", "data.max_samples=4")
    assert "- train: 8 rows (the first 8 of 100: data.max_train_samples=8)" in card.text
    assert "- test: 4 rows (the first 4 of 100: data.max_samples=4)" in card.text
    assert "each split" not in card.text


def test_card_names_the_held_out_validation_and_why_there_is_no_test(make_cfg, standin_files):
    """Before: "The test set was not run (`test=false`)" for data without a test split, and no word of the
    validation rows held out from train."""
    files = standin_files("summarization", "document", "summary", sizes=(12, 1, 1))
    card = _card(make_cfg, "data.source=files", f"+data.data_files.train={files['train']}", test={},
                 untested="the data has no test split")  # fmt: skip
    assert "- train: 11 rows (1 held out as validation)" in card.text
    assert "- validation: 1 rows (held out from train: data.val_fraction=0.1, seed 0)" in card.text
    assert "- test: none (the data has no test split)" in card.text
    assert "The test set was not run: the data has no test split." in card.text and "test=false" not in card.text
    assert files["train"] not in card.text and "`summarization-document-summary-train.jsonl`" in card.text
    (result,) = {r.dataset_split: r for r in card.data.eval_results}.values()
    assert result.dataset_args == {"rows": 1, "held_out_from_train": 0.1}


def test_card_names_the_hub_ids_of_local_copies_and_never_their_paths(make_cfg, tmp_path, hub_standins):
    """Before, a local base checkpoint and dataset left `base_model` / `datasets` empty and their absolute paths
    went into the card's text."""
    cached = tmp_path / "hub" / "models--google--pegasus-large" / "snapshots" / "0123abcd"
    shutil.copytree(hub_standins["google/pegasus-large"], cached)
    data = tmp_path / "copy-of-arxiv"
    shutil.copytree(hub_standins["ccdv/arxiv-summarization"], data)
    overrides = ["experiment=arxiv_sum", f"model.convert_from={cached}", f"data.dataset_name={data}",
                 "data.max_samples=2", "data.max_source_length=256"]  # fmt: skip
    card = _card(make_cfg, *overrides)
    assert card.data.base_model == "google/pegasus-large" and card.data.datasets is None
    assert str(tmp_path) not in str(card)
    assert "A local copy of [`google/pegasus-large`]" in card.text and "folder `copy-of-arxiv`" in card.text
    card = _card(make_cfg, *overrides, hub_ids={"dataset": "ccdv/arxiv-summarization"})
    assert card.data.datasets == ["ccdv/arxiv-summarization"] and str(tmp_path) not in str(card)
    assert hub_id_of(str(tmp_path / "hub" / "datasets--ccdv--pubmed-summarization"), "datasets") is None  # absent
    (tmp_path / "hub" / "datasets--ccdv--pubmed-summarization").mkdir()
    assert hub_id_of(str(tmp_path / "hub" / "datasets--ccdv--pubmed-summarization"), "datasets") == (
        "ccdv/pubmed-summarization"
    )


def test_local_paths_in_the_cards_command_become_hub_ids_or_their_last_part(tmp_path):
    cached = tmp_path / "models--google--pegasus-large" / "snapshots" / "0123abcd"
    cached.mkdir(parents=True)
    assert portable_override(f"model.convert_from={cached}") == "model.convert_from=google/pegasus-large"
    assert portable_override(f"data.dataset_name={tmp_path / 'arxiv'}") == "data.dataset_name=.../arxiv"
    hub_name = "data.dataset_name=ccdv/arxiv-summarization"
    assert portable_override(hub_name) == hub_name
    assert portable_override("experiment=arxiv_sum") == "experiment=arxiv_sum"


def test_the_cards_command_names_the_files_of_a_dict_override_by_name_only(tmp_path):
    """Before: `data.data_files={...}` was copied verbatim, relative and absolute paths included (issue 26.11)."""
    override = f"data.data_files={{train: ../../data/x/../train.jsonl, val: {tmp_path / 'val.jsonl'}}}"
    assert portable_override(override) == "data.data_files={train: .../train.jsonl, val: .../val.jsonl}"
    assert portable_override("data.data_files.train=./data/train.jsonl") == "data.data_files.train=.../train.jsonl"


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
