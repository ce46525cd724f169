"""The contract transformers' common model tests check for every model, checked here for every LSG-Pegasus class:
return_dict both ways, hidden states and attentions (shapes, trimming), embeddings and position tables, save/load,
gradient checkpointing, generation modes with their optional outputs, torch.compile; and reference configurations
beyond the oracle files."""

import itertools
import logging

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from lsgtrain.modeling.configuration_lsg_pegasus import SPARSITY_TYPES, LSGPegasusConfig
from lsgtrain.modeling.lsg_attention import LSGBlockAttention
from lsgtrain.modeling.modeling_lsg_pegasus import (
    LSGPegasusEncoderModel,
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
    LSGPegasusModel,
)

from .batches import padded_batch
from .reference_layout import reference_lsg_attention

# Lengths (block 8): short path (full attention), adaptive padding 37 -> 40, exact multiple.
LENGTHS = [13, 37, 64]
GLOBAL_OUTPUTS = [(True, True), (False, True), (False, False)]  # pass_global_tokens_to_decoder, pool_with_global


def _build(model_class, config):
    torch.manual_seed(0)
    return model_class(config).eval()


def _call(model, input_ids, attention_mask, **kwargs):
    if isinstance(getattr(model, "_orig_mod", model), (LSGPegasusModel, LSGPegasusForConditionalGeneration)):
        kwargs.setdefault("decoder_input_ids", torch.tensor([[0, 5, 6, 7]] * input_ids.shape[0]))
        kwargs.setdefault("use_cache", False)  # outputs hold tensors only
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


ALL_CLASSES = [LSGPegasusModel, LSGPegasusForConditionalGeneration, LSGPegasusForSequenceClassification]


# --- configuration checks belong to the class that reads the key --------------------------------------------------


def test_seq2seq_config_without_globals_in_the_output_loads_and_runs(tiny_config, tmp_path):
    """A valid reference seq2seq config: globals dropped, token 0 not overwritten (the classifier's check used to
    refuse it for every class)."""
    config = tiny_config(pass_global_tokens_to_decoder=False, pool_with_global=False)
    model = _build(LSGPegasusForConditionalGeneration, config)
    model.save_pretrained(tmp_path)
    again = LSGPegasusForConditionalGeneration.from_pretrained(tmp_path).eval()
    input_ids, attention_mask = padded_batch(37, 10)
    out = _call(again, input_ids, attention_mask)
    assert out.encoder_last_hidden_state.shape == (2, 37, 32)
    assert torch.equal(out.logits, _call(model, input_ids, attention_mask).logits)
    _call(_build(LSGPegasusModel, config), input_ids, attention_mask)


def test_classifier_pooling_is_checked_by_the_classifier(tiny_config):
    no_global = tiny_config(pass_global_tokens_to_decoder=False, pool_with_global=False)
    with pytest.raises(ValueError, match="classifier_pooling='global' needs the global token"):
        LSGPegasusForSequenceClassification(no_global)
    LSGPegasusForSequenceClassification(tiny_config(pass_global_tokens_to_decoder=False, classifier_pooling="mean"))
    unknown = tiny_config(classifier_pooling="max")
    with pytest.raises(ValueError, match="classifier_pooling='max' is unknown"):
        LSGPegasusForSequenceClassification(unknown)
    LSGPegasusForConditionalGeneration(unknown)  # the seq2seq model never reads the key


# --- return_dict -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [*ALL_CLASSES, LSGPegasusEncoderModel])
def test_return_dict_false_gives_the_same_values_as_a_tuple(tiny_config, model_class):
    model = _build(model_class, tiny_config(num_labels=3))
    input_ids, attention_mask = padded_batch(37, 10)
    kwargs = {"output_hidden_states": True, "output_attentions": True}
    if model_class is LSGPegasusForSequenceClassification:
        kwargs["labels"] = torch.tensor([0, 2])
    as_dict = _call(model, input_ids, attention_mask, **kwargs)
    as_tuple = _call(model, input_ids, attention_mask, return_dict=False, **kwargs)
    assert isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected)
    for a, b in zip(as_tuple, expected, strict=True):
        for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b), strict=True):
            assert torch.equal(x, y)
    if model_class is LSGPegasusForSequenceClassification:
        loss, logits = as_tuple[:2]
        assert loss.ndim == 0 and logits.shape == (2, 3)


