"""LSG-Pegasus configuration: Pegasus plus the Local + Sparse + Global attention keys (arXiv 2210.15497).

Reads the `config.json` of the reference checkpoints (`ccdv/lsg-pegasus-large-4096`) as they are: same keys, same
defaults, `model_type` stays `"pegasus"`. Where the reference crashes late or silently misbehaves on impossible
values, this config raises a `ValueError` naming the key, the value and what would work.
"""

import logging

from huggingface_hub.dataclasses import strict
from transformers import PegasusConfig

logger = logging.getLogger(__name__)

SPARSITY_TYPES = ("none", "norm", "pooling", "lsh", "stride", "block_stride", "bos_pooling")
CLASSIFIER_POOLINGS = ("global", "mean")
ATTENTION_MAPS = ("square", "blocks")
MAX_GLOBAL_TOKENS = 512  # rows of `global_embeddings` in every reference checkpoint


@strict
class LSGPegasusConfig(PegasusConfig):
    r"""Configuration of an LSG-Pegasus model.

    Args:
        adaptive: right-pad inputs longer than `2 * block_size` to a multiple of `block_size`.
        base_model_prefix: stored in `config.json`; `"lsg"` marks an LSG checkpoint for the converter.
        block_size: local block size; each block attends to itself and its two neighbours.
        sparse_block_size: sparse tokens on each side of the local window (0 disables sparse attention).
        sparsity_factor: compression ratio of the sparse tokens (0 disables sparse attention).
        sparsity_type: one of `SPARSITY_TYPES` (`None` is read as `"none"`).
        num_global_tokens: learned global tokens prepended to every sequence (1..512).
        mask_first_token: mask token 0 as a key; it is redundant with global token 0.
        pass_global_tokens_to_decoder: keep the global tokens in the encoder output.
        pool_with_global: when the global tokens are dropped, copy global token 0's output into token 0.
        lsh_num_pre_rounds: LSH pre-merging rounds (`sparsity_type="lsh"` only).
        classifier_pooling: sequence classification pools the first global token (`"global"`) or takes the
            masked mean of the token outputs (`"mean"`).
        attention_maps: layout of the encoder maps of `output_attentions=True`: `"square"` `[n, h, g + t, g + t]`
            (refused above a memory bound), or `"blocks"`, each token's probabilities over the keys it sees (linear
            in length); docs/model.md "Encoder attentions".
    """

    adaptive: bool = True
    base_model_prefix: str = "lsg"
    block_size: int = 128
    sparse_block_size: int = 128
    sparsity_factor: int = 2
    sparsity_type: str | None = "norm"
    num_global_tokens: int = 1
    mask_first_token: bool = False
    pass_global_tokens_to_decoder: bool = True
    pool_with_global: bool = True
    lsh_num_pre_rounds: int = 1
    classifier_pooling: str = "global"
    attention_maps: str = "square"

    def __post_init__(self, **kwargs):
        if self.sparsity_type is None:
            self.sparsity_type = "none"
        if self.mask_first_token and not self.pool_with_global:
            # As the reference does: a masked token 0 only keeps information through global token 0.
            logger.info("mask_first_token=True sets pool_with_global=True")
            self.pool_with_global = True
        super().__post_init__(**kwargs)

    @property
    def uses_sparse_tokens(self) -> bool:
        """Whether the LSG path attends to sparse tokens at all."""
        return self.sparsity_type != "none" and self.sparse_block_size > 0 and self.sparsity_factor > 0

    def validate_architecture(self):
        """Reject LSG parameters the attention cannot honour, naming the key and what would work."""
        super().validate_architecture()
        if self.d_model % self.encoder_attention_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of "
                f"encoder_attention_heads ({self.encoder_attention_heads})"
            )
        if self.sparsity_type not in SPARSITY_TYPES:
            raise ValueError(f"sparsity_type={self.sparsity_type!r} is unknown; choose one of {SPARSITY_TYPES}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if not 1 <= self.num_global_tokens <= MAX_GLOBAL_TOKENS:
            raise ValueError(f"num_global_tokens must be in [1, {MAX_GLOBAL_TOKENS}], got {self.num_global_tokens}")
        if self.sparse_block_size < 0 or self.sparsity_factor < 0:
            raise ValueError(
                f"sparse_block_size ({self.sparse_block_size}) and sparsity_factor ({self.sparsity_factor}) "
                "must be >= 0 (0 disables sparse attention)"
            )
        if self.attention_maps not in ATTENTION_MAPS:
            raise ValueError(f"attention_maps={self.attention_maps!r} is unknown; choose one of {ATTENTION_MAPS}")
        if self.lsh_num_pre_rounds < 0:
            raise ValueError(f"lsh_num_pre_rounds must be >= 0, got {self.lsh_num_pre_rounds}")
        if self.uses_sparse_tokens:
            self._validate_sparse_layout()

    def _working_sparsity_factors(self) -> list[int]:
        """The sparsity_factor values that pass every check of `_validate_sparse_layout` with the other keys as
        they are, so that an error never suggests a value that fails next."""
        bs, chunk = self.block_size, min(self.block_size, self.sparse_block_size)
        chunked = self.sparsity_type in ("norm", "lsh")
        return [
            f for f in _divisors(bs)
            if (bs // f == 1 or (bs // f) % 2 == 0) and not (chunked and (bs % chunk or chunk % f))
        ]  # fmt: skip

    def _validate_sparse_layout(self):
        bs, sbs, sf = self.block_size, self.sparse_block_size, self.sparsity_factor
        if bs % sf != 0:
            raise ValueError(
                f"block_size ({bs}) must be a multiple of sparsity_factor ({sf}); "
                f"valid sparsity_factor values for this block_size: {self._working_sparsity_factors()}"
            )
        step = bs // sf  # sparse tokens per block
        if step > 1 and step % 2 == 1:
            # The reference's sparse windows come out one short for an odd step and torch.cat fails.
            raise ValueError(
                f"block_size // sparsity_factor = {bs} // {sf} = {step} is odd; it must be even or 1. "
                f"valid sparsity_factor values for block_size={bs}: {self._working_sparsity_factors()}"
            )
        if 4 * sbs <= 3 * step:
            # The reference runs these, with shorter or overlapping sparse windows; so do we (LSGGeometry).
            logger.warning(
                "sparse_block_size (%d) <= 0.75 * block_size / sparsity_factor = %g: the sparse windows are shorter "
                "than sparse_block_size or overlap the local window, as in the reference implementation",
                sbs,
                3 * step / 4,
            )
        if self.sparsity_type in ("norm", "lsh"):
            chunk = min(bs, sbs)
            if bs % chunk != 0 or chunk % sf != 0:
                raise ValueError(
                    f"sparsity_type={self.sparsity_type!r} selects sparse tokens in chunks of "
                    f"min(block_size, sparse_block_size) = {chunk}, which must divide block_size ({bs}) "
                    f"and be a multiple of sparsity_factor ({sf})"
                )
        if self.sparsity_type in ("stride", "block_stride") and sf > self.encoder_attention_heads:
            logger.warning(
                "sparsity_type=%r with sparsity_factor (%d) > encoder_attention_heads (%d): some offsets are "
                "never attended to",
                self.sparsity_type,
                sf,
                self.encoder_attention_heads,
            )

    def check_sequence_length(self, length: int) -> None:
        """Raise if a sequence of `length` tokens cannot take the LSG path without adaptive padding."""
        if not self.adaptive and length > 2 * self.block_size and length % self.block_size != 0:
            raise ValueError(
                f"input length {length} is not a multiple of block_size ({self.block_size}) and adaptive=False; "
                "set adaptive=True (pads to the next multiple) or pad the input yourself"
            )


def _divisors(n: int) -> list[int]:
    return [f for f in range(1, n + 1) if n % f == 0]


__all__ = ["LSGPegasusConfig"]
