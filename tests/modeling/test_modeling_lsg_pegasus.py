"""The LSG-Pegasus classes inside transformers 5: generate, checkpointing, save/load, heads, reference weights."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import PegasusConfig, PegasusForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.pegasus.modeling_pegasus import PegasusEncoderLayer

from lsgtrain.modeling.modeling_lsg_pegasus import (
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
    LSGPegasusModel,
)

from .batches import padded_batch
from .oracle import load_case, state_dict_of


def _inputs(length=61, pad=20):
    return padded_batch(length, pad, seed=3)


@pytest.fixture
def seq2seq(tiny_config):
    torch.manual_seed(0)
    return LSGPegasusForConditionalGeneration(tiny_config()).eval()


def _count_encoder_calls(model):
    calls = []
    model.get_encoder().register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "generate_kwargs",
    [
        {"num_beams": 1, "do_sample": False},
        {"num_beams": 3, "do_sample": False, "length_penalty": 0.8, "no_repeat_ngram_size": 2},
        {"do_sample": True, "top_k": 10, "temperature": 0.9},
    ],
    ids=["greedy", "beam", "sampling"],
)
def test_generate_runs_the_encoder_once(seq2seq, generate_kwargs):
    input_ids, attention_mask = _inputs()
    calls = _count_encoder_calls(seq2seq)
    torch.manual_seed(0)
    out = seq2seq.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, **generate_kwargs)
    assert out.shape[0] == 2 and 2 <= out.shape[1] <= 7
    assert len(calls) == 1


def test_greedy_generation_equals_step_by_step_argmax(seq2seq):
    input_ids, attention_mask = _inputs()
    generated = seq2seq.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=5, do_sample=False, num_beams=1,
        forced_eos_token_id=None, min_new_tokens=5,
    )  # fmt: skip
    decoder_ids = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(5):
            logits = seq2seq(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_ids).logits
            logits[:, -1, seq2seq.config.eos_token_id] = -float("inf")  # min_new_tokens
            decoder_ids = torch.cat([decoder_ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, decoder_ids)


def test_beam_search_reorders_only_the_self_attention_cache_with_the_same_results(seq2seq, monkeypatch):
    """Every beam of a document holds the same cross-attention keys/values, so `_reorder_cache` leaves them in place
    (no copy per step); beam search must give what the full reorder (transformers' default) gives."""
    input_ids, attention_mask = _inputs()  # 2 documents of different lengths
    settings = dict(max_new_tokens=12, min_new_tokens=12, num_beams=4, num_return_sequences=2, do_sample=False,
                    output_scores=True, return_dict_in_generate=True)  # fmt: skip
    reorder, orders = LSGPegasusForConditionalGeneration._reorder_cache, []

    def recording(model, cache, beam_idx):
        orders.append(beam_idx.clone())
        return reorder(model, cache, beam_idx)

    monkeypatch.setattr(LSGPegasusForConditionalGeneration, "_reorder_cache", recording)
    ours = seq2seq.generate(input_ids, attention_mask=attention_mask, **settings)
    assert any(not torch.equal(order, torch.arange(8)) for order in orders)  # beams really moved
    monkeypatch.delattr(LSGPegasusForConditionalGeneration, "_reorder_cache")  # cache.reorder_cache: both caches
    full = seq2seq.generate(input_ids, attention_mask=attention_mask, **settings)
    assert torch.equal(ours.sequences, full.sequences)
    assert torch.equal(ours.sequences_scores, full.sequences_scores)
    monkeypatch.undo()

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    self_keys, cross_keys = torch.arange(4.0).view(4, 1, 1, 1), torch.zeros(4, 1, 5, 1)
    cache.self_attention_cache.update(self_keys, self_keys.clone(), 0)
    cache.cross_attention_cache.update(cross_keys, cross_keys.clone(), 0)
    kept = cache.cross_attention_cache.layers[0].keys
    seq2seq._reorder_cache(cache, torch.tensor([1, 1, 3, 2]))
    assert cache.self_attention_cache.layers[0].keys.flatten().tolist() == [1.0, 1.0, 3.0, 2.0]
    assert cache.cross_attention_cache.layers[0].keys is kept  # not copied


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    torch.manual_seed(0)
    config = tiny_config(dropout=0.0)
    model = LSGPegasusForConditionalGeneration(config).train()
    input_ids, attention_mask = _inputs()
    labels = torch.randint(2, 128, (2, 6))

    def grads():
        model.zero_grad()
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    assert "model.encoder.global_embeddings.weight" in plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_save_and_from_pretrained_round_trip(seq2seq, tmp_path):
    seq2seq.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model_files = {"modeling_lsg_pegasus.py", "configuration_lsg_pegasus.py", "lsg_attention.py", "lsg_layout.py",
                   "lsg_kernels.py", "lsg_cpu_function.py"}  # fmt: skip
    assert model_files <= {p.name for p in tmp_path.iterdir()}
    again, info = LSGPegasusForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    input_ids, attention_mask = _inputs()
    decoder_input_ids = torch.zeros(2, 4, dtype=torch.long)
    with torch.no_grad():
        a = seq2seq(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        b = again.eval()(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    assert torch.equal(a, b.logits)


def test_decoder_on_sdpa_matches_eager(tiny_config, tmp_path):
    torch.manual_seed(0)
    LSGPegasusForConditionalGeneration(tiny_config()).save_pretrained(tmp_path)
    eager = LSGPegasusForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = LSGPegasusForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert sdpa.config._attn_implementation == "sdpa"
    input_ids, attention_mask = _inputs()
    decoder_input_ids = torch.randint(2, 128, (2, 5))
    with torch.no_grad():
        a = eager(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        b = sdpa(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_reference_format_checkpoint_loads_without_missing_or_unexpected_keys(oracle_dir, tmp_path):
    case = load_case(oracle_dir / "norm_L61_adaptive.npz")
    state_dict = state_dict_of(case)
    assert state_dict["model.encoder.global_embeddings.weight"].shape[0] == 512
    save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(str(case["config_json"]))
    model, info = LSGPegasusForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, value in state_dict.items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=0, rtol=0, msg=name)
    _, info = LSGPegasusModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert info["unexpected_keys"] == {"lm_head.weight", "final_logits_bias"}  # the LM head, not in a bare model


def test_caller_tensors_are_never_modified(tiny_config):
    torch.manual_seed(0)
    model = LSGPegasusForConditionalGeneration(tiny_config(mask_first_token=True)).eval()
    input_ids, attention_mask = _inputs()
    embeds = model.model.encoder.embed_tokens(input_ids).detach()
    copies = input_ids.clone(), attention_mask.clone(), embeds.clone()
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=torch.zeros(2, 2).long())
        model(inputs_embeds=embeds, attention_mask=attention_mask, decoder_input_ids=torch.zeros(2, 2).long())
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=2)
    for before, after in zip(copies, (input_ids, attention_mask, embeds), strict=True):
        assert torch.equal(before, after)


def test_short_inputs_equal_plain_pegasus_layers_on_globals_plus_tokens(tiny_config):
    """Below 2 * block_size LSG is full attention over [globals; tokens]: plain Pegasus layers give the same."""
    torch.manual_seed(0)
    config = tiny_config()
    model = LSGPegasusModel(config).eval()
    input_ids, attention_mask = _inputs(length=13, pad=4)
    plain_layers = [PegasusEncoderLayer(PegasusConfig(**config.to_dict())).eval() for _ in model.encoder.layers]
    for plain, ours in zip(plain_layers, model.encoder.layers, strict=True):
        plain.load_state_dict(ours.state_dict())
    encoder = model.encoder
    hidden = encoder.embed_tokens(input_ids) * encoder.embed_scale + encoder.embed_positions(input_ids.shape)
    hidden = torch.cat([encoder.global_embeddings.weight[:1].expand(2, 1, -1), hidden], dim=1)
    mask = torch.nn.functional.pad(attention_mask, (1, 0), value=1).bool()[:, None, None, :]
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        for layer in plain_layers:
            hidden = layer(hidden, additive)
        expected = encoder.layer_norm(hidden)
        ours = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_plain_pegasus_checkpoint_loads_into_lsg_with_only_globals_missing(tmp_path, tiny_config):
    torch.manual_seed(0)
    plain_config = PegasusConfig(**{k: v for k, v in tiny_config().to_dict().items() if k != "auto_map"})
    PegasusForConditionalGeneration(plain_config).save_pretrained(tmp_path)
    _, info = LSGPegasusForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == {"model.encoder.global_embeddings.weight"}
    assert not info["unexpected_keys"]


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels"),
    [
        ("single_label_classification", 3, torch.tensor([0, 2])),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        ("regression", 1, torch.tensor([0.5, -1.0])),
    ],
)
@pytest.mark.parametrize("pooling", ["global", "mean"])
def test_sequence_classification_heads_learn(tiny_config, problem_type, num_labels, labels, pooling):
    torch.manual_seed(0)
    config = tiny_config(num_labels=num_labels, problem_type=problem_type, classifier_pooling=pooling)
    model = LSGPegasusForSequenceClassification(config).train()
    assert not any("decoder" in name for name, _ in model.named_parameters())
    input_ids, attention_mask = _inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        assert out.logits.shape == (2, num_labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_mean_pooling_ignores_padding(tiny_config):
    torch.manual_seed(0)
    model = LSGPegasusForSequenceClassification(tiny_config(classifier_pooling="mean", num_labels=2)).eval()
    input_ids, attention_mask = _inputs(length=24, pad=8)
    changed = input_ids.clone()
    changed[1, 16:] = 99
    with torch.no_grad():
        a = model(input_ids=input_ids, attention_mask=attention_mask).logits
        b = model(input_ids=changed, attention_mask=attention_mask).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_classifier_loads_a_seq2seq_checkpoint(seq2seq, tmp_path):
    seq2seq.save_pretrained(tmp_path)
    classifier, info = LSGPegasusForSequenceClassification.from_pretrained(
        tmp_path, num_labels=2, output_loading_info=True
    )
    assert {k for k in info["missing_keys"] if not k.startswith("classification_head")} == set()
    torch.testing.assert_close(
        classifier.model.encoder.global_embeddings.weight, seq2seq.model.encoder.global_embeddings.weight
    )
    torch.testing.assert_close(classifier.model.shared.weight, seq2seq.model.shared.weight)
    assert classifier.model.encoder.embed_tokens.weight.data_ptr() == classifier.model.shared.weight.data_ptr()
