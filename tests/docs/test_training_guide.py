"""Every `python train.py` command of docs/training.md's validation, optimizer and compile sections builds what it sets:
its ROUGE callback holds the command's `callbacks.rouge.*` values, its optimizer is the configured class with the
configured settings. (That every documented command composes: tests/docs/test_docs.py.)"""

import shlex
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "training.md"


# From "Validation at scale" to "Compiled training": the summarization commands whose callbacks and optimizer are built.
SECTIONS = GUIDE.read_text().split("## Validation at scale", 1)[1].split("## What the code does", 1)[0]


COMMANDS = [line for line in SECTIONS.splitlines() if line.startswith("python train.py")]


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_builds_what_it_sets(make_cfg, command):
    overrides = shlex.split(command, comments=True)[2:]
    cfg = make_cfg(*overrides)
    rouge = instantiate(cfg.callbacks.rouge)
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        if key.startswith("callbacks.rouge."):  # `val_generation.num_beams`: a key of the `val_generation` dict
            attribute, *inner = key.removeprefix("callbacks.rouge.").split(".")
            held = getattr(rouge, attribute)
            assert (held[inner[0]] if inner else held) == yaml.safe_load(value), override
    optimizer = instantiate(cfg.module.optimizer)([torch.nn.Parameter(torch.zeros(2, 2))])
    assert type(optimizer) is get_class(cfg.module.optimizer._target_)
    settings = OmegaConf.to_container(cfg.module.optimizer)
    for key, expected in settings.items():
        if not key.startswith("_"):
            held = optimizer.defaults[key]
            assert (list(held) if isinstance(held, tuple) else held) == expected, f"module.optimizer.{key}"


def test_the_guide_has_commands():
    assert len(COMMANDS) >= 5
