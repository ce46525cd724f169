"""Every `python train.py` command of docs/training.md's validation, optimizer and compile sections composes and
instantiates its ROUGE callback and optimizer (tests/test_docs.py composes every documented command)."""

import shlex
from pathlib import Path

import pytest
from hydra.utils import instantiate

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "training.md"
# From "Validation at scale" to "Compiled training": the summarization commands whose callbacks and optimizer are built.
SECTIONS = GUIDE.read_text().split("## Validation at scale", 1)[1].split("## What the code does", 1)[0]
COMMANDS = [line for line in SECTIONS.splitlines() if line.startswith("python train.py")]


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_composes(make_cfg, command):
    cfg = make_cfg(*shlex.split(command, comments=True)[2:])
    assert instantiate(cfg.callbacks.rouge) is not None
    assert cfg.module.optimizer._target_ in ("torch.optim.AdamW", "transformers.optimization.Adafactor")


def test_the_guide_has_commands():
    assert len(COMMANDS) >= 5
