"""Every `python train.py` command of docs/training.md composes (the commands cannot rot)."""

import shlex
from pathlib import Path

import pytest
from hydra.utils import instantiate

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "training.md"
COMMANDS = [line for line in GUIDE.read_text().splitlines() if line.startswith("python train.py")]


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_composes(make_cfg, command):
    cfg = make_cfg(*shlex.split(command)[2:])
    assert instantiate(cfg.callbacks.rouge) is not None
    assert cfg.module.optimizer._target_ in ("torch.optim.AdamW", "transformers.optimization.Adafactor")


def test_the_guide_has_commands():
    assert len(COMMANDS) >= 5
