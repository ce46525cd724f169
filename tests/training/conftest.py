"""Fixtures for training tests: composed configs (hub stand-ins: tests/conftest.py)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from lsgtrain.train import CONFIG_DIR

# Small and fast everywhere: short documents, few generated tokens, tiny model, no experiment logger.
FAST = [
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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """Compose `conf/train.yaml` (or `eval.yaml`) with overrides; paths point into the test's tmp_path."""

    def make(*overrides: str, config_name: str = "train", fast: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        extra = [*FAST, *TINY_INIT] if fast else []
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[*extra, *overrides], return_hydra_config=False)
        with open_dict(cfg):
            if fast and "generation" in cfg.module:  # summarization: short greedy generation
                cfg.module.generation.max_new_tokens = 8
                cfg.module.generation.num_beams = 1
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.cache_dir = str(cache_dir)
        return cfg

    yield make
    GlobalHydra.instance().clear()
