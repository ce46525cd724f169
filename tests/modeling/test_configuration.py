import json

import pytest

from lsgtrain.modeling.configuration_lsg_pegasus import SPARSITY_TYPES, LSGPegasusConfig

REFERENCE_DEFAULTS = {
    "adaptive": True,
    "base_model_prefix": "lsg",
    "block_size": 128,
    "lsh_num_pre_rounds": 1,
    "mask_first_token": False,
    "num_global_tokens": 1,
    "pass_global_tokens_to_decoder": True,
    "pool_with_global": True,
    "sparse_block_size": 128,
    "sparsity_factor": 2,
    "sparsity_type": "norm",
}


def test_defaults_are_the_reference_ones():
    config = LSGPegasusConfig()
    assert {key: getattr(config, key) for key in REFERENCE_DEFAULTS} == REFERENCE_DEFAULTS
    assert config.model_type == "pegasus"


def test_reads_every_reference_config_json(oracle_dir):
    for path in sorted(oracle_dir.glob("*.npz")):
        import numpy as np

        data = np.load(path)
        key = "config_json" if "config_json" in data.files else "converted_config_json"
        raw = json.loads(str(data[key]))
        config = LSGPegasusConfig.from_dict(raw)
        for name in REFERENCE_DEFAULTS:
            expected = raw[name] if raw[name] is not None else "none"
            assert getattr(config, name) == expected, (path.name, name)


def test_round_trips_through_json(tmp_path):
    config = LSGPegasusConfig(block_size=32, sparse_block_size=16, sparsity_factor=4, sparsity_type="lsh")
    config.save_pretrained(tmp_path)
    again = LSGPegasusConfig.from_pretrained(tmp_path)
    assert (again.block_size, again.sparse_block_size, again.sparsity_factor, again.sparsity_type) == (
        32, 16, 4, "lsh",
    )  # fmt: skip


def test_none_sparsity_type_reads_as_none():
    assert LSGPegasusConfig(sparsity_type=None).sparsity_type == "none"
    assert not LSGPegasusConfig(sparsity_type=None).uses_sparse_tokens


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sparsity_type": "random"}, "sparsity_type='random' is unknown; choose one of"),
        ({"block_size": 12, "sparsity_factor": 4}, r"block_size // sparsity_factor = 12 // 4 = 3 is odd"),
        ({"block_size": 6, "sparsity_factor": 2}, r"valid sparsity_factor values for block_size=6: \[1, 3, 6\]"),
        ({"block_size": 8, "sparsity_factor": 3}, r"block_size \(8\) must be a multiple of sparsity_factor \(3\)"),
        ({"block_size": 16, "sparse_block_size": 12, "sparsity_factor": 2, "sparsity_type": "norm"}, "must divide"),
        ({"num_global_tokens": 0}, r"num_global_tokens must be in \[1, 512\]"),
        ({"num_global_tokens": 600}, r"num_global_tokens must be in \[1, 512\]"),
        ({"attention_maps": "dense"}, r"attention_maps='dense' is unknown; choose one of \('square', 'blocks'\)"),
    ],
)
def test_impossible_parameters_raise_naming_the_key(overrides, message):
    with pytest.raises(Exception, match=message):
        LSGPegasusConfig(**overrides)


def test_sparse_checks_only_apply_when_sparse_attention_is_on():
    LSGPegasusConfig(block_size=12, sparsity_factor=4, sparsity_type="none")
    LSGPegasusConfig(block_size=8, sparse_block_size=0, sparsity_factor=3)


def test_step_one_is_valid():
    LSGPegasusConfig(block_size=4, sparse_block_size=4, sparsity_factor=4)


def test_mask_first_token_turns_on_pool_with_global():
    config = LSGPegasusConfig(mask_first_token=True, pool_with_global=False, classifier_pooling="mean")
    assert config.pool_with_global


def test_non_adaptive_length_check():
    config = LSGPegasusConfig(block_size=8, adaptive=False)
    config.check_sequence_length(16)  # short path
    config.check_sequence_length(32)
    with pytest.raises(ValueError, match=r"not a multiple of block_size \(8\) and adaptive=False"):
        config.check_sequence_length(33)


def test_all_seven_sparsity_types_are_accepted():
    assert len(SPARSITY_TYPES) == 7
    for sparsity_type in SPARSITY_TYPES:
        LSGPegasusConfig(sparsity_type=sparsity_type)


@pytest.mark.parametrize(("block_size", "factor"), [(30, 4), (32, 3), (12, 4), (16, 6)])
def test_suggested_sparsity_factors_all_validate(block_size, factor):
    from huggingface_hub.errors import StrictDataclassError

    from lsgtrain.modeling import LSGPegasusConfig

    with pytest.raises(StrictDataclassError, match="valid sparsity_factor values") as error:
        LSGPegasusConfig(block_size=block_size, sparse_block_size=block_size, sparsity_factor=factor)
    suggested = json.loads(str(error.value.__cause__).rsplit(": ", 1)[1])
    assert suggested
    for value in suggested:
        LSGPegasusConfig(block_size=block_size, sparse_block_size=block_size, sparsity_factor=value)
