"""The export's model card (model_card.py): it describes and reproduces the run, names the base checkpoint, data and
rows per split, hub ids of local copies and never their paths."""

import shutil
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lsgtrain.callbacks.batch_size import StepBatch
from lsgtrain.model_card import build_model_card, hub_id_of, portable_override
from lsgtrain.modeling import LSGPegasusConfig

from ..helpers import REPO


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
        generation=None, trainer=trainer, batch=StepBatch(2, 1, 1, None), seconds=60, resumed=False, license=None,
        repo_id=None,
        rows=datamodule.rows, **options,
    )  # fmt: skip


def test_model_card_describes_and_reproduces_the_run(exported_run):
    card = ModelCard.load(exported_run["export"] / "README.md")
    data, text, metrics = card.data, card.text, exported_run["metrics"]
    assert data.license == "apache-2.0" and data.base_model is None  # trained from scratch
    assert data.pipeline_tag == "summarization" and "lsg" in data.tags
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert results["test", name] == round(metrics[f"test/{name}"], 4)
        assert ("validation", name) in results
    assert results["validation", "rougeLsum"] == round(metrics["val/rougeLsum"], 4)  # one validation: the best
    command = "python train.py " + " ".join(map(portable_override, exported_run["overrides"]))
    root = exported_run["export"].parent.parent
    assert command in text and f"paths.root_dir=.../{root.name}" in command  # no path of the training machine
    assert str(root) not in str(card)
    assert "| `block_size` | 16 |" in text and "| `sparsity_type` | norm |" in text
    assert "| `num_beams` | 3 |" in text and "| `length_penalty` | 2.0 |" in text
    assert "aclsum" in text and "documents truncated to 256 tokens" in text
    assert "1 x CPU" in text and "wall time:" in text
    assert "2210.15497" in text and "Condevaux, Charles and Harispe" in text and "PAKDD 2023" in text
    assert f'model_id = "{REPO}"' in text


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
        batch=StepBatch(2, 8, 2, 32), seconds=7200, resumed=True, license=None, repo_id=None,
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


@pytest.mark.parametrize("kind", ["models", "datasets"])
def test_the_card_shows_a_hub_cache_path_as_its_hub_id_of_the_kind_the_table_says(tmp_path, kind):
    """A tokenizer path is a model copy (before: looked up as a dataset, since its key starts with `data.`)."""
    snapshot = tmp_path / f"{kind}--org--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    key = "data.tokenizer.pretrained" if kind == "models" else "data.dataset_name"
    assert portable_override(f"{key}={snapshot}") == f"{key}=org/name"
    other = "data.dataset_name" if kind == "models" else "data.tokenizer.pretrained"
    assert portable_override(f"{other}={snapshot}") == f"{other}=.../abc"


def test_the_cards_command_names_the_files_of_a_dict_override_by_name_only(tmp_path):
    """Before: `data.data_files={...}` was copied verbatim, relative and absolute paths included (issue 26.11)."""
    override = f"data.data_files={{train: ../../data/x/../train.jsonl, val: {tmp_path / 'val.jsonl'}}}"
    assert portable_override(override) == "data.data_files={train: .../train.jsonl, val: .../val.jsonl}"
    assert portable_override("data.data_files.train=./data/train.jsonl") == "data.data_files.train=.../train.jsonl"
