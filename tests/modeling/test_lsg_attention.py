"""Properties of the LSG attention that hold beyond the oracle cases: lsh, masking, layouts, memory."""

import dataclasses

import pytest
import torch

from lsgtrain.modeling.configuration_lsg_pegasus import SPARSITY_TYPES
from lsgtrain.modeling.lsg_attention import SparseTokenSelector
from lsgtrain.modeling.lsg_layout import LSGGeometry
from lsgtrain.modeling.modeling_lsg_pegasus import LSGPegasusForConditionalGeneration, LSGPegasusModel

from .batches import padded_batch
from .reference_layout import reference_sparse_mixing


def _encode(model, input_ids, attention_mask, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _batch(length=64, pad=13):
    return padded_batch(length, pad, seed=5)


@pytest.fixture
def lsh_model(tiny_config):
    torch.manual_seed(0)
    return LSGPegasusModel(tiny_config(sparsity_type="lsh", sparsity_factor=4, lsh_num_pre_rounds=1)).eval()


def test_lsh_shapes_and_determinism_under_a_seed(lsh_model):
    input_ids, attention_mask = _batch()
    first = _encode(lsh_model, input_ids, attention_mask, seed=1234)
    again = _encode(lsh_model, input_ids, attention_mask, seed=1234)
    other = _encode(lsh_model, input_ids, attention_mask, seed=1235)
    assert first.shape == (2, 65, 32)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)  # the buckets really are random