@pytest.mark.parametrize("model_class", [LSGPegasusModel, LSGPegasusForSequenceClassification])
def test_config_return_dict_false_is_honoured(tiny_config, model_class):
    """(PegasusForConditionalGeneration's own forward breaks on a config with return_dict=False in transformers
    5.24, and our seq2seq class runs that forward; passing return_dict=False works, tested above.)"""
    model = _build(model_class, tiny_config(num_labels=2, return_dict=False))
    out = _call(model, *padded_batch(37, 3))
    assert isinstance(out, tuple) and torch.is_tensor(out[0])


# --- hidden states and attentions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize(("pass_globals", "pool"), GLOBAL_OUTPUTS)
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_hidden_states_are_trimmed_like_the_output(tiny_config, model_class, pass_globals, pool, length):
    config = tiny_config(
        pass_global_tokens_to_decoder=pass_globals, pool_with_global=pool, num_global_tokens=2,
        classifier_pooling="mean",
    )  # fmt: skip
    model = _build(model_class, config)
    input_ids, attention_mask = padded_batch(length, 5)
    out = _call(model, input_ids, attention_mask, output_hidden_states=True)
    hidden = out.encoder_hidden_states if hasattr(out, "encoder_hidden_states") else out.hidden_states
    expected_length = length + (2 if pass_globals else 0)
    assert len(hidden) == config.encoder_layers + 1
    assert all(h.shape == (2, expected_length, 32) for h in hidden)
    if hasattr(out, "encoder_last_hidden_state"):
        assert torch.equal(hidden[-1], out.encoder_last_hidden_state)
    # The embeddings (first entry) are those of the tokens given, at their positions, without the padding.
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.model.encoder
    embeddings = encoder.embed_tokens(input_ids) * encoder.embed_scale + encoder.embed_positions(input_ids.shape)
    torch.testing.assert_close(hidden[0][:, expected_length - length :], embeddings)


@pytest.mark.parametrize("sparsity_type", SPARSITY_TYPES)
@pytest.mark.parametrize("length", LENGTHS)
def test_block_maps_rows_sum_to_one_and_masked_keys_get_zero(tiny_config, sparsity_type, length):
    """`attention_maps="blocks"`: a row per position of the hidden states (globals included); every query's
    probabilities sum to one: a token row over its own keys, a global query over the global keys of its row plus its
    column among the tokens. (Square maps: test_attention_maps.py.)"""
    config = tiny_config(num_global_tokens=2, sparsity_type=sparsity_type, attention_maps="blocks")
    model = _build(LSGPegasusForConditionalGeneration, config)
    input_ids, attention_mask = padded_batch(length, 5)
    torch.manual_seed(1)  # lsh
    out = _call(model, input_ids, attention_mask, output_attentions=True, output_hidden_states=True)
    g, blk, h = 2, config.block_size, config.encoder_attention_heads
    sparse_keys = 2 * config.sparse_block_size if sparsity_type != "none" else 0
    k_len = g + 3 * blk + sparse_keys
    assert len(out.encoder_attentions) == config.encoder_layers
    for weights in out.encoder_attentions:
        assert (weights >= 0).all()
        if length <= 2 * blk:  # dense: [globals | tokens] on both axes
            assert weights.shape == (2, h, g + length, g + length)
            torch.testing.assert_close(weights.sum(-1), torch.ones(2, h, g + length))
        else:  # blocks: token rows [own k_len keys | given by each global], global rows [global keys | zeros]
            assert weights.shape == (2, h, g + length, k_len + g)
            torch.testing.assert_close(weights[:, :, g:, :k_len].sum(-1), torch.ones(2, h, length))
            global_sums = weights[:, :, :g, :g].sum(-1) + weights[:, :, g:, k_len:].sum(-2)  # [2, h, g]
            torch.testing.assert_close(global_sums, torch.ones(2, h, g))
            assert (weights[:, :, :g, g:] == 0).all()
    if length <= 2 * blk:  # row 1's padded tokens get exactly 0
        assert (out.encoder_attentions[0][1, :, :, g + length - 5 :] == 0).all()
    else:  # local window of the first block starts one block before the sequence: masked
        assert (out.encoder_attentions[0][:, :, g : g + blk, g : g + blk] == 0).all()
        assert (out.encoder_attentions[0][1, :, g + length - 5 :, k_len:] == 0).all()  # globals skip the padding
    # The eager path that materialises the weights computes the same encoder as the fused one.
    torch.manual_seed(1)
    fused = _call(model, input_ids, attention_mask, output_hidden_states=True)
    torch.testing.assert_close(out.encoder_last_hidden_state, fused.encoder_last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, fused.logits, atol=1e-5, rtol=0)


