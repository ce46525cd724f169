"""Every experiment of docs/training.md runs `fast_dev_run` on the tiny hub stand-ins (experiments/hub_standins.py), and
the embedded ones on the package's own model."""

import pytest
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
