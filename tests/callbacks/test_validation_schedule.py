"""Validation at scale: ROUGE every N optimizer steps on a fixed validation sample with its own decoding, the best
checkpoint on the whole split, the schedule across a resume and for classification."""

import json
from pathlib import Path

import pytest
from lightning import Callback

from lsgtrain.train import build, train

from ..helpers import QUICK

STEPS = ["callbacks.rouge.every_n_steps=2", "callbacks.rouge.every_n_epochs=null"]


class ValidationRecorder(Callback):
    """The optimizer step of every validation during fit."""

    def __init__(self):
        self.steps: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _score(rows: list[dict]) -> dict[str, float]:
    from lsgtrain.metrics.rouge import compute_rouge

    return compute_rouge([r["prediction"] for r in rows], [r["reference"] for r in rows])


def test_rouge_every_n_steps_on_a_fixed_sample_then_the_best_on_the_whole_split(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(
        *QUICK, *STEPS, "callbacks.rouge.max_samples=2", "trainer.limit_train_batches=4", "data.max_samples=8",
        "+callbacks.rouge.val_generation.max_new_tokens=2",
    )  # fmt: skip
    objects = build(cfg)
    recorder = ValidationRecorder()
    objects["trainer"].callbacks.append(recorder)
    new_tokens: list[int] = []
    model = objects["module"].model
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: new_tokens.append(kw["max_new_tokens"]) or generate(**kw))
    monkeypatch.setattr("lsgtrain.train.build", lambda cfg: objects)
    metrics, _ = train(cfg)
    predictions = tmp_path / "run" / "predictions"
    assert recorder.steps == [2, 4]  # every 2 optimizer steps (4 is also the epoch end: one validation)
    sampled = [_rows(predictions / f"val_step{step}.jsonl") for step in (2, 4)]
    assert [len(rows) for rows in sampled] == [2, 2]
    assert [r["id"] for r in sampled[0]] == [r["id"] for r in sampled[1]]  # the same fixed sample each time
    whole = _rows(predictions / "val.jsonl")  # after fit: the best checkpoint on all 8 validation documents
    assert len(whole) == 8 and metrics["val/rougeLsum"] == pytest.approx(_score(whole)["rougeLsum"])
    # training validation decoded with callbacks.rouge.val_generation, the final scoring with module.generation
    assert set(new_tokens[:2]) == {2} and set(new_tokens[2:]) == {8}  # make_cfg: 8
    best = objects["trainer"].checkpoint_callback.best_model_path
    assert "step2" in best or "step4" in best  # chosen among the step validations


def test_a_mid_epoch_resume_continues_the_step_schedule(make_cfg, tmp_path):
    """Stopped at step 3 (the step checkpoint of step 3), then resumed: validations at 2, 4, 6, each once."""
    common = [*QUICK, *STEPS, "trainer.limit_train_batches=6", "data.max_samples=12",
              "callbacks.step_checkpoint.every_n_train_steps=1"]  # fmt: skip
    first = build(make_cfg(*common, "+trainer.max_steps=3"))
    before = ValidationRecorder()
    first["trainer"].callbacks.append(before)
    first["trainer"].fit(first["module"], datamodule=first["datamodule"])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert first["trainer"].global_step == 3 and last.is_file()

    second = build(make_cfg(*common))
    after = ValidationRecorder()
    second["trainer"].callbacks.append(after)
    second["trainer"].fit(second["module"], datamodule=second["datamodule"], ckpt_path=str(last), weights_only=True)
    assert second["trainer"].global_step == 6
    assert before.steps + after.steps == [2, 4, 6]


def test_classification_validates_on_the_same_step_schedule(make_cfg):
    objects = build(make_cfg("experiment=aclsum_venue_cls", "data.max_samples=10", "trainer.max_epochs=2",
                             "trainer.limit_train_batches=3", "callbacks.validation.every_n_steps=2",
                             "callbacks.hf_export=null", "test=false"))  # fmt: skip
    recorder = ValidationRecorder()
    objects["trainer"].callbacks.append(recorder)
    objects["trainer"].fit(objects["module"], datamodule=objects["datamodule"])
    assert recorder.steps == [2, 3, 4, 6]  # steps 2, 4, 6 and the end of epoch 0 (step 3; epoch 1 ends at 6)


def test_rouge_schedule_needs_epochs_or_steps(make_cfg):
    with pytest.raises(ValueError, match=r"callbacks.rouge.every_n_epochs and callbacks.rouge.every_n_steps"):
        build(make_cfg(*QUICK, "callbacks.rouge.every_n_epochs=null"))
