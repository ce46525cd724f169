"""The run layer's one table of keys (`lsgtrain.run.keys`) drives the resume checks, `lsgtrain eval` and the card;
the run folder ends a run in order (issue 25)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from lsgtrain import evaluate as evaluate_module
from lsgtrain.checkpointing import changed_settings
from lsgtrain.evaluate import evaluate, user_keys, with_run_settings
from lsgtrain.model_card import portable_override
from lsgtrain.run import keys
from lsgtrain.run.folder import SUMMARY, RunFolder, RunReport
from lsgtrain.train import build, train

from .conftest import QUICK


def _settings(**trainer) -> dict:
    return {"trainer": {"precision": "32-true", "max_epochs": 10, **trainer}, "data": {"num_workers": 0}}


def test_a_resume_refuses_what_the_table_fixes_and_allows_what_it_frees(monkeypatch):
    saved = _settings()
    current = {"trainer": {"precision": "bf16-mixed", "max_epochs": 20}, "data": {"num_workers": 4}}
    assert changed_settings(saved, current) == ["trainer.precision: '32-true' in the checkpoint, 'bf16-mixed' now"]
    # one entry in the table makes a key fixed: nothing else to edit
    monkeypatch.setattr(keys, "KEYS", (*keys.KEYS, keys.Key("trainer.max_epochs", keys.FIXED, keys.OWN)))
    assert "trainer.max_epochs: 10 in the checkpoint, 20 now" in changed_settings(saved, current)


def test_an_evaluation_takes_what_the_table_says_from_the_run_unless_the_user_sets_it(make_cfg, monkeypatch):
    cfg = make_cfg("ckpt_path=x.ckpt", config_name="eval")
    run = OmegaConf.to_container(make_cfg("trainer.precision=bf16-mixed", "trainer.max_epochs=3"))
    merged = with_run_settings(cfg, run, "run/.hydra/config.yaml", source="ckpt_path=x.ckpt", user=set())
    assert merged.trainer.precision == "bf16-mixed" and merged.trainer.max_epochs == cfg.trainer.max_epochs
    assert merged.callbacks.hf_export is None  # an evaluation exports nothing, whatever the run did
    user = user_keys(["trainer.precision=32-true"])
    assert with_run_settings(cfg, run, "run/.hydra/config.yaml", source="x", user=user).trainer.precision == "32-true"
    monkeypatch.setattr(keys, "KEYS", (*keys.KEYS, keys.Key("trainer.max_epochs", keys.FREE, keys.RUN)))
    merged = with_run_settings(cfg, run, "run/.hydra/config.yaml", source="ckpt_path=x.ckpt", user=set())
    assert merged.trainer.max_epochs == 3


def test_the_user_keys_are_hydras_overrides_and_an_experiments_own_keys():
    assert user_keys(["data=arxiv_sum", "+module.generation.num_beams=4", "module/optimizer=adafactor"]) == {
        "data", "module.generation.num_beams", "module.optimizer"
    }  # fmt: skip
    chosen = user_keys(["experiment=arxiv_sum"])
    assert {"model", "data", "trainer", "data.max_source_length", "module.generation.num_beams"} <= chosen


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


@pytest.mark.parametrize("kind", ["models", "datasets"])
def test_the_card_shows_a_hub_cache_path_as_its_hub_id_of_the_kind_the_table_says(tmp_path, kind):
    """A tokenizer path is a model copy (before: looked up as a dataset, since its key starts with `data.`)."""
    snapshot = tmp_path / f"{kind}--org--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    key = "data.tokenizer.pretrained" if kind == "models" else "data.dataset_name"
    assert portable_override(f"{key}={snapshot}") == f"{key}=org/name"
    other = "data.dataset_name" if kind == "models" else "data.tokenizer.pretrained"
    assert portable_override(f"{other}={snapshot}") == f"{other}=.../abc"


class _Finisher:
    def __init__(self, folder):
        self.folder, self.seen = folder, []

    def on_run_end(self, trainer, report):
        self.seen.append(("end", (self.folder / SUMMARY).exists(), report.untested))

    def on_run_finished(self, trainer):
        self.seen.append(("finished", (self.folder / SUMMARY).exists(), None))


def test_the_run_folder_ends_a_run_card_first_summary_then_the_push(tmp_path):
    finisher = _Finisher(tmp_path / "run")
    trainer = SimpleNamespace(
        is_global_zero=True, callbacks=[finisher], checkpoint_callback=None, strategy=None, global_step=3,
        world_size=1, num_nodes=1, current_epoch=1,
    )  # fmt: skip
    with RunFolder(tmp_path / "run") as folder:
        folder.training()
        folder.finish(trainer, RunReport({}, {"val/loss": 1.0}, 2.0, resumed=False, untested="test=false"))
    assert finisher.seen == [("end", False, "test=false"), ("finished", True, None)]
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert summary["test_skipped_because"] == "test=false" and summary["global_step"] == 3
    with pytest.raises(RuntimeError, match="has finished"), RunFolder(tmp_path / "run"):
        pass
    assert (tmp_path / "run" / SUMMARY).is_file()  # a refused rerun of a finished run removes nothing


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


def test_a_refused_evaluation_leaves_no_folder(make_cfg):
    """Before, a refused `lsgtrain eval` left its `outputs/eval/runs/<time>/` (Hydra's config and log) behind."""
    cfg = make_cfg(config_name="eval")
    folder = Path(cfg.paths.output_dir)
    (folder / ".hydra").mkdir(parents=True)  # what Hydra writes before the evaluation starts
    (folder / "train.log").write_text("")
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(cfg)
    assert not folder.exists()
