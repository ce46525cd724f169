"""Each experiment runs `fast_dev_run` with its model and data pointed at local stand-ins in the same format."""

import pytest

from lsgtrain.train import train

# experiment -> (stand-in kind, text column, target column)
HUB_EXPERIMENTS = {
    "arxiv_sum": ("summarization", "article", "abstract"),
    "pubmed_sum": ("summarization", "article", "abstract"),
    "arxiv_cls": ("classification", "text", "label"),
    "eurlex_cls": ("multilabel", "text", "labels"),
}


def _files_override(files: dict[str, str]) -> str:
    return "data.data_files={" + ",".join(f"{split}:{path}" for split, path in files.items()) + "}"


@pytest.mark.parametrize("experiment", sorted(HUB_EXPERIMENTS))
def test_hub_experiment_runs_fast_dev_run_on_local_standins(make_cfg, experiment, tiny_checkpoint, standin_files):
    kind, text, target = HUB_EXPERIMENTS[experiment]
    cfg = make_cfg(
        f"experiment={experiment}",
        "debug=fast_dev_run",
        f"model.pretrained={tiny_checkpoint}",
        "data.source=files",
        _files_override(standin_files(kind, text, target)),
        "++trainer.strategy=auto",
        "trainer.precision=32-true",
        "model.gradient_checkpointing=false",
    )
    assert cfg.data.text_column == text
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert metrics["train/loss"] > 0
    if kind == "summarization":
        assert {"val/rougeLsum", "test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum"} <= metrics.keys()
    else:
        assert {"val/f1_macro", "val/f1_micro", "val/acc", "test/f1_macro"} <= metrics.keys()
        expected = "multi_label_classification" if kind == "multilabel" else "single_label_classification"
        assert objects["model"].config.problem_type == expected


@pytest.mark.parametrize("experiment", ["aclsum_sum", "aclsum_venue_cls"])
def test_embedded_experiment_runs_fast_dev_run(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", "debug=fast_dev_run", "data.max_samples=6")
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert metrics["train/loss"] > 0
