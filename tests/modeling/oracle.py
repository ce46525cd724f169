"""Load a reference oracle case (`../shared/oracle/lsg_pegasus/*.npz`) into our classes."""

import json
from pathlib import Path

import numpy as np
import torch

from lsgtrain.modeling.configuration_lsg_pegasus import LSGPegasusConfig
from lsgtrain.modeling.modeling_lsg_pegasus import LSGPegasusForConditionalGeneration


def load_case(path: Path) -> dict:
    data = np.load(path)
    return {key: data[key] for key in data.files}


def state_dict_of(case: dict, prefix: str = "state_dict/") -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: torch.from_numpy(value) for key, value in case.items() if key.startswith(prefix)}


def build_model(case: dict) -> LSGPegasusForConditionalGeneration:
    config = LSGPegasusConfig.from_dict(json.loads(str(case["config_json"])))
    model = LSGPegasusForConditionalGeneration(config)
    model.load_state_dict(state_dict_of(case), strict=True)
    return model.eval()


def inputs_of(case: dict) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.from_numpy(case["input_ids"]),
        "attention_mask": torch.from_numpy(case["attention_mask"]),
        "decoder_input_ids": torch.from_numpy(case["decoder_input_ids"]),
    }
