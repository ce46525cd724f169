"""Shared fixtures: offline hub, the shared reference oracle, tiny LSG-Pegasus configs, hub stand-ins."""

import importlib.util
import os
from pathlib import Path

import pytest

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