def test_lsh_ignores_the_content_of_padded_tokens(lsh_model):
    input_ids, attention_mask = _batch()
    changed = input_ids.clone()
    changed[1, attention_mask[1] == 0] = 77  # different padded tokens, still masked
    valid = attention_mask[1].bool()
    base = _encode(lsh_model, input_ids, attention_mask, seed=3)[1, 1:][valid]
    after = _encode(lsh_model, changed, attention_mask, seed=3)[1, 1:][valid]
    torch.testing.assert_close(base, after, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sparsity_type", ["norm", "stride", "block_stride", "pooling", "bos_pooling", "lsh"])
def test_each_sparsity_type_builds_the_sparse_tokens_the_spec_says(tiny_config, sparsity_type):
    """The selector is linear in the values, so values = identity give how each sparse token mixes the tokens;
    that must be the spec's choice for every type (lsh: a partition of each chunk's visible keys into means), and
    the sparse keys those same mixtures of the keys."""
    blk, sbs, sf = 8, 8, 4
    config = tiny_config(sparsity_type=sparsity_type, sparsity_factor=sf, lsh_num_pre_rounds=0)
    selector = SparseTokenSelector(config, LSGGeometry.from_config(config))
    generator = torch.Generator().manual_seed(0)
    n, h, t, d = 2, 4, 32, 8
    queries, keys = (torch.randn(n, h, t, d, generator=generator) for _ in range(2))
    keep = torch.ones(n, 1, t, dtype=torch.bool)
    keep[1, :, 21:] = False  # one chunk partly, two fully padded
    identity = torch.eye(t).expand(n, h, t, t)
    torch.manual_seed(0)  # lsh
    sparse_keys, mixing, sparse_keep = selector(queries, keys, identity, keep)
    assert mixing.shape == (n, h, t // sf, t) and sparse_keep.shape == (n, h, t // sf)
    if sparsity_type == "lsh":  # one round: c // sf buckets per chunk of c = 8 keys; each visible key in one bucket
        chunk = min(blk, sbs)
        chunk_of = torch.arange(t // sf) // (chunk // sf)  # [s_len], chunk of each sparse token
        assert ((mixing > 0) <= (chunk_of[:, None] == torch.arange(t) // chunk)).all()  # stays in its chunk
        assert torch.equal((mixing > 0).sum(dim=2), keep.expand(n, h, t).long())  # visible keys: one bucket each
        counts = (mixing > 0).sum(dim=-1, keepdim=True)
        torch.testing.assert_close(mixing, (mixing > 0) / (counts + 1e-8))  # bucket means
        assert torch.equal(sparse_keep, counts.squeeze(-1) > 0)
        expected = mixing
    else:
        expected = reference_sparse_mixing(sparsity_type, queries, keys, keep[:, 0], blk, sbs, sf)
        torch.testing.assert_close(mixing, expected, atol=1e-6, rtol=0)
    # Picked tokens keep their (masked) keys; the means of pooling and lsh leave the padded keys out.
    masked_keys = keys * keep[..., None] if sparsity_type in ("pooling", "lsh") else keys
    torch.testing.assert_close(sparse_keys, expected @ masked_keys, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sparsity_type", ["norm", "pooling", "lsh", "stride", "block_stride", "bos_pooling"])
def test_sparsity_factor_one_keeps_every_token(tiny_config, sparsity_type):
    """With sparsity_factor=1 the sparse sequence is the sequence itself, whatever the selector."""
    torch.manual_seed(0)
    reference = LSGPegasusModel(tiny_config(sparsity_type="norm", sparsity_factor=1)).eval()
    model = LSGPegasusModel(tiny_config(sparsity_type=sparsity_type, sparsity_factor=1)).eval()
    model.load_state_dict(reference.state_dict())
    input_ids, attention_mask = _batch()
    torch.testing.assert_close(
        _encode(model, input_ids, attention_mask), _encode(reference, input_ids, attention_mask), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(("block_size", "sparsity_factor"), [(8, 2), (16, 4), (128, 2), (4, 4), (64, 4)])
def test_sparse_windows_sit_just_outside_the_local_window(block_size, sparsity_factor):
    step = block_size // sparsity_factor
    sbs = max(step, 2)
    geometry = LSGGeometry(1, block_size, sbs, sparsity_factor, uses_sparse_tokens=True)
    n_blocks = 6
    windows = geometry.sparse_windows(n_blocks)
    assert windows.shape == (n_blocks, 2 * sbs)
    for block in range(n_blocks):
        if step == 1:  # reference: "after" starts at the block itself
            before, after = block - 1 - sbs, block
        else:  # sparse tokens of the blocks before i-1 and after i+1
            before, after = (block - 1) * step - sbs, (block + 2) * step
        expected = torch.cat([torch.arange(before, before + sbs), torch.arange(after, after + sbs)])
        expected[(expected < 0) | (expected >= n_blocks * step)] = -1
        assert torch.equal(windows[block], expected)


@pytest.mark.parametrize("sparsity_type", ["none", "norm", "pooling", "stride", "block_stride"])
def test_valid_token_outputs_do_not_depend_on_batch_padding(tiny_config, sparsity_type):
    """A row padded inside a batch gives the same valid outputs as the same row alone.

    Not for bos_pooling (the reference keeps its fully padded chunks visible) nor lsh (its buckets are random).
    """
    torch.manual_seed(0)
    model = LSGPegasusModel(tiny_config(sparsity_type=sparsity_type)).eval()
    input_ids, attention_mask = _batch(length=64, pad=16)
    batched = _encode(model, input_ids, attention_mask)[1, : 1 + 48]
    alone = _encode(model, input_ids[1:, :48], attention_mask[1:, :48])[0]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_inputs_embeds_match_input_ids(tiny_config):
    torch.manual_seed(0)
    model = LSGPegasusModel(tiny_config()).eval()
    input_ids, attention_mask = _batch(length=61)
    embeds = model.encoder.embed_tokens(input_ids) * model.encoder.embed_scale
    with torch.no_grad():
        from_ids = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        from_embeds = model.encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
    valid = attention_mask.bool()
    torch.testing.assert_close(from_ids[:, 1:][valid], from_embeds[:, 1:][valid], atol=1e-5, rtol=0)


def test_non_adaptive_length_error(tiny_config):
    model = LSGPegasusModel(tiny_config(adaptive=False)).eval()
    input_ids, attention_mask = _batch(length=61)
    with pytest.raises(ValueError, match="adaptive=False"):
        model.encoder(input_ids=input_ids, attention_mask=attention_mask)


def test_bf16_autocast_is_finite_and_close(tiny_config):
    torch.manual_seed(0)
    model = LSGPegasusForConditionalGeneration(tiny_config(init_std=0.02)).eval()
    input_ids, attention_mask = _batch()
    decoder_input_ids = torch.zeros(2, 5, dtype=torch.long)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    assert torch.isfinite(half.logits).all()
    torch.testing.assert_close(half.logits.float(), full, atol=0.05, rtol=0.05)


def test_bf16_weights_run(tiny_config):
    torch.manual_seed(0)
    model = LSGPegasusForConditionalGeneration(tiny_config()).to(torch.bfloat16).eval()
    input_ids, attention_mask = _batch()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=torch.zeros(2, 3).long())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()


# The kernels that run a backward on CPU: `sdpa` (here the custom CPU function), `eager`, and the chunked SDPA that
# `sdpa` takes on CUDA with attention dropout (no name of its own: registered for these tests only).
BACKWARD_KERNELS = ["sdpa", "eager", "chunked_sdpa"]


@pytest.fixture
def use_kernel(monkeypatch):
    """`use_kernel(config, name)` sets `config._attn_implementation`, registering the test-only `chunked_sdpa`."""
    from lsgtrain.modeling import lsg_kernels

    monkeypatch.setitem(lsg_kernels.LSG_ATTENTION_FUNCTIONS, "chunked_sdpa", lsg_kernels._chunked_sdpa_attention)

    def use(config, name):
        config._attn_implementation = name
        return config

    return use


@pytest.mark.parametrize("kernel", BACKWARD_KERNELS)
@pytest.mark.parametrize("sparsity_type", SPARSITY_TYPES)
def test_chunked_attention_equals_one_chunk_with_gradients(tiny_config, sparsity_type, kernel, use_kernel):
    """Chunks of blocks give the same outputs and gradients as one chunk, on every kernel with a backward here."""
    torch.manual_seed(0)
    config = tiny_config(sparsity_type=sparsity_type, sparsity_factor=4, encoder_layers=1, attention_dropout=0.0)
    model = LSGPegasusModel(config).train()
    use_kernel(model.config, kernel)  # after construction: transformers knows no `chunked_sdpa`
    attention = model.encoder.layers[0].self_attn
    hidden = torch.randn(2, 1 + 64, 32)
    keep = torch.ones(2, 65, dtype=torch.bool)
    keep[1, 50:] = False

    def run(chunk_tokens):
        attention.attention.geometry = dataclasses.replace(attention.attention.geometry, chunk_tokens=chunk_tokens)
        x = hidden.clone().requires_grad_()
        torch.manual_seed(1)  # lsh draws its projections
        out, _ = attention(x, keep)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), x.grad, attention.k_proj.weight.grad.clone()

    one_chunk = run(4096)
    attention.zero_grad()
    per_block = run(8)  # 8 blocks of 8 tokens -> 8 chunks
    for a, b in zip(one_chunk, per_block, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel", BACKWARD_KERNELS)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("sparsity_type", ["norm", "none", "pooling"])
def test_kernels_have_exact_gradients(tiny_config, sparsity_type, dropout, kernel, use_kernel):
    """Every kernel's gradients are those of its forward (float64 gradcheck, one seed per call), with and without
    attention dropout; the custom CPU function computes its own backward for the global rows and every chunk (with
    dropout it forms each chunk's scores itself and regenerates the dropout mask)."""
    from lsgtrain.modeling.lsg_attention import LSGBlockAttention

    config = use_kernel(tiny_config(sparsity_type=sparsity_type, attention_dropout=dropout), kernel)
    attention = LSGBlockAttention(config).train()
    attention.geometry = dataclasses.replace(attention.geometry, chunk_tokens=16)  # 2 chunks of 2 blocks
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 4, 1 + 32, 8, dtype=torch.float64, generator=generator).requires_grad_() for _ in range(3)]
    keep = torch.ones(2, 33, dtype=torch.bool)
    keep[1, 27:] = False

    def run(query, key, value):
        torch.manual_seed(0)  # the dropout masks (or the chunks' dropout seeds) are drawn from the global RNG
        return attention(query, key, value, keep)[0]

    assert torch.autograd.gradcheck(run, inputs, atol=1e-6, fast_mode=True)


def test_cpu_attention_dropout_is_random_and_unbiased(tiny_config):
    from lsgtrain.modeling.lsg_attention import LSGBlockAttention

    attention = LSGBlockAttention(tiny_config(attention_dropout=0.5))
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 4, 1 + 32, 8, generator=generator) for _ in range(3))
    keep = torch.ones(1, 33, dtype=torch.bool)
    expected, _ = attention.eval()(query, key, value, keep)
    attention.train()
    torch.manual_seed(0)
    first, _ = attention(query, key, value, keep)
    torch.manual_seed(0)
    again, _ = attention(query, key, value, keep)
    assert torch.equal(first, again) and not torch.allclose(first, expected, atol=1e-3)
    torch.manual_seed(1)
    mean = torch.stack([attention(query, key, value, keep)[0] for _ in range(400)]).mean(0)
    error = (mean - expected)[:, :, 1:].abs()  # token rows: the custom function's (inverted) dropout is unbiased
    assert error.mean() < 0.02 and error.max() < 0.15, (error.mean(), error.max())
