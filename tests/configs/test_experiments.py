"""Every experiment of docs/training.md runs `fast_dev_run` on the tiny hub stand-ins (experiments/hub_standins.py), and
the embedded ones on the package's own model."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from lsgtrain.modeling.loading import pegasus_vocabulary
from lsgtrain.train import train

SAMPLE = "we study @xmath3 sparse attention over long documents .\nglobal tokens summarise every block ."


LSG, PEGASUS = "ccdv/lsg-pegasus-large-4096", "google/pegasus-large"


# docs/data.md command -> (overrides, checkpoint folder, dataset folder)
DOCUMENTED_COMMANDS = {
    "arxiv_sum": (["experiment=arxiv_sum"], "model.pretrained", LSG, "ccdv/arxiv-summarization"),
    "arxiv_sum converted": (["experiment=arxiv_sum", "model=pegasus_large_converted"], "model.convert_from", PEGASUS,
                            "ccdv/arxiv-summarization"),
    "pubmed_sum": (["experiment=pubmed_sum"], "model.pretrained", LSG, "ccdv/pubmed-summarization"),
    "arxiv_cls": (["experiment=arxiv_cls"], "model.pretrained", LSG, "ccdv/arxiv-classification"),
    "eurlex_cls": (["experiment=eurlex_cls"], "model.pretrained", LSG, "coastalcph/lex_glue"),
}  # fmt: skip


# One CPU process instead of every GPU, and short generations; everything else is the experiment's own.
ON_THIS_MACHINE = ["debug=fast_dev_run", "logger=none", "trainer.accelerator=cpu", "trainer.devices=1",
                   "++trainer.strategy=auto"]  # fmt: skip


SHORT_GENERATION = ["module.generation.max_new_tokens=12", "module.generation.min_new_tokens=2"]


@pytest.mark.parametrize("command", sorted(DOCUMENTED_COMMANDS))
def test_documented_experiment_runs_from_local_copies_with_the_checkpoints_tokenizer(make_cfg, hub_standins, command):
    overrides, model_key, checkpoint, dataset = DOCUMENTED_COMMANDS[command]
    summarization = "_sum" in overrides[0]
    cfg = make_cfg(
        *overrides,
        f"{model_key}={hub_standins[checkpoint]}",
        f"data.dataset_name={hub_standins[dataset]}",
        *ON_THIS_MACHINE,
        *(SHORT_GENERATION if summarization else []),
        fast=False,
    )
    assert cfg.data.max_source_length == 4096 and cfg.model.lsg.block_size == 128  # the experiment as configured
    metrics, objects = train(cfg)

    tokenizer = objects["datamodule"].tokenizer
    assert tokenizer.get_vocab() == pegasus_vocabulary(hub_standins[checkpoint] / "spiece.model")
    assert tokenizer(SAMPLE).input_ids == AutoTokenizer.from_pretrained(hub_standins[LSG])(SAMPLE).input_ids
    saved = AutoTokenizer.from_pretrained(cfg.paths.output_dir + "/tokenizer")  # the run folder keeps it
    assert saved(SAMPLE).input_ids == tokenizer(SAMPLE).input_ids
    assert objects["model"].config.vocab_size == len(tokenizer)
    assert objects["trainer"].global_step == 1 and metrics["train/loss"] > 0
    # the checkpoints' attention dropout (0.1) is replaced by the recipe's 0 in every attention layer, so the encoder
    # takes the fast kernels (docs/training.md "Attention dropout")
    layers = [m for m in objects["model"].modules() if type(m).__name__.endswith("Attention") and hasattr(m, "dropout")]
    assert layers and {layer.dropout for layer in layers} == {0.0} == {objects["model"].config.attention_dropout}
    if summarization:
        assert {"val/rougeLsum", "test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum"} <= metrics.keys()
    else:
        assert {"val/f1_macro", "val/f1_micro", "val/acc", "test/f1_macro"} <= metrics.keys()
        expected = "multi_label_classification" if command == "eurlex_cls" else "single_label_classification"
        assert objects["model"].config.problem_type == expected


def test_arxiv_pretrain_continues_pretraining_the_lsg_checkpoint_from_local_copies(make_cfg, hub_standins):
    cfg = make_cfg(
        "experiment=arxiv_pretrain",
        f"model.pretrained={hub_standins[LSG]}",
        f"data.dataset_name={hub_standins['ccdv/arxiv-summarization']}",
        *ON_THIS_MACHINE,
        "module.generation.max_new_tokens=12",
        fast=False,
    )
    assert cfg.data.max_source_length == 4096 and cfg.data.objective.stochastic  # Pegasus-large's objective, 4k
    metrics, objects = train(cfg)
    datamodule = objects["datamodule"]
    assert type(datamodule).__name__ == "GapSentenceDataModule" and set(datamodule.raw) == {"train", "val"}
    assert datamodule.tokenizer.get_vocab() == pegasus_vocabulary(hub_standins[LSG] / "spiece.model")
    assert objects["trainer"].global_step == 1 and metrics["train/loss"] > 0 and "val/rougeLsum" in metrics


@pytest.mark.parametrize("experiment", ["aclsum_sum", "aclsum_venue_cls", "aclsum_pretrain"])
def test_embedded_experiment_runs_fast_dev_run(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", "debug=fast_dev_run", "data.max_samples=6")
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert metrics["train/loss"] > 0


@pytest.mark.parametrize("experiment", ["arxiv_sum", "pubmed_sum"])
def test_summarization_recipes_validate_on_a_sample_and_decode_as_the_paper_at_the_end(make_cfg, experiment):
    """Validation while training: every 2,000 steps, 500 papers, greedy, 256 tokens; the final scoring of the best
    checkpoint and the test keep the paper's 5 beams and 512 tokens (`module.generation`)."""
    cfg = make_cfg(f"experiment={experiment}", fast=False)
    rouge = cfg.callbacks.rouge
    assert (rouge.every_n_steps, rouge.every_n_epochs, rouge.max_samples) == (2000, None, 500)
    assert OmegaConf.to_container(rouge.val_generation) == {"num_beams": 1, "max_new_tokens": 256}
    assert (cfg.module.generation.num_beams, cfg.module.generation.max_new_tokens) == (5, 512)
    assert cfg.trainer.precision == "bf16-mixed"


