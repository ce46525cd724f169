"""Shared fixtures: offline hub, the shared reference oracle, tiny LSG-Pegasus configs, hub stand-ins."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lsgtrain.train import CONFIG_DIR, train

from .helpers import FAST, GENERATION, ONE_EPOCH, REPO, TINY_INIT, WORDS, FakeHub

# `../shared` beside the repository root (LSG_SHARED_DIR overrides it).
SHARED_DIR = Path(os.environ.get("LSG_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))
ORACLE_DIR = SHARED_DIR / "oracle" / "lsg_pegasus"
STANDINS_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "hub_standins.py"


def load_hub_standins_module():
    """`experiments/hub_standins.py` (a script, not a package module), imported by path."""
    spec = importlib.util.spec_from_file_location("hub_standins", STANDINS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def hub_standins(tmp_path_factory) -> dict[str, Path]:
    """Tiny offline copies of the hub repositories the experiments use, in their real layouts
    (`experiments/hub_standins.py`): hub name (`google/pegasus-large`, `ccdv/arxiv-summarization`, ...) -> folder."""
    return load_hub_standins_module().build_standins(tmp_path_factory.mktemp("hub"), size="tiny")


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    """`../shared/oracle/lsg_pegasus` beside the project root; tests using it skip where it is absent."""
    if not ORACLE_DIR.is_dir():
        pytest.skip(f"reference oracle not found at {ORACLE_DIR} (it ships beside the repo, not in it)")
    return ORACLE_DIR


@pytest.fixture
def tiny_config():
    """Factory for a tiny LSG-Pegasus config (vocab 128, d_model 32, 2 layers, 4 heads, block 8)."""
    from lsgtrain.modeling.configuration_lsg_pegasus import LSGPegasusConfig

    def make(**overrides) -> LSGPegasusConfig:
        values = dict(
            vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
            scale_embedding=True, init_std=0.2, dropout=0.0, block_size=8, sparse_block_size=8,
            sparsity_factor=2, sparsity_type="norm",
        )  # fmt: skip
        values.update(overrides)
        return LSGPegasusConfig(**values)

    return make


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A two-node SLURM cluster on this machine (tests/slurm/cluster.py) for the session; tests using it skip where it
    cannot start (no root, packages missing) and say why."""
    from .slurm.cluster import ClusterUnavailable, LocalSlurmCluster

    cluster = LocalSlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as error:
        pytest.skip(f"no local SLURM cluster: {error}")
    yield cluster
    cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With LSGTRAIN_FORBID_SKIPS=1 (set by .ci/run) a skipped test fails: CI must run everything."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LSGTRAIN_FORBID_SKIPS") == "1" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} was skipped ({report.longrepr}); LSGTRAIN_FORBID_SKIPS=1 forbids skips"


def _document(generator: torch.Generator, words: int) -> str:
    picks = torch.randint(len(WORDS), (words,), generator=generator).tolist()
    sentences = [" ".join(WORDS[i] for i in picks[k : k + 12]).capitalize() + "." for k in range(0, words, 12)]
    return " ".join(sentences)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, cache_dir):
    """One tiny summarization run started as `python train.py OVERRIDES` is (Hydra's config set, so the card can
    name the command), with umask 022 and `push_to_hub` to a stand-in hub."""
    root = tmp_path_factory.mktemp("export")
    overrides = [
        *FAST, *TINY_INIT, *ONE_EPOCH, "callbacks.rouge.every_n_epochs=1", *GENERATION,
        f"callbacks.hf_export.push_to_hub.repo_id={REPO}", f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}", f"paths.cache_dir={cache_dir}",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            fake_hub = FakeHub().install(monkeypatch)
            metrics, objects = train(cfg)
    finally:
        os.umask(umask)
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    return {"metrics": metrics, "objects": objects, "export": root / "run" / "hf_model", "hub": fake_hub,
            "overrides": overrides}  # fmt: skip


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
