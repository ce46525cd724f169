"""transformers 5's common model checks (`ModelTesterMixin`, `GenerationTesterMixin` of its test suite, which the
installed wheel does not ship) rewritten for LSG-Pegasus: the checks that touch attentions and hidden states, with
their own semantics, on a tiny config.

Two suites run them. Short inputs (at most two blocks) take full attention, so the encoder maps are square,
`[n, h, g + t, g + t]`, and every check runs as transformers writes it. Long inputs take the block layout,
`[n, h, g + t, k_len + g]` (docs/model.md, "Encoder attentions"): the checks that assume square maps are
overridden there (`check_encoder_attentions`), the others are unchanged.
"""

import pytest
import torch
from transformers.cache_utils import Cache

from lsgtrain.modeling.configuration_lsg_pegasus import LSGPegasusConfig
from lsgtrain.modeling.modeling_lsg_pegasus import (
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
    LSGPegasusModel,
)

ALL_MODEL_CLASSES = (LSGPegasusModel, LSGPegasusForConditionalGeneration, LSGPegasusForSequenceClassification)
GENERATION_MODES = {
    "greedy": {"num_beams": 1, "do_sample": False},
    "sample": {"num_beams": 1, "do_sample": True, "top_k": 10},
    "beam": {"num_beams": 2, "do_sample": False},
    "beam_sample": {"num_beams": 2, "do_sample": True, "top_k": 10},
}


