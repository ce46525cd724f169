"""LSG encoder self-attention: global tokens, overlapping local blocks and sparse tokens (arXiv 2210.15497).

Notation used for tensor shapes:
    n: batch, h: heads, d: head_dim, g: global tokens, t: tokens after adaptive padding (globals excluded),
    blk: block_size, n_blk = t // blk, s_len = t // sparsity_factor (sparse sequence), sbs: sparse_block_size,
    k_len: keys seen by one query block = g + 3 * blk + k_sparse (k_sparse = 2 * sbs in the usual layout, 0 without
    sparse tokens; see `LSGGeometry.sparse_windows`).

The numbers follow the reference implementation (`ccdv-ai/convert_checkpoint_to_lsg`, `modeling_lsg_pegasus.py`),
quirks included, so that existing checkpoints keep their outputs. The computation differs: the reference copies every
block's `[global | sparse | local]` keys and values at once and materialises all scores; here query blocks are
processed in chunks, each gathering only its own keys, so memory stays linear and no tensor of size t x t exists.
This file holds the selectors of the sparse tokens and the layer; the shared geometry is `lsg_layout.py`, the
kernels, one chosen by `config._attn_implementation`, are `lsg_kernels.py`.
Padding masks are boolean `keep` tensors (True = visible) and become `finfo(dtype).min` scores, which is what the
reference's additive masks give and stays finite in bf16.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_lsg_pegasus import LSGPegasusConfig
from .lsg_kernels import block_context, check_kernel_applies, explicit_probabilities, lsg_attention_function
from .lsg_layout import (
    LSGGeometry,
    additive_mask,
    chunked,
    dropout_probabilities,
    full_attention,
    gather_keep,
    gather_tokens,
    probabilities,
)

# Square maps (`attention_maps="square"`) above this many values per layer (n * h * L * L, L = g + t after
# adaptive padding; 2 GiB in fp32) are refused: 16 heads reach it at about 5,800 tokens for one document.
SQUARE_MAPS_MAX_ELEMENTS = 2**29


class SparseTokenSelector:
    """Builds the compressed sparse sequence (keys, values, visibility) from the non-global tokens.

    Every builder takes queries/keys/values `[n, h, t, d]` and `keep` `[n, 1, t]` and returns keys and values
    `[n, h, t // sf, d]` plus their visibility `[n, h, t // sf]`.
    """

    def __init__(self, config: LSGPegasusConfig, geometry: LSGGeometry):
        self.geometry = geometry
        self.lsh_num_pre_rounds = config.lsh_num_pre_rounds
        self.sparsity_type = config.sparsity_type
        if self.sparsity_type == "lsh" and self.geometry.sparsity_factor == self.geometry.sparse_block_size:
            # Reference quirk (get_sparse_tokens_with_lsh): lsh with sf == sbs silently runs bos_pooling.
            self.sparsity_type = "bos_pooling"

    def __call__(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.geometry.sparsity_factor == 1:  # the sparse sequence is the sequence itself
            n, h = keys.shape[:2]
            return keys, values, keep.expand(n, h, -1)
        picked = self.token_indices(keys, keep)
        if picked is not None:
            idx, sparse_keep = picked
            return gather_tokens(keys, idx), gather_tokens(values, idx), sparse_keep
        build = getattr(self, f"_{self.sparsity_type}")
        return build(queries, keys, values, keep)

    def token_indices(self, keys: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For the types whose sparse tokens are a choice of tokens (norm, stride, block_stride, and any type with
        `sparsity_factor` 1): which tokens `[n or 1, h, s_len]` and their visibility `[n, h, s_len]`; None for the
        types that compute new vectors (pooling, bos_pooling, lsh)."""
        n, h, t, _ = keys.shape
        if self.geometry.sparsity_factor == 1:  # the sparse sequence is the sequence itself
            idx = torch.arange(t, device=keys.device).view(1, 1, t).expand(1, h, t)
        elif self.sparsity_type in ("norm", "stride", "block_stride"):
            idx = getattr(self, f"_{self.sparsity_type}_indices")(keys, keep)
        else:
            return None
        return idx, gather_keep(keep, idx)

    def _norm_indices(self, keys, keep):
        """Keep the `c // sf` keys of largest L2 norm in every chunk of `c = min(blk, sbs)` keys, per head."""
        n, h, t, d = keys.shape
        chunk = min(self.geometry.block_size, self.geometry.sparse_block_size)
        kept = chunk // self.geometry.sparsity_factor
        with torch.no_grad():
            norms = keys.norm(dim=-1) * keep  # [n, h, t], padded keys get norm 0
            order = norms.reshape(n, h, t // chunk, chunk).argsort(dim=-1)  # [n, h, t / chunk, chunk], ascending
            offsets = torch.arange(0, t, chunk, device=keys.device).view(1, 1, -1, 1)
            return (order[..., chunk - kept :] + offsets).reshape(n, h, -1)  # [n, h, s_len]

    def _pooling(self, queries, keys, values, keep):
        """Average every `sf` consecutive keys/values over their visible members."""
        n, h, t, d = keys.shape
        sf = self.geometry.sparsity_factor
        weight = keep.to(keys.dtype).reshape(n, 1, t // sf, sf, 1)  # [n, 1, s_len, sf, 1]
        count = weight.sum(dim=-2)  # [n, 1, s_len, 1]
        # The reference divides by count + 1e-6, not by count: kept for identical numbers.
        pooled_keys = (chunked(keys, sf) * weight).sum(dim=-2) / (count + 1e-6)  # [n, h, s_len, d]
        pooled_values = (chunked(values, sf) * weight).sum(dim=-2) / (count + 1e-6)
        return pooled_keys, pooled_values, (count.squeeze(-1) > 0).expand(n, h, -1)

    def _stride_indices(self, keys, keep):
        """Head i takes tokens `j * sf + (i % sf)`."""
        n, h, t, d = keys.shape
        sf = self.geometry.sparsity_factor
        heads = torch.arange(h, device=keys.device).view(1, h, 1)
        return torch.arange(0, t, sf, device=keys.device).view(1, 1, -1) + heads % sf  # [1, h, s_len]

    def _block_stride_indices(self, keys, keep):
        """In every block, head i takes a contiguous run of `blk // sf` tokens starting at `i * blk // sf`."""
        n, h, t, d = keys.shape
        blk, per_block = self.geometry.block_size, self.geometry.block_size // self.geometry.sparsity_factor
        heads = torch.arange(h, device=keys.device).view(1, h, 1, 1)
        within = (torch.arange(per_block, device=keys.device).view(1, 1, 1, -1) + heads * per_block) % blk
        starts = torch.arange(0, t, blk, device=keys.device).view(1, 1, -1, 1)
        return (within + starts).reshape(1, h, -1)  # [1, h, s_len]

    def _bos_pooling(self, queries, keys, values, keep):
        """Pool every `sf` keys/values with softmax weights from the first token's query."""
        n, h, t, d = keys.shape
        sf = self.geometry.sparsity_factor
        chunk_keys, chunk_values = chunked(keys, sf), chunked(values, sf)  # [n, h, s_len, sf, d]
        first_query = queries[:, :, None, :1, :]  # [n, h, 1, 1, d]
        scores = (first_query @ chunk_keys.transpose(-1, -2)) / math.sqrt(d)  # [n, h, s_len, 1, sf]
        chunk_keep = keep.reshape(n, 1, t // sf, 1, sf)
        scores = scores.masked_fill(~chunk_keep, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        pooled_keys = (weights @ chunk_keys).squeeze(-2)  # [n, h, s_len, d]
        pooled_values = (weights @ chunk_values).squeeze(-2)
        # Reference quirk (get_sparse_tokens_with_bos_pooling): the chunk mask is `mean` of finfo.min values,
        # which overflows to -inf (or is min / sf), never equals finfo.min, and is then reset to "visible".
        # Every pooled token is therefore visible; a fully padded chunk pools its padded keys uniformly.
        return pooled_keys, pooled_values, keep.new_ones(n, h, t // sf)

    def _lsh(self, queries, keys, values, keep):
        """Merge keys that fall in the same random-projection bucket, inside chunks of `min(blk, sbs)` keys."""
        n, h, t, d = keys.shape
        chunk = min(self.geometry.block_size, self.geometry.sparse_block_size)
        visible = keep.to(keys.dtype).reshape(n, 1, t // chunk, chunk, 1)  # [n, 1, t / chunk, chunk, 1]
        chunk_keys = chunked(keys, chunk) * visible  # [n, h, t / chunk, chunk, d]
        chunk_values = chunked(values, chunk) * visible
        counts = visible.expand(n, h, -1, -1, -1)  # [n, h, t / chunk, chunk, 1]
        for _ in range(self.lsh_num_pre_rounds):
            chunk_keys, chunk_values, counts = _lsh_round(chunk_keys, chunk_values, counts, chunk)
        chunk_keys, chunk_values, counts = _lsh_round(
            chunk_keys, chunk_values, counts, chunk // self.geometry.sparsity_factor
        )
        # [n, h, t / chunk, chunk / sf, *]: bucket sums -> means (reference divides by count + 1e-8)
        chunk_keys = chunk_keys / (counts + 1e-8)
        chunk_values = chunk_values / (counts + 1e-8)
        sparse_keep = (counts > 0).reshape(n, h, -1)  # [n, h, s_len], empty buckets are masked
        return chunk_keys.flatten(2, 3), chunk_values.flatten(2, 3), sparse_keep  # [n, h, s_len, d], values' width


def _lsh_round(
    keys: torch.Tensor, values: torch.Tensor, counts: torch.Tensor, buckets: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum keys/values/counts `[n, h, c, m, *]` into `buckets` per chunk by an angular LSH on the keys.

    The projection is drawn from the global torch RNG with the reference's shape `(1, h, 1, d, buckets // 2)`,
    once per round and layer, so a fixed seed reproduces the reference's buckets.
    """
    n, h, c, m, d = keys.shape
    with torch.no_grad():
        projection = torch.randn(1, h, 1, d, buckets // 2, device=keys.device).to(keys.dtype)
        hashed = (F.normalize(keys, dim=-1) * counts.clamp(0, 1)) @ projection  # [n, h, c, m, buckets // 2]
        bucket = torch.cat([hashed, -hashed], dim=-1).argmax(dim=-1, keepdim=True)  # [n, h, c, m, 1]
    keys = keys.new_zeros(n, h, c, buckets, d).scatter_add(-2, bucket.expand(-1, -1, -1, -1, d), keys)
    width = values.shape[-1]  # d, or more (LSGBlockAttention._square_maps passes [values | identity])
    values = values.new_zeros(n, h, c, buckets, width).scatter_add(-2, bucket.expand(-1, -1, -1, -1, width), values)
    counts = counts.new_zeros(n, h, c, buckets, 1).scatter_add(-2, bucket, counts)  # [n, h, c, buckets, 1]
    return keys, values, counts


class LSGBlockAttention(nn.Module):
    """Softmax attention of LSG: full for global queries and short inputs, block-sparse otherwise.

    The kernel of the long path is looked up by name, `config._attn_implementation` (`lsg_kernels.py`), at each call
    as transformers' attention layers do, so `set_attn_implementation` applies to a built model.
    """

    def __init__(self, config: LSGPegasusConfig):
        super().__init__()
        self.config = config
        self.geometry = LSGGeometry.from_config(config)
        self.dropout = config.attention_dropout
        self.select_sparse = SparseTokenSelector(config, self.geometry) if self.geometry.uses_sparse_tokens else None

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        keep: torch.Tensor,
        output_attentions: bool = False,
        attention_rows: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend `[n, h, g + t, d]` queries to the same keys/values; `keep` `[n, g + t]` is True where visible.

        Returns the context `[n, h, g + t, d]` and, if `output_attentions`, the attention probabilities of the
        positions `attention_rows` (`(first, last)`, default all) from which the context is computed (`_with_maps`;
        they need explicit scores, so they are computed as the `eager` kernel computes them, whatever the kernel).
        """
        g, blk = self.geometry.num_global_tokens, self.geometry.block_size
        t = query.shape[2] - g
        dropout = self.dropout if self.training else 0.0
        name = self.config._attn_implementation
        attention_function = lsg_attention_function(name)
        check_kernel_applies(name, self.geometry, dropout, query)
        if output_attentions:
            return self._with_maps(query, key, value, keep, dropout, attention_rows or (0, g + t))
        if t <= 2 * blk:
            # Local windows would cover every token: the reference runs full attention over [globals; tokens].
            return full_attention(query, key, value, keep, dropout), None
        self._check_block_multiple(t)
        return attention_function(self, query, key, value, keep, dropout), None

    def _check_block_multiple(self, t: int) -> None:
        if t % self.geometry.block_size != 0:
            raise ValueError(
                f"the LSG path needs a length that is a multiple of block_size ({self.geometry.block_size}), got {t}"
            )

    def sparse_sequence(self, query, key, value, keep) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """The token queries `[n, h, t, d]`, their visibility `[n, 1, t]` and the sparse sequence: keys and values
        `[n, h, s_len, d]` and visibility `[n, h, s_len]` (three Nones without sparse tokens)."""
        g = self.geometry.num_global_tokens
        queries, token_keep = query[:, :, g:], keep[:, None, g:]  # [n, h, t, d], [n, 1, t]
        if self.select_sparse is None:
            return queries, token_keep, (None, None, None)
        return queries, token_keep, self.select_sparse(queries, key[:, :, g:], value[:, :, g:], token_keep)

    def _with_maps(self, query, key, value, keep, dropout, rows: tuple[int, int]):
        """Context `[n, h, g + t, d]` and the probability maps of the positions `rows` `[first, last)`, laid out
        as `config.attention_maps` says (docs/model.md "Encoder attentions").

        The maps are the tensor the context is computed from (the other rows' probabilities are joined to it, then
        multiplied with the values), so gradients reach them (`retain_grad`, `torch.autograd.grad`). Short inputs
        (full attention) are square in both layouts: `[n, h, rows, g + t]` over the keys `[globals | tokens]`.
        """
        g, blk = self.geometry.num_global_tokens, self.geometry.block_size
        length = query.shape[2]
        t, (first, last) = length - g, rows
        if not 0 <= first <= g <= last <= length:
            raise ValueError(f"attention_rows {rows} must start among the {g} globals and end after them")
        if t <= 2 * blk:  # full attention over [globals; tokens]
            square = probabilities(query, key, additive_mask(keep, query.dtype)[:, None, None, :])  # [n, h, L, L]
            return self._context_of_square(square, value, dropout, rows)
        self._check_block_multiple(t)
        if self.config.attention_maps == "blocks":
            return self._block_maps(query, key, value, keep, dropout, rows)
        return self._context_of_square(self._square_maps(query, key, value, keep), value, dropout, rows)

    @staticmethod
    def _context_of_square(square, value, dropout, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Context `[n, h, L, d]` computed from the square probabilities `[n, h, L, L]` through the reported maps
        `[n, h, last - first, last]` (rows `rows`, keys `[globals | tokens given]`; adaptive padding cut)."""
        first, last = rows
        maps = square[:, :, first:last, :last]
        reported_rows = torch.cat([maps, square[:, :, first:last, last:]], dim=-1)  # [n, h, last - first, L]
        used = torch.cat([square[:, :, :first], reported_rows, square[:, :, last:]], dim=2)  # [n, h, L, L]
        return dropout_probabilities(used.to(value.dtype), dropout) @ value, maps

    def _square_maps(self, query, key, value, keep) -> torch.Tensor:
        """The probabilities each position gives every position `[n, h, L, L]` (L = g + t): a token's keys are
        scattered to their positions, and a sparse key's probability is spread over the tokens its value mixes.

        Every selector is linear in the values (a pick, a mean, softmax-weighted or LSH-bucket sums), so running it
        once on `[values | identity]` gives the sparse values and how each mixes the tokens, `mixing`
        `[n, h, s_len, t]` (sparse value = mixing @ token values), from the same draw (lsh is random).
        """
        n, h, length, d = query.shape
        g, blk = self.geometry.num_global_tokens, self.geometry.block_size
        t = length - g
        if n * h * length * length > SQUARE_MAPS_MAX_ELEMENTS:
            raise ValueError(
                f"output_attentions with attention_maps='square' needs [n, h, L, L] = [{n}, {h}, {length}, {length}] "
                f"maps per layer, over {SQUARE_MAPS_MAX_ELEMENTS} values; set the config key attention_maps='blocks' "
                "(the block layout, linear in length; docs/model.md 'Encoder attentions'), or pass fewer tokens"
            )
        queries, token_keep = query[:, :, g:], keep[:, None, g:]
        sparse, mixing = (None, None, None), None
        if self.select_sparse is not None:
            identity = torch.eye(t, dtype=value.dtype, device=value.device).expand(n, h, t, t)
            sparse_keys, sparse_both, sparse_keep = self.select_sparse(
                queries, key[:, :, g:], torch.cat([value[:, :, g:], identity], dim=-1), token_keep
            )  # [n, h, s_len, d], [n, h, s_len, d + t], [n, h, s_len]
            sparse, mixing = (sparse_keys, sparse_both[..., :d], sparse_keep), sparse_both[..., d:]
        global_probabilities, token_probabilities, layout, _ = explicit_probabilities(
            self.geometry, query, key, value, keep, (queries, token_keep, sparse)
        )  # [n, h, g, L], [n, h, t, k_len]
        k_len, rows = token_probabilities.shape[-1], []
        for first, count in layout.chunks():
            indices = layout.indices(first, count)
            dense = indices.dense.shape[1]  # g + 3 * blk keys: globals and the local window, positions in [0, L)
            chunk = token_probabilities.narrow(2, first * blk, count * blk).view(n, h, count, blk, k_len)
            square = chunk.new_zeros(n, h, count, blk, length)
            # Clamped out-of-range positions carry probability 0, so adding them changes nothing.
            square.scatter_add_(-1, indices.dense.view(1, 1, count, 1, dense).expand(n, h, -1, blk, -1),
                                chunk[..., :dense])  # fmt: skip
            if mixing is not None:
                windows = mixing[:, :, indices.sparse]  # [n, h, count, k_sparse, t]
                square[..., g:] += chunk[..., dense:] @ windows  # [n, h, count, blk, t]
            rows.append(square.view(n, h, count * blk, length))
        return torch.cat([global_probabilities, *rows], dim=2)  # [n, h, L, L]

    def _block_maps(self, query, key, value, keep, dropout, rows: tuple[int, int]):
        """`attention_maps="blocks"`: `[n, h, rows, k_len + g]`; a token row holds its own probabilities over its
        block's `k_len` keys `[globals | local window | sparse]`, then what each global query gives that token; a
        global row holds its probabilities over the global keys (what it gives the tokens is in the tokens' rows),
        then zeros."""
        g = self.geometry.num_global_tokens
        first, last = rows
        global_probabilities, token_probabilities, layout, inputs = explicit_probabilities(
            self.geometry, query, key, value, keep, self.sparse_sequence(query, key, value, keep)
        )  # [n, h, g, g + t], [n, h, t, k_len]
        k_len = token_probabilities.shape[-1]
        # Reported rows: globals [first, g), tokens [0, last - g).
        reported_tokens = last - g
        global_rows = F.pad(global_probabilities[:, :, first:, :g], (0, k_len))  # [n, h, g - first, k_len + g]
        given_by_globals = global_probabilities[:, :, :, g : g + reported_tokens].transpose(-1, -2)
        token_rows = torch.cat([token_probabilities[:, :, :reported_tokens], given_by_globals], dim=-1)
        maps = torch.cat([global_rows, token_rows], dim=2)  # [n, h, last - first, k_len + g]
        # The probabilities used, rebuilt from the maps (and the rows not reported).
        global_used = torch.cat(
            [
                torch.cat([global_probabilities[:, :, :first, :g], maps[:, :, : g - first, :g]], dim=2),
                maps[:, :, g - first :, k_len:].transpose(-1, -2),
                global_probabilities[:, :, :, g + reported_tokens :],
            ],
            dim=-1,
        )  # [n, h, g, g + t]
        token_used = torch.cat(
            [maps[:, :, g - first :, :k_len], token_probabilities[:, :, reported_tokens:]], dim=2
        )  # [n, h, t, k_len]
        global_context = dropout_probabilities(global_used, dropout) @ value  # [n, h, g, d]
        token_context = block_context(layout, inputs, dropout_probabilities(token_used, dropout))  # [n, h, t, d]
        return torch.cat([global_context, token_context], dim=2), maps


class LSGPegasusEncoderSelfAttention(nn.Module):
    """Drop-in for `PegasusAttention` in the encoder: same projections and weight names, LSG attention inside."""

    def __init__(self, config: LSGPegasusConfig):
        super().__init__()
        config.validate_architecture()  # attributes may have been edited after construction
        self.embed_dim = config.d_model
        self.num_heads = config.encoder_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.attention = LSGBlockAttention(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
        attention_rows: tuple[int, int] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states` `[n, g + t, D]`; `attention_mask` `[n, g + t]` bool, True = visible.

        Returns the attention output `[n, g + t, D]` and, if `output_attentions`, the probability maps of the
        positions `attention_rows` (layout: `config.attention_maps`), else None.
        """
        n, length, _ = hidden_states.shape
        head_shape = (n, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(head_shape).transpose(1, 2)  # [n, h, g + t, d]
        key = self.k_proj(hidden_states).view(head_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(head_shape).transpose(1, 2)
        context, weights = self.attention(query, key, value, attention_mask, output_attentions, attention_rows)
        context = context.transpose(1, 2).reshape(n, length, self.embed_dim)  # [n, g + t, D]
        return self.out_proj(context), weights


__all__ = ["LSGBlockAttention", "LSGPegasusEncoderSelfAttention", "SparseTokenSelector"]