def test_block_maps_follow_the_documented_layout(tiny_config):
    """`attention_maps="blocks"`, row of token q in block b: `[globals | tokens (b-1)*blk .. (b+2)*blk | sparse |
    given by each global]`, and a global row `[global keys | zeros]`, checked for sparsity 'none' against softmaxes
    computed by hand from the layer's own projections."""
    config = tiny_config(sparsity_type="none", encoder_layers=1, num_global_tokens=2, attention_maps="blocks")
    model = _build(LSGPegasusModel, config)
    input_ids, attention_mask = padded_batch(64, 5)  # row 1's padding starts at 59
    out = _call(model, input_ids, attention_mask, output_attentions=True, output_hidden_states=True)
    layer = model.encoder.layers[0]
    x = layer.self_attn_layer_norm(out.encoder_hidden_states[0][1])  # [g + t, D] of row 1

    def heads(projection):
        return projection(x).view(-1, 4, 8).transpose(0, 1)  # [h, g + t, d]

    query, key = heads(layer.self_attn.q_proj), heads(layer.self_attn.k_proj)
    maps = out.encoder_attentions[0][1]  # [h, g + t, k_len + g], k_len = 2 + 24
    token = 21  # in block 2 (block 8): local window = tokens 8..31, all visible
    keys = [0, 1, *range(2 + 8, 2 + 32)]  # globals, then the window
    scores = query[:, 2 + token, None] @ key[:, keys].transpose(-1, -2) / 8**0.5  # [h, 1, g + 3*blk]
    torch.testing.assert_close(maps[:, 2 + token, :26], torch.softmax(scores.squeeze(1), dim=-1), atol=1e-5, rtol=0)
    # Global query 1 over every key [globals | tokens], padding (59..63) hidden.
    scores = (query[:, 1, None] @ key.transpose(-1, -2) / 8**0.5).squeeze(1)  # [h, g + t]
    expected = torch.softmax(scores.masked_fill(torch.arange(66) >= 2 + 59, float("-inf")), dim=-1)
    torch.testing.assert_close(maps[:, 1, :2], expected[:, :2], atol=1e-5, rtol=0)
    torch.testing.assert_close(maps[:, 2:, 26 + 1], expected[:, 2:], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("length", "layout"), [(13, "square"), (64, "square"), (64, "blocks")])
def test_encoder_attention_gradients_are_those_of_the_context(tiny_config, length, layout):
    """The maps are the tensor the context is computed from: d loss / d map[q, key] = d loss / d context[q] . v[key]
    for every entry checked, in the dense (13 tokens, full attention), the square (64) and the block layout (64),
    globals' rows included."""
    config = tiny_config(sparsity_type="none", encoder_layers=1, num_global_tokens=2, attention_maps=layout)
    model = _build(LSGPegasusEncoderModel, config)
    attention = model.encoder.layers[0].self_attn
    recorded = {}
    hooks = [
        attention.v_proj.register_forward_hook(lambda module, args, output: recorded.update(value=output)),
        attention.out_proj.register_forward_hook(lambda module, args, output: recorded.update(context=args[0])),
    ]
    input_ids, attention_mask = padded_batch(length, 5)
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    for hook in hooks:
        hook.remove()
    maps = out.attentions[0]  # [n, h, g + t, *]
    loss = (out.last_hidden_state**2).sum()
    grad_maps, grad_context = torch.autograd.grad(loss, [maps, recorded["context"]])

    def heads(x):
        return x.view(2, -1, 4, 8).transpose(1, 2)  # [n, h, g + t, d]

    products = heads(grad_context) @ heads(recorded["value"]).transpose(-1, -2)  # [n, h, query, key]
    assert grad_maps.abs().sum() > 0
    if layout == "square":
        torch.testing.assert_close(grad_maps, products, atol=1e-5, rtol=1e-4)
        return
    token, k_len = 21, 2 + 24  # token 21: block 2, local window = tokens 8..31
    keys = [0, 1, *range(2 + 8, 2 + 32)]
    own = products[:, :, 2 + token, keys]
    torch.testing.assert_close(grad_maps[:, :, 2 + token, :k_len], own, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad_maps[:, :, :2, :2], products[:, :, :2, :2], atol=1e-5, rtol=1e-4)  # global rows
    given = products[:, :, :2, 2:].transpose(-1, -2)  # global queries -> tokens, as the tokens' last columns
    torch.testing.assert_close(grad_maps[:, :, 2:, k_len:], given, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "generate_kwargs",
    [
        {"num_beams": 1, "do_sample": False},
        {"num_beams": 3, "do_sample": False},
        {"num_beams": 1, "do_sample": True, "top_k": 10},
        {"num_beams": 2, "do_sample": True, "top_k": 10},
    ],
    ids=["greedy", "beam", "sample", "beam-sample"],
)
def test_every_generation_mode_returns_its_optional_outputs(tiny_config, generate_kwargs):
    model = _build(LSGPegasusForConditionalGeneration, tiny_config())
    model.set_attn_implementation("eager")  # the decoder's attentions need eager (transformers' rule)
    input_ids, attention_mask = padded_batch(37, 10)
    torch.manual_seed(0)
    out = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=4, min_new_tokens=4, return_dict_in_generate=True,
        output_attentions=True, output_hidden_states=True, output_scores=True, **generate_kwargs,
    )  # fmt: skip
    assert out.sequences.shape == (2, 5)
    assert len(out.encoder_attentions) == 2 and out.encoder_attentions[0].shape == (2, 4, 38, 38)  # square
    assert len(out.encoder_hidden_states) == 3 and out.encoder_hidden_states[-1].shape == (2, 38, 32)
    assert len(out.scores) == 4 and len(out.decoder_attentions) == 4 and len(out.cross_attentions) == 4
    # Cross-attention sees the encoder output as trimmed: globals + the 37 tokens.
    assert out.cross_attentions[0][0].shape[-1] == 38