@pytest.fixture(scope="module")
def short_lsg_model(hub_standins, tmp_path_factory):
    """The 4k starting point at tiny size: the LSG stand-in as a finished `arxiv_sum` run exports it after training
    at 256 tokens with 4 global tokens (256-row position tables, the tokenizer's model_max_length 256)."""
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    folder = tmp_path_factory.mktemp("lsg-256") / "hf_model"
    model = LSGPegasusForConditionalGeneration.from_pretrained(hub_standins[LSG], num_global_tokens=4)
    model.resize_position_embeddings(256)
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(hub_standins[LSG])
    tokenizer.model_max_length = tokenizer.init_kwargs["model_max_length"] = 256
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("experiment", "dataset", "global_only"),
    [("arxiv_sum_16k", "ccdv/arxiv-summarization", False), ("pubmed_sum_16k", "ccdv/pubmed-summarization", True)],
)
def test_16k_recipe_extends_a_4k_model_then_fine_tunes_and_exports_it(
    make_cfg, hub_standins, short_lsg_model, experiment, dataset, global_only
):
    """`python train.py experiment=arxiv_sum_16k model.pretrained=<4k hf_model>` at tiny size (256 -> 1,024 tokens,
    4 -> 16 globals): trained and exported with the longer tables and more globals, which it records as its trained
    length; `module.freeze.all_but_global_embeddings=true` (the card's "Global only") trains the globals alone."""
    from safetensors.torch import load_file

    from lsgtrain.modeling.factory import trained_length

    cfg = make_cfg(
        f"experiment={experiment}", f"model.pretrained={short_lsg_model}", f"data.dataset_name={hub_standins[dataset]}",
        "data.max_source_length=1024", "model.lsg.num_global_tokens=16",
        f"module.freeze.all_but_global_embeddings={str(global_only).lower()}", "data.max_samples=2",
        "trainer.limit_train_batches=2", "effective_batch_size=null", "callbacks.rouge.max_samples=null",
        "callbacks.rouge.val_generation={}", "module.generation.num_beams=2",
        *ON_THIS_MACHINE[1:], *SHORT_GENERATION, fast=False,
    )  # fmt: skip
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.module.optimizer.lr) == (1, 1, 8e-5)  # the card's
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2 and "test/rougeLsum" in metrics
    export = Path(cfg.paths.output_dir) / "hf_model"
    config = json.loads((export / "config.json").read_text())
    assert (config["max_position_embeddings"], config["num_global_tokens"]) == (1024, 16)
    assert trained_length(export, config["max_position_embeddings"]) == 1024  # what eval and predict read back
    weights = load_file(export / "model.safetensors")
    start = load_file(short_lsg_model / "model.safetensors")
    assert weights["model.encoder.embed_positions.weight"].shape[0] == 1024
    frozen = torch.equal(weights["model.encoder.layers.0.fc1.weight"], start["model.encoder.layers.0.fc1.weight"])
    assert frozen == global_only
    assert not torch.equal(weights["model.encoder.global_embeddings.weight"][:16],
                           start["model.encoder.global_embeddings.weight"][:16])  # fmt: skip
    assert "1024" in (export / "README.md").read_text()  # the card names the length it was trained at
