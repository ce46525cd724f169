"""Fixtures for training tests: composed configs, local data files, a tiny exported model folder (hub stand-ins:
tests/conftest.py)."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from lsgtrain.train import CONFIG_DIR, train

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


def assert_refused_before_data_work(cfg: DictConfig, tmp_path: Path, error: type[Exception], message: str) -> None:
    """`train(cfg)` raises `error` matching `message` before any data work: its cache folder never appears."""
    cfg.paths.cache_dir = str(tmp_path / "fresh-cache")
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (tmp_path / "fresh-cache").exists()


def _document(generator: torch.Generator, words: int) -> str:
    picks = torch.randint(len(WORDS), (words,), generator=generator).tolist()
    sentences = [" ".join(WORDS[i] for i in picks[k : k + 12]).capitalize() + "." for k in range(0, words, 12)]
    return " ".join(sentences)


@pytest.fixture(scope="session")
def standin_files(tmp_path_factory):
    """Local data files (`data.source=files`): `kind` in {summarization, classification, multilabel}.
    (The hub datasets' own layouts: the `hub_standins` fixture.)"""
    root = tmp_path_factory.mktemp("standins")

    def make(kind: str, text: str, target: str, sizes=(6, 5, 5), suffix: str = "jsonl") -> dict[str, str]:
        generator = torch.Generator().manual_seed(len(kind))
        files = {}
        for split, size in zip(("train", "val", "test"), sizes, strict=True):
            rows = []
            for i in range(size):
                row = {text: _document(generator, 150)}
                if kind == "summarization":
                    row[target] = _document(generator, 20)
                elif kind == "classification":
                    row[target] = i % 3
                else:
                    row[target] = [i % 4, (i + 1) % 4]
                rows.append(row)
            path = root / f"{kind}-{text}-{target}-{split}.{suffix}"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            files[split] = str(path)
        return files

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny LSG-Pegasus seq2seq folder as lsgtrain saves one (an exported `hf_model`: safetensors, modeling code,
    tokenizer.json). (The hub checkpoints' own layouts: the `hub_standins` fixture.)"""
    from lsgtrain.data.tokenizer import train_pegasus_tokenizer
    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-lsg-pegasus")
    generator = torch.Generator().manual_seed(0)
    tokenizer = train_pegasus_tokenizer([_document(generator, 100) for _ in range(50)], vocab_size=200)
    torch.manual_seed(0)
    config = LSGPegasusConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
        block_size=16, sparse_block_size=16, sparsity_factor=4,
    )  # fmt: skip
    LSGPegasusForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
