"""Square encoder attention maps (the default `attention_maps="square"`): what `output_attentions=True` returns at
any length, checked against the block layout scattered by hand, and the kernels' agreement on predictions."""

import pytest
import torch

from lsgtrain.modeling import lsg_attention
from lsgtrain.modeling.lsg_attention import LSGBlockAttention
from lsgtrain.modeling.modeling_lsg_pegasus import LSGPegasusForConditionalGeneration, LSGPegasusModel

from .batches import padded_batch
from .reference_layout import reference_sparse_mixing

SCATTERED_TYPES = ["none", "norm", "pooling", "stride", "block_stride", "bos_pooling"]  # lsh: random buckets


def _inputs(g, t, seed=0):
    """Random `[n, h, g + t, d]` queries, keys, values and `keep` with row 1 padded over its last 11 tokens."""
    generator = torch.Generator().manual_seed(seed)
    query, key, value = (torch.randn(2, 4, g + t, 8, generator=generator) for _ in range(3))
    keep = torch.ones(2, g + t, dtype=torch.bool)
    keep[1, g + t - 11 :] = False
    return query, key, value, keep


def _scattered(blocks, windows, mixing, g, blk):
    """The square map `[n, h, L, L]` built from the block layout `[n, h, L, k_len + g]` by hand: each token row's
    probabilities go to the positions of its keys (a sparse key's spread over the tokens it mixes, `mixing`
    `[n, h, s_len, t]`, at the sparse positions `windows` `[n_blk, k_sparse]`); a global row takes its global keys
    and its column among the token rows."""
    n, h, length, width = blocks.shape
    t, k_len = length - g, width - g
    square = torch.zeros(n, h, length, length)
    square[:, :, :g, :g] = blocks[:, :, :g, :g]
    square[:, :, :g, g:] = blocks[:, :, g:, k_len:].transpose(-1, -2)
    for q in range(t):
        row, block = blocks[:, :, g + q], q // blk
        square[:, :, g + q, :g] = row[..., :g]
        for j in range(3 * blk):  # local window: tokens (block - 1) * blk .. (block + 2) * blk - 1
            if 0 <= (block - 1) * blk + j < t:
                square[:, :, g + q, g + (block - 1) * blk + j] += row[..., g + j]
        if windows is not None:
            for column, position in enumerate(windows[block].tolist()):
                if position >= 0:
                    square[:, :, g + q, g:] += row[..., g + 3 * blk + column, None] * mixing[:, :, position]
    return square


@pytest.mark.parametrize("t_blocks", [3, 6])
@pytest.mark.parametrize("sparsity_type", SCATTERED_TYPES)
def test_square_maps_are_the_block_probabilities_scattered(tiny_config, sparsity_type, t_blocks):
    g, blk = 2, 8
    square_attention = LSGBlockAttention(tiny_config(sparsity_type=sparsity_type, num_global_tokens=g)).eval()
    block_attention = LSGBlockAttention(
        tiny_config(sparsity_type=sparsity_type, num_global_tokens=g, attention_maps="blocks")
    ).eval()
    query, key, value, keep = _inputs(g, t_blocks * blk)
    square_context, square = square_attention(query, key, value, keep, output_attentions=True)
    block_context, blocks = block_attention(query, key, value, keep, output_attentions=True)
    geometry = square_attention.geometry
    windows = geometry.sparse_windows(t_blocks) if geometry.uses_sparse_tokens else None
    mixing = None
    if windows is not None:
        mixing = reference_sparse_mixing(
            sparsity_type, query[:, :, g:], key[:, :, g:], keep[:, g:], blk, geometry.sparse_block_size,
            geometry.sparsity_factor,
        )  # fmt: skip
    assert square.shape == (2, 4, g + t_blocks * blk, g + t_blocks * blk)
    torch.testing.assert_close(square, _scattered(blocks, windows, mixing, g, blk), atol=1e-6, rtol=0)
    torch.testing.assert_close(square_context, block_context, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sparsity_type", [*SCATTERED_TYPES, "lsh"])
def test_square_maps_rows_sum_to_one_and_times_the_values_give_the_context(tiny_config, sparsity_type):
    """Every query row is a distribution over the positions, padded keys get 0 (except bos_pooling's quirk: fully
    padded chunks stay visible), and `maps @ V` is the context the layer computes."""
    g, t = 2, 48
    attention = LSGBlockAttention(tiny_config(sparsity_type=sparsity_type, num_global_tokens=g)).eval()
    query, key, value, keep = _inputs(g, t)
    torch.manual_seed(0)
    context, maps = attention(query, key, value, keep, output_attentions=True)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, g + t))
    torch.testing.assert_close(maps @ value, context, atol=1e-5, rtol=0)
    if sparsity_type != "bos_pooling":
        assert (maps[1, :, :, ~keep[1]] == 0).all()
    torch.manual_seed(0)
    fused, _ = attention(query, key, value, keep)  # the sdpa kernel, no maps
    torch.testing.assert_close(context, fused, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [13, 37, 64])  # full attention; adaptive padding 37 -> 40; 8 blocks
@pytest.mark.parametrize("pass_globals", [True, False])
def test_encoder_maps_are_square_over_the_positions_at_every_length(tiny_config, length, pass_globals):
    """A row per position of the hidden states (globals, if kept, then the tokens given), a column per position
    `[globals | tokens given]`: `[n, h, g + t, g + t]` with the globals kept; no adaptive padding."""
    g = 2
    config = tiny_config(num_global_tokens=g, pass_global_tokens_to_decoder=pass_globals)
    torch.manual_seed(0)
    model = LSGPegasusModel(config).eval()
    input_ids, attention_mask = padded_batch(length, 5)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :3],
                    output_attentions=True)  # fmt: skip
    rows = g + length if pass_globals else length
    assert len(out.encoder_attentions) == config.encoder_layers
    for maps in out.encoder_attentions:
        assert maps.shape == (2, 4, rows, g + length)
        torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, rows))
        assert (maps[1, :, :, g + length - 5 :] == 0).all()  # row 1's padding


def test_square_maps_above_the_memory_bound_are_an_error_naming_the_option(tiny_config, monkeypatch):
    monkeypatch.setattr(lsg_attention, "SQUARE_MAPS_MAX_ELEMENTS", 2 * 4 * 49 * 49 - 1)
    attention = LSGBlockAttention(tiny_config()).eval()
    query, key, value, keep = _inputs(1, 48)
    with pytest.raises(ValueError, match="attention_maps='blocks'"):
        attention(query, key, value, keep, output_attentions=True)
    attention.config.attention_maps = "blocks"
    assert attention(query, key, value, keep, output_attentions=True)[1].shape == (2, 4, 49, 1 + 24 + 16 + 1)


def test_eager_and_sdpa_give_the_same_predictions(tiny_config):
    """`attn_implementation` changes the kernels only: the same logits, and the same greedy and beam outputs."""
    torch.manual_seed(0)
    model = LSGPegasusForConditionalGeneration(tiny_config(sparsity_type="norm")).eval()
    input_ids, attention_mask = padded_batch(61, 9)
    results = {}
    for name in ("sdpa", "eager"):
        model.set_attn_implementation(name)
        assert model.model.encoder.layers[0].self_attn.attention.config._attn_implementation == name
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :4])
        generated = [
            model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, num_beams=beams)
            for beams in (1, 3)
        ]
        results[name] = logits.logits, generated
    torch.testing.assert_close(results["eager"][0], results["sdpa"][0], atol=1e-5, rtol=0)
    for eager, sdpa in zip(results["eager"][1], results["sdpa"][1], strict=True):
        assert torch.equal(eager, sdpa)