# --- embeddings, position tables, save/load -------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [*ALL_CLASSES, LSGPegasusEncoderModel])
def test_position_embeddings_get_and_resize(tiny_config, model_class):
    model = _build(model_class, tiny_config())
    tables = model.get_position_embeddings()
    has_decoder = model_class in (LSGPegasusModel, LSGPegasusForConditionalGeneration)
    tables = tables if has_decoder else (tables,)
    assert len(tables) == (2 if has_decoder else 1) and all(t.weight.shape == (256, 32) for t in tables)
    old = [t.weight.detach().clone() for t in tables]
    model.resize_position_embeddings(512)
    new = model.get_position_embeddings()
    new = new if has_decoder else (new,)
    assert model.config.max_position_embeddings == 512
    for before, after in zip(old, new, strict=True):
        assert after.weight.shape == (512, 32)
        torch.testing.assert_close(after.weight[:256], before, atol=1e-6, rtol=0)  # regenerated, same sinusoids
    _call(model, *padded_batch(400, 7))  # longer than the old table


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_resize_token_embeddings_keeps_the_ties(tiny_config, model_class):
    model = _build(model_class, tiny_config(num_labels=2))
    model.resize_token_embeddings(136)
    assert model.config.vocab_size == 136
    shared = model.get_input_embeddings()
    assert shared.weight.shape == (136, 32)
    encoder = model.model.encoder if hasattr(model, "model") else model.encoder
    assert encoder.embed_tokens.weight.data_ptr() == shared.weight.data_ptr()
    if model_class is LSGPegasusForConditionalGeneration:
        assert model.lm_head.weight.data_ptr() == shared.weight.data_ptr()
        assert model.final_logits_bias.shape == (1, 136)
    input_ids, attention_mask = padded_batch(37, 5, vocab=136)
    out = _call(model, input_ids, attention_mask)
    if model_class is LSGPegasusForConditionalGeneration:
        assert out.logits.shape[-1] == 136


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_save_and_load_with_safetensors_and_torch_save(tiny_config, model_class, tmp_path):
    model = _build(model_class, tiny_config(num_labels=2))
    input_ids, attention_mask = padded_batch(37, 5)
    expected = _call(model, input_ids, attention_mask).to_tuple()[0]
    model.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    reloaded, info = model_class.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()), info
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    fresh = model_class(model.config)
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    for again in (reloaded.eval(), fresh.eval()):
        assert torch.equal(_call(again, input_ids, attention_mask).to_tuple()[0], expected)


