"""The one table of config keys: what a resume may change, what an evaluation takes from the run, how the card
shows it."""

from omegaconf import OmegaConf

from lsgtrain.checkpointing import changed_settings
from lsgtrain.evaluate import user_keys, with_run_settings
from lsgtrain.run import keys


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
