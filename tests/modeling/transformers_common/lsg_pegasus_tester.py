"""transformers' own common model tests (`ModelTesterMixin` of its test suite) for the LSG-Pegasus classes.

Not collected by lsgtrain's test run: `tests/modeling/test_transformers_common.py` copies it into an unpacked
transformers sdist as `tests/models/lsg_pegasus/test_modeling_lsg_pegasus.py` and runs transformers' suite on it there,
as transformers' `tests/models/pegasus/test_modeling_pegasus.py` does for Pegasus. The inputs are long enough for the
LSG path (21 tokens, block 4: adaptive padding to 24, six blocks, sparse tokens), and no check is overridden.

Disabled as transformers' own testers disable what does not apply (flags of the mixin):
    test_resize_embeddings = True, test_resize_position_embeddings = True (Pegasus' tester sets both);
    test_missing_keys = False: Pegasus' tester sets it too (tied embeddings are "missing" by design);
    all_generative_model_classes = () (see `LSGPegasusTestFlags`);
    the bare model's tester has is_training=False (see `LSGPegasusModelTest`);
    test_torch_exportable = False: the encoder's layout depends on the input length (adaptive padding, the
    short-input path), which `torch.export` cannot keep symbolic.
"""

import unittest

from transformers import is_torch_available
from transformers.testing_utils import require_torch

from ...test_modeling_common import ModelTesterMixin, ids_tensor

if is_torch_available():
    from lsgtrain.modeling import (
        LSGPegasusConfig,
        LSGPegasusForConditionalGeneration,
        LSGPegasusForSequenceClassification,
        LSGPegasusModel,
    )


class LSGPegasusModelTester:
    """A tiny LSG-Pegasus (vocab 99, hidden 16, 2 layers, 4 heads) with the sizes transformers' tests read."""

    def __init__(self, parent, batch_size=3, seq_length=21, block_size=4, num_global_tokens=2, is_training=True):
        self.parent = parent
        self.batch_size, self.seq_length, self.is_training = batch_size, seq_length, is_training
        self.block_size, self.num_global_tokens = block_size, num_global_tokens
        self.vocab_size, self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 99, 16, 2, 4
        self.decoder_seq_length = 7
        # The encoder's hidden states and maps hold the global tokens before the tokens (square maps).
        self.encoder_seq_length = num_global_tokens + seq_length
        self.key_length = self.encoder_seq_length
        self.pad_token_id, self.eos_token_id, self.decoder_start_token_id = 1, 2, 0

    def get_config(self) -> "LSGPegasusConfig":
        return LSGPegasusConfig(
            vocab_size=self.vocab_size, d_model=self.hidden_size, encoder_layers=self.num_hidden_layers,
            decoder_layers=self.num_hidden_layers, encoder_attention_heads=self.num_attention_heads,
            decoder_attention_heads=self.num_attention_heads, encoder_ffn_dim=4, decoder_ffn_dim=4,
            max_position_embeddings=64, dropout=0.1, attention_dropout=0.1, pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id, decoder_start_token_id=self.decoder_start_token_id,
            forced_eos_token_id=None, block_size=self.block_size, sparse_block_size=self.block_size,
            sparsity_factor=2, num_global_tokens=self.num_global_tokens, num_labels=3,
        )  # fmt: skip

    def prepare_config_and_inputs_for_common(self) -> tuple["LSGPegasusConfig", dict]:
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size).clamp(3)
        input_ids[:, -1] = self.eos_token_id
        decoder_input_ids = ids_tensor([self.batch_size, self.decoder_seq_length], self.vocab_size).clamp(3)
        attention_mask = input_ids.ne(self.pad_token_id)
        inputs = {
            "input_ids": input_ids,
            "decoder_input_ids": decoder_input_ids,
            "attention_mask": attention_mask,
            "decoder_attention_mask": decoder_input_ids.ne(self.pad_token_id),
        }
        return self.get_config(), inputs


class LSGPegasusClassifierTester(LSGPegasusModelTester):
    """The encoder-only classifier: no decoder inputs, and a config that says so (its outputs are an encoder's)."""

    def get_config(self) -> "LSGPegasusConfig":
        config = super().get_config()
        config.is_encoder_decoder = False
        return config

    def prepare_config_and_inputs_for_common(self) -> tuple["LSGPegasusConfig", dict]:
        config, inputs = super().prepare_config_and_inputs_for_common()
        return config, {key: value for key, value in inputs.items() if not key.startswith("decoder_")}


class LSGPegasusTestFlags:
    """The mixin flags every LSG-Pegasus class shares (see the module docstring)."""

    test_resize_position_embeddings = True
    test_missing_keys = False
    test_torch_exportable = False
    # transformers' generation tests (tests/generation/) are not in its sdist, so `GenerationTesterMixin` cannot
    # run here; transformers' rule for a tester without it is to declare no generative class. lsgtrain's own
    # generate checks: tests/modeling/test_transformers_common.py and test_model_contract.py.
    all_generative_model_classes = ()
    trains = True  # the tester's is_training

    def setUp(self):
        tester = LSGPegasusModelTester if self.is_encoder_decoder else LSGPegasusClassifierTester
        self.model_tester = tester(self, is_training=self.trains)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """Labels for the heads: transformers finds its own classes' label shapes in its auto mappings, which a
        remote-code class is not in (transformers' model testers override this the same way)."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is LSGPegasusForConditionalGeneration:
            inputs_dict["labels"] = inputs_dict["decoder_input_ids"].clone()  # the same labels on every call
        elif return_labels and model_class is LSGPegasusForSequenceClassification:
            inputs_dict["labels"] = inputs_dict["input_ids"][:, 0] % 3
        return inputs_dict


@require_torch
class LSGPegasusModelTest(LSGPegasusTestFlags, ModelTesterMixin, unittest.TestCase):
    """The bare encoder-decoder. No training tests: transformers skips its base models there (they have no loss)
    by their names in `MODEL_MAPPING`, which a remote-code class is not in."""

    all_model_classes = (LSGPegasusModel,) if is_torch_available() else ()
    is_encoder_decoder = True
    trains = False


@require_torch
class LSGPegasusForConditionalGenerationTest(LSGPegasusTestFlags, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LSGPegasusForConditionalGeneration,) if is_torch_available() else ()
    is_encoder_decoder = True


@require_torch
class LSGPegasusForSequenceClassificationTest(LSGPegasusTestFlags, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LSGPegasusForSequenceClassification,) if is_torch_available() else ()
    is_encoder_decoder = False