@pytest.mark.parametrize("model_class", [LSGPegasusForSequenceClassification, LSGPegasusModel])
def test_gradient_checkpointing_on_and_off(tiny_config, model_class):
    model = _build(model_class, tiny_config(num_labels=2)).train()
    input_ids, attention_mask = padded_batch(37, 5)
    is_classifier = model_class is LSGPegasusForSequenceClassification
    kwargs = {"labels": torch.tensor([0, 1])} if is_classifier else {"decoder_input_ids": torch.zeros(2, 3).long()}

    def gradients():
        model.zero_grad()
        out = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        (out.loss if is_classifier else out.last_hidden_state.square().mean()).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.get_encoder().layers)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and "global_embeddings" in " ".join(plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_past_key_values_is_deprecated_with_a_warning(tiny_config):
    model = _build(LSGPegasusModel, tiny_config())
    with pytest.warns(FutureWarning, match="past_key_values"):
        _call(model, *padded_batch(13, 3), past_key_values=None)


# --- torch.compile --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_forward_compiles_as_one_graph(tiny_config, model_class):
    """`_can_compile_fullgraph = True` holds: dynamo captures the whole forward (LSG path, padding) without a break."""
    assert model_class._can_compile_fullgraph
    model = _build(model_class, tiny_config(num_labels=2))
    input_ids, attention_mask = padded_batch(37, 5)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(
        _call(compiled, input_ids, attention_mask).to_tuple()[0], _call(model, input_ids, attention_mask).to_tuple()[0]
    )


@pytest.mark.slow
def test_inductor_compiled_forward_matches_eager(tiny_config):
    model = _build(LSGPegasusForConditionalGeneration, tiny_config())
    input_ids, attention_mask = padded_batch(37, 5)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(
        _call(compiled, input_ids, attention_mask).logits, _call(model, input_ids, attention_mask).logits,
        atol=1e-5, rtol=0,
    )  # fmt: skip


# --- reference configurations beyond the oracle files ---------------------------------------------------------------


def _reference_configs():
    """Every sparsity type x small and usual sparse_block_size x sparsity factor x globals that the reference runs."""
    cases = []
    for sparsity_type, (blk, sbs, sf), g in itertools.product(
        SPARSITY_TYPES,
        [(8, 8, 2), (8, 3, 2), (8, 2, 2), (8, 1, 2), (8, 4, 4), (8, 8, 4), (4, 4, 4), (8, 8, 1), (16, 4, 2)],
        [1, 3],
    ):
        try:
            LSGPegasusConfig(block_size=blk, sparse_block_size=sbs, sparsity_factor=sf, sparsity_type=sparsity_type)
        except (ValueError, StrictDataclassClassValidationError):
            continue  # the reference crashes on these (odd step, norm/lsh chunks that do not tile a block)
        cases.append(pytest.param(sparsity_type, blk, sbs, sf, g, id=f"{sparsity_type}-b{blk}-s{sbs}-f{sf}-g{g}"))
    return cases


@pytest.mark.parametrize(("sparsity_type", "blk", "sbs", "sf", "g"), _reference_configs())
def test_block_attention_equals_the_reference_layout(tiny_config, sparsity_type, blk, sbs, sf, g, caplog):
    """Our gathered, chunked attention equals the reference's pad-and-unfold construction (reference_layout.py) for
    configurations with short or overlapping sparse windows, several globals and step 1, which the oracle lacks."""
    with caplog.at_level(logging.WARNING):
        config = tiny_config(
            block_size=blk, sparse_block_size=sbs, sparsity_factor=sf, sparsity_type=sparsity_type,
            num_global_tokens=g,
        )  # fmt: skip
    if sparsity_type != "none" and 4 * sbs <= 3 * (blk // sf):
        assert "sparse windows are shorter" in caplog.text
    attention = LSGBlockAttention(config).eval()
    generator = torch.Generator().manual_seed(0)
    n, h, t, d = 2, 4, 6 * blk, 8
    query, key, value = (torch.randn(n, h, g + t, d, generator=generator) for _ in range(3))
    keep = torch.ones(n, g + t, dtype=torch.bool)
    keep[1, g + t - blk - 3 :] = False
    torch.manual_seed(1)  # lsh draws projections: same draws for both
    ours, _ = attention(query, key, value, keep)
    sparse = None
    if attention.select_sparse is not None:
        torch.manual_seed(1)
        sparse = attention.select_sparse(query[:, :, g:], key[:, :, g:], value[:, :, g:], keep[:, None, g:])
    expected = reference_lsg_attention(query, key, value, keep, sparse, config)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