class LSGPegasusModelTester:
    """transformers' `ModelTester` for a tiny LSG-Pegasus: config and inputs, with the encoder's lengths."""

    batch_size, decoder_seq_length, vocab_size, hidden_size = 2, 5, 99, 16
    num_hidden_layers, num_attention_heads, num_global_tokens = 2, 4, 2

    def __init__(self, seq_length: int, block_size: int):
        self.seq_length, self.block_size = seq_length, block_size
        # The encoder's hidden states hold the global tokens before the tokens.
        self.encoder_seq_length = self.num_global_tokens + seq_length

    def get_config(self) -> LSGPegasusConfig:
        config = LSGPegasusConfig(
            vocab_size=self.vocab_size, d_model=self.hidden_size, encoder_layers=self.num_hidden_layers,
            decoder_layers=self.num_hidden_layers, encoder_attention_heads=self.num_attention_heads,
            decoder_attention_heads=self.num_attention_heads, encoder_ffn_dim=32, decoder_ffn_dim=32,
            max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, pad_token_id=1, eos_token_id=2,
            decoder_start_token_id=0, block_size=self.block_size, sparse_block_size=self.block_size,
            sparsity_factor=2, num_global_tokens=self.num_global_tokens, num_labels=3,
        )  # fmt: skip
        config._attn_implementation = "eager"  # transformers' rule for the decoder's attentions
        return config

    def prepare_config_and_inputs_for_common(self) -> tuple[LSGPegasusConfig, dict]:
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(3, self.vocab_size, (self.batch_size, self.seq_length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, -3:] = 0  # one padded row
        decoder_input_ids = torch.randint(3, self.vocab_size, (self.batch_size, self.decoder_seq_length),
                                          generator=generator)  # fmt: skip
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids}
        return self.get_config(), inputs

    def prepare_for_class(self, inputs: dict, model_class) -> dict:
        if model_class is LSGPegasusForSequenceClassification:
            return {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
        return dict(inputs)


def _build(model_class, config):
    torch.manual_seed(0)
    return model_class(config).eval()


def _encoder_outputs(outputs) -> tuple[tuple, tuple]:
    """(hidden states, attentions) of the encoder, for the seq2seq and the encoder-only classes."""
    if hasattr(outputs, "encoder_attentions"):
        return outputs.encoder_hidden_states, outputs.encoder_attentions
    return outputs.hidden_states, outputs.attentions


class TransformersCommonChecks:
    """The common checks, as transformers' mixins make them; `model_tester` is set by the suites below."""

    model_tester: LSGPegasusModelTester

    def check_encoder_attentions(self, attentions: tuple, batch_size: int) -> None:
        """transformers' shape check: one square map per layer over the encoder's positions."""
        tester = self.model_tester
        length = tester.encoder_seq_length
        assert len(attentions) == tester.num_hidden_layers
        for layer_attentions in attentions:
            assert layer_attentions.shape == (batch_size, tester.num_attention_heads, length, length)

    # --- ModelTesterMixin ---------------------------------------------------------------------------------------

    @pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES)
    def test_attention_outputs(self, model_class):
        tester = self.model_tester
        config, inputs = tester.prepare_config_and_inputs_for_common()
        inputs = tester.prepare_for_class(inputs, model_class)
        with torch.no_grad():
            by_argument = _build(model_class, config)(**inputs, output_attentions=True, output_hidden_states=False)
        config.output_attentions = True  # also when asked through the config
        with torch.no_grad():
            by_config = _build(model_class, config)(**inputs)
        for outputs in (by_argument, by_config):
            hidden_states, attentions = _encoder_outputs(outputs)
            assert hidden_states is None
            self.check_encoder_attentions(attentions, tester.batch_size)
            if hasattr(outputs, "decoder_attentions"):
                heads, m = tester.num_attention_heads, tester.decoder_seq_length
                assert all(a.shape == (tester.batch_size, heads, m, m) for a in outputs.decoder_attentions)
                cross = (tester.batch_size, heads, m, tester.encoder_seq_length)
                assert all(a.shape == cross for a in outputs.cross_attentions)
        # Attentions come last in the tuple output; hidden states add one entry (two for the seq2seq classes).
        with torch.no_grad():
            without_hidden = by_config.to_tuple()
            with_hidden = _build(model_class, config)(**inputs, output_hidden_states=True, return_dict=False)
        added = 2 if hasattr(by_config, "decoder_attentions") else 1
        assert len(with_hidden) == len(without_hidden) + added
        assert all(torch.equal(a, b) for a, b in zip(with_hidden[-1], without_hidden[-1], strict=True))

    @pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES)
    def test_hidden_states_output(self, model_class):
        tester = self.model_tester
        config, inputs = tester.prepare_config_and_inputs_for_common()
        with torch.no_grad():
            outputs = _build(model_class, config)(**tester.prepare_for_class(inputs, model_class),
                                                  output_hidden_states=True)  # fmt: skip
        hidden_states, _ = _encoder_outputs(outputs)
        assert len(hidden_states) == tester.num_hidden_layers + 1
        shape = (tester.batch_size, tester.encoder_seq_length, tester.hidden_size)
        assert all(h.shape == shape for h in hidden_states)

    def test_retain_grad_hidden_states_attentions(self):
        tester = self.model_tester
        config, inputs = tester.prepare_config_and_inputs_for_common()
        config.output_hidden_states = config.output_attentions = True
        model = LSGPegasusModel(config)  # transformers takes the first class
        outputs = model(**inputs)
        retained = [
            outputs.encoder_hidden_states[0], outputs.encoder_attentions[0], outputs.decoder_hidden_states[0],
            outputs.decoder_attentions[0], outputs.cross_attentions[0],
        ]  # fmt: skip
        for tensor in retained:
            tensor.retain_grad()
        outputs[0].flatten()[0].backward(retain_graph=True)
        assert all(tensor.grad is not None for tensor in retained)

    @pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES)
    def test_model_outputs_equivalence(self, model_class):
        tester = self.model_tester
        config, inputs = tester.prepare_config_and_inputs_for_common()
        model = _build(model_class, config)
        inputs = tester.prepare_for_class(inputs, model_class)

        def check(left, right):
            if isinstance(left, (tuple, list)):
                assert len(left) == len(right)
                for a, b in zip(left, right, strict=True):
                    check(a, b)
            elif isinstance(left, Cache):  # transformers skips the caches too
                assert type(left) is type(right)
            elif left is not None:
                torch.testing.assert_close(left, right, atol=1e-5, rtol=0)

        for extra in ({}, {"output_hidden_states": True}, {"output_attentions": True},
                      {"output_hidden_states": True, "output_attentions": True}):  # fmt: skip
            with torch.no_grad():
                as_tuple = model(**inputs, return_dict=False, **extra)
                as_dict = model(**inputs, return_dict=True, **extra).to_tuple()
            check(as_tuple, as_dict)

    @pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES)
    def test_batching_equivalence(self, model_class):
        """Each row alone gives what it gives in the batch, attentions included."""
        tester = self.model_tester
        config, inputs = tester.prepare_config_and_inputs_for_common()
        model = _build(model_class, config)
        inputs = tester.prepare_for_class(inputs, model_class)
        kwargs = {"output_hidden_states": True, "output_attentions": True}
        with torch.no_grad():
            batched = model(**inputs, **kwargs)
            alone = model(**{k: v[:1] for k, v in inputs.items()}, **kwargs)
        hidden_batched, attentions_batched = _encoder_outputs(batched)
        hidden_alone, attentions_alone = _encoder_outputs(alone)
        for batch_tensor, row_tensor in zip(
            (*hidden_batched, *attentions_batched), (*hidden_alone, *attentions_alone), strict=True
        ):
            torch.testing.assert_close(batch_tensor[:1], row_tensor, atol=1e-5, rtol=1e-5)

    # --- GenerationTesterMixin ----------------------------------------------------------------------------------

    @pytest.mark.parametrize("mode", GENERATION_MODES)
    def test_generate_dict_outputs(self, mode):
        tester = self.model_tester
        config, inputs = tester.prepare_config_and_inputs_for_common()
        model = _build(LSGPegasusForConditionalGeneration, config)
        torch.manual_seed(0)
        out = model.generate(
            inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=3, min_new_tokens=3,
            return_dict_in_generate=True, output_attentions=True, output_hidden_states=True, output_scores=True,
            **GENERATION_MODES[mode],
        )  # fmt: skip
        # The encoder runs once per document, before the beams are expanded.
        self.check_encoder_attentions(out.encoder_attentions, tester.batch_size)
        shape = (tester.batch_size, tester.encoder_seq_length, tester.hidden_size)
        assert all(h.shape == shape for h in out.encoder_hidden_states)
        assert len(out.decoder_attentions) == 3 and len(out.cross_attentions) == 3


class TestShortInputs(TransformersCommonChecks):
    """Seven tokens, block 4: full attention, square maps; no check is overridden."""

    model_tester = LSGPegasusModelTester(seq_length=7, block_size=4)


class TestLongInputs(TransformersCommonChecks):
    """21 tokens, block 4 (adaptive padding to 24, six blocks, sparse tokens): the block layout."""

    model_tester = LSGPegasusModelTester(seq_length=21, block_size=4)

    def check_encoder_attentions(self, attentions: tuple, batch_size: int) -> None:
        """LSG override of the square-map check: a row per position, `k_len + g` columns (a token's own keys
        `[globals | local window | sparse before | sparse after]`, then what each global query gives it)."""
        tester = self.model_tester
        g, blk = tester.num_global_tokens, tester.block_size
        k_len = g + 3 * blk + 2 * blk  # sparse_block_size = block_size on each side
        assert len(attentions) == tester.num_hidden_layers
        for layer_attentions in attentions:
            assert layer_attentions.shape == (batch_size, tester.num_attention_heads, g + tester.seq_length, k_len + g)
