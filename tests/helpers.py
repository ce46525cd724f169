"""Helpers the test packages share (overrides that keep runs small, a finished run, a stand-in hub); the shared fixtures
are in tests/conftest.py."""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError
from omegaconf import DictConfig

from lsgtrain import hub
from lsgtrain.train import train

SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "data.max_samples=8",
    "callbacks.rouge.every_n_epochs=1",
]


def finished_run(make_cfg, tmp_path, *overrides: str) -> Path:
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null", *overrides))
    return tmp_path / "run"


def data_files_override(files: dict) -> str:
    return "data.data_files={" + ",".join(f"{split}:{path}" for split, path in files.items()) + "}"


def tokenizer_vocab(folder: Path) -> dict:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


# Small and fast everywhere: short documents, few generated tokens, tiny model, no experiment logger.
FAST = [
    "model.pretrained=null",  # the tiny model from random weights, not the embedded pretrained one
    "data.max_source_length=256",
    "data.batch_size=2",
    "data.eval_batch_size=4",
    "data.tokenizer.vocab_size=600",
    "model.lsg.block_size=16",
    "model.lsg.sparse_block_size=16",
    "model.lsg.sparsity_factor=4",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
]


TINY_INIT = [
    "++model.init.d_model=32",
    "++model.init.encoder_ffn_dim=64",
    "++model.init.decoder_ffn_dim=64",
]


# A whole run in seconds: one short epoch, ROUGE on 4 generated tokens, nothing exported.
QUICK = [
    *FAST, *TINY_INIT, "data.max_samples=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "callbacks.rouge.every_n_epochs=1", "test=false", "callbacks.hf_export=null",
    "++module.generation.max_new_tokens=4", "++module.generation.num_beams=1",
]  # fmt: skip


WORDS = "long documents need sparse attention so global tokens summarise every block of text".split()


def assert_refused_before_data_work(cfg: DictConfig, tmp_path: Path, error: type[Exception], message: str) -> None:
    """`train(cfg)` raises `error` matching `message` before any data work: its cache folder never appears."""
    cfg.paths.cache_dir = str(tmp_path / "fresh-cache")
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (tmp_path / "fresh-cache").exists()


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


ONE_EPOCH = ["data.max_samples=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]


REPO = "someone/lsg-pegasus-aclsum"


# The run's test decoding: 3 beams, exactly 6 new tokens, no repeated bigram, a length penalty; validation during
# training decodes greedily, 2 tokens (callbacks.rouge.val_generation), which the export must not take.
GENERATION = [
    "module.generation.num_beams=3", "module.generation.max_new_tokens=6", "++module.generation.min_new_tokens=6",
    "module.generation.no_repeat_ngram_size=2", "module.generation.length_penalty=2.0",
    "+callbacks.rouge.val_generation.num_beams=1", "+callbacks.rouge.val_generation.max_new_tokens=2",
    "+callbacks.rouge.val_generation.min_new_tokens=1",
]  # fmt: skip


ROOT = Path(__file__).resolve().parents[1]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}


PRETRAIN = ["experiment=aclsum_pretrain", "data.max_source_length=128", "data.max_target_length=32",
            "data.max_samples=6", "data.tokenizer.vocab_size=600", "data.max_windows=null"]  # fmt: skip


def objects_vocab(folder) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


def recorded_train_command(tmp_path: Path, run_name: str, every_n_train_steps: int) -> tuple[list[str], Path]:
    """A `python train.py` subprocess command of 2 epochs x 4 steps that records each optimizer step (slowed to
    0.7 s, so a signal or a kill lands mid-run) to the returned jsonl file, and writes `last.ckpt` every N steps."""
    steps_file = tmp_path / "steps.jsonl"
    command = [
        sys.executable, "train.py", *FAST, *TINY_INIT, f"run_name={run_name}", "data.max_samples=8",
        "trainer.max_epochs=2", "trainer.limit_train_batches=4", "callbacks.rouge.every_n_epochs=100",
        "callbacks.hf_export=null", "test=false",
        f"callbacks.step_checkpoint.every_n_train_steps={every_n_train_steps}",
        f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        "+callbacks.step_recorder._target_=tests.slurm.step_recorder.StepRecorder",
        f"+callbacks.step_recorder.path={steps_file}", "+callbacks.step_recorder.delay_s=0.7",
    ]  # fmt: skip
    return command, steps_file
