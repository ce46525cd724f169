"""Long inputs on CPU: 16,384 tokens on the LSG path, memory linear in length (no length x length tensor)."""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lsgtrain.modeling.configuration_lsg_pegasus import SPARSITY_TYPES
from lsgtrain.modeling.modeling_lsg_pegasus import LSGPegasusModel


class TensorMemoryTracker(TorchDispatchMode):
    """Counts the bytes of tensors created by torch ops while active: live peak and largest single tensor."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = self.largest = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and not tensor._is_view():
                nbytes = tensor.untyped_storage().nbytes()
                self.live += nbytes
                self.largest = max(self.largest, tensor.numel())
                weakref.finalize(tensor, self._release, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def _tracked_encode(model, length):
    input_ids = torch.randint(2, model.config.vocab_size, (1, length))
    with torch.no_grad(), TensorMemoryTracker() as tracker:
        out = model.encoder(input_ids=input_ids).last_hidden_state
    return out, tracker


@pytest.fixture(scope="module")
def long_model():
    from lsgtrain.modeling.configuration_lsg_pegasus import LSGPegasusConfig

    torch.manual_seed(0)
    config = LSGPegasusConfig(
        vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=16384,
        block_size=64, sparse_block_size=64, sparsity_factor=4, sparsity_type="norm",
    )  # fmt: skip
    return LSGPegasusModel(config).eval()


def test_encodes_16384_tokens_on_the_lsg_path(long_model):
    out, tracker = _tracked_encode(long_model, 16384)
    assert out.shape == (1, 16385, 32)
    assert torch.isfinite(out).all()
    heads = long_model.config.encoder_attention_heads
    # A length x length score matrix would hold heads * 16384^2 = 1.07e9 numbers.
    assert tracker.largest < 0.05 * heads * 16384**2


def test_memory_grows_linearly_with_length(long_model):
    _, short = _tracked_encode(long_model, 4096)
    _, long = _tracked_encode(long_model, 16384)
    ratio = long.peak / short.peak
    # 4x the tokens: linear memory gives at most about 4x (less, as chunk buffers do not grow), quadratic 16x.
    assert 1.0 < ratio < 4.5, f"peak tensor memory grew {ratio:.1f}x for 4x the length"


@pytest.mark.parametrize("sparsity_type", SPARSITY_TYPES)
def test_every_sparsity_type_is_linear(tiny_config, sparsity_type):
    torch.manual_seed(0)
    model = LSGPegasusModel(tiny_config(sparsity_type=sparsity_type, max_position_embeddings=4096)).eval()
    _, short = _tracked_encode(model, 1024)
    _, long = _tracked_encode(model, 4096)
    assert long.peak / short.peak < 5.0
