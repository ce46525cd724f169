"""The CUDA path: LSG attention as one flex_attention call. flex_attention runs forward on CPU (no CPU backward), so
its outputs are checked here against the chunked path and the reference oracle; gradients and speed need a GPU
(experiments/benchmarks/gpu_benchmark.py)."""

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from lsgtrain.modeling import lsg_kernels
from lsgtrain.modeling.configuration_lsg_pegasus import SPARSITY_TYPES, LSGPegasusConfig
from lsgtrain.modeling.lsg_attention import LSGBlockAttention
from lsgtrain.modeling.lsg_kernels import check_kernel_applies, flex_applies, lsg_block_mask
from lsgtrain.modeling.lsg_layout import LSGGeometry

from .oracle import build_model, inputs_of, load_case
from .test_oracle import ATOL, CASES

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

GEOMETRIES = [(16, 16, 2, 3), (16, 8, 4, 1), (16, 16, 16, 2), (32, 16, 2, 1)]  # block, sparse block, factor, globals


@pytest.mark.parametrize(("blk", "sbs", "sf", "g"), GEOMETRIES, ids=lambda v: str(v))
@pytest.mark.parametrize("sparsity_type", SPARSITY_TYPES)
def test_flex_equals_the_chunked_path(monkeypatch, sparsity_type, blk, sbs, sf, g):
    config = LSGPegasusConfig(
        d_model=32, encoder_attention_heads=4, block_size=blk, sparse_block_size=sbs, sparsity_factor=sf,
        sparsity_type=sparsity_type, num_global_tokens=g,
    )  # fmt: skip
    attention = LSGBlockAttention(config).eval()
    generator = torch.Generator().manual_seed(0)
    t = 8 * blk
    query, key, value = (torch.randn(2, 4, g + t, 8, generator=generator) for _ in range(3))
    keep = torch.ones(2, g + t, dtype=torch.bool)
    keep[1, g + t - blk - 5 :] = False  # one local block fully padded, one partly
    torch.manual_seed(1)
    chunked, _ = attention(query, key, value, keep)  # sdpa, on CPU the custom function
    config._attn_implementation = "flex_attention"  # forward only on CPU
    calls = []
    monkeypatch.setattr(lsg_kernels, "flex_attention", _counting(lsg_kernels.flex_attention, calls))
    torch.manual_seed(1)
    flex, _ = attention(query, key, value, keep)
    assert len(calls) == 1  # one call for all blocks
    torch.testing.assert_close(flex, chunked, atol=2e-6, rtol=0)


def _counting(function, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("name", CASES)
def test_flex_kernel_matches_the_reference_oracle(oracle_dir, name):
    """The encoder on `attn_implementation="flex_attention"` (forward on CPU); the decoder's flex_attention is
    transformers' own (its CPU compile takes minutes), so only the encoder output is compared."""
    path = oracle_dir / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"{path} missing")
    case = load_case(path)
    model = build_model(case)
    model.set_attn_implementation("flex_attention")
    inputs = inputs_of(case)
    torch.manual_seed(int(case["forward_seed"]))
    with torch.no_grad():
        out = model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    expected = torch.from_numpy(case["encoder_last_hidden_state"])
    torch.testing.assert_close(out.last_hidden_state, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("blk", "sbs", "sf", "g"), GEOMETRIES, ids=lambda v: str(v))
def test_block_mask_from_the_layout_equals_the_evaluated_one(blk, sbs, sf, g):
    """The BlockMask built from block indices lists exactly the blocks that evaluating its mask on every (query, key)
    pair finds (create_block_mask), padded rows included."""
    geometry = LSGGeometry(g, blk, sbs, sf, uses_sparse_tokens=True)
    t = 8 * blk
    s_len = t // sf
    kv_len = g + (-g % blk) + t + s_len + (-s_len % blk)
    kv_keep = torch.zeros(2, 1, kv_len, dtype=torch.bool)
    kv_keep[:, :, :g] = True
    kv_keep[:, :, g + (-g % blk) :][:, :, : t + s_len] = True
    kv_keep[1, :, g + (-g % blk) + t - blk - 5 : g + (-g % blk) + t] = False  # padded tail of row 1
    ours = lsg_block_mask(geometry, kv_keep, t)
    evaluated = create_block_mask(ours.mask_mod, 2, 1, t, kv_len, device="cpu", BLOCK_SIZE=blk)
    assert torch.equal(ours.to_dense()[0], evaluated.to_dense()[0])  # unpadded row: the same blocks
    assert (ours.to_dense()[1] >= evaluated.to_dense()[1]).all()  # padded row: never a visible block missing


def test_flex_is_chosen_only_where_it_applies(tiny_config):
    usual = LSGGeometry.from_config(LSGPegasusConfig())  # 128 / 128 / 2, the real checkpoints
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert flex_applies(usual, cuda) and flex_applies(usual, cpu)
    tiny = LSGGeometry.from_config(tiny_config())
    assert not flex_applies(tiny, cuda) and flex_applies(tiny, cpu)  # block 8: no Triton tile on CUDA
    # sparse_block_size <= 0.75 * 128 / 2: the reference's short windows, which only the chunked kernels reproduce
    short_windows = LSGGeometry.from_config(LSGPegasusConfig(sparse_block_size=32, sparsity_type="pooling"))
    assert short_windows.sparse_starts is None and not flex_applies(short_windows, cpu)


def _attention_on(name, **overrides):
    values = {"d_model": 32, "encoder_attention_heads": 4, "block_size": 16, "sparse_block_size": 16}
    config = LSGPegasusConfig(**{**values, **overrides})
    config._attn_implementation = name
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 4, 1 + 64, 8, generator=generator) for _ in range(3)]
    return LSGBlockAttention(config), inputs, torch.ones(1, 65, dtype=torch.bool)


@pytest.mark.parametrize(
    ("overrides", "train", "grad", "message"),
    [
        ({"attention_dropout": 0.1}, True, False, "has no attention dropout"),
        ({"attention_dropout": 0.0}, True, True, "has no backward on cpu"),
        ({"sparse_block_size": 4, "sparsity_type": "pooling"}, False, False, "cannot express"),
    ],
    ids=["dropout", "cpu-backward", "short-sparse-windows"],
)
def test_a_forced_flex_kernel_that_cannot_apply_is_an_error_naming_the_alternatives(overrides, train, grad, message):
    attention, inputs, keep = _attention_on("flex_attention", **overrides)
    attention.train(train)
    for tensor in inputs:
        tensor.requires_grad_(grad)
    with pytest.raises(ValueError, match=message) as error:
        attention(*inputs, keep)
    assert "attn_implementation='sdpa'" in str(error.value) and "'eager'" in str(error.value)


def test_flex_evaluation_with_a_checkpoints_attention_dropout_runs():
    """Checkpoints carry attention_dropout=0.1; in eval mode (no dropout) a forced flex kernel applies."""
    attention, inputs, keep = _attention_on("flex_attention", attention_dropout=0.1)
    check_kernel_applies("flex_attention", attention.geometry, 0.0, inputs[0])
    with torch.no_grad():
        assert torch.isfinite(attention.eval()(*inputs, keep)[0]).all()


def test_an_unknown_attn_implementation_is_an_error():
    attention, inputs, keep = _attention_on("paged_attention")
    with pytest.raises(ValueError, match=r"paged_attention.*choose one of"):
        attention(*inputs, keep)
