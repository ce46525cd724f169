"""LSG encoder self-attention: global tokens, overlapping local blocks and sparse tokens (arXiv 2210.15497).

Notation used for tensor shapes:
    n: batch, h: heads, d: head_dim, g: global tokens, t: tokens after adaptive padding (globals excluded),
    blk: block_size, n_blk = t // blk, s_len = t // sparsity_factor (sparse sequence), sbs: sparse_block_size,
    k_len: keys seen by one query block = g + 3 * blk + k_sparse (k_sparse = 2 * sbs in the usual layout, 0 without
    sparse tokens; see `LSGGeometry.sparse_windows`).

The numbers follow the reference implementation (`ccdv-ai/convert_checkpoint_to_lsg`, `modeling_lsg_pegasus.py`),
quirks included, so that existing checkpoints keep their outputs. The computation differs: the reference copies every
block's `[global | sparse | local]` keys and values at once and materialises all scores; here query blocks are
processed in chunks, each gathering only its own keys and running a fused flash attention, so memory stays linear
and bounded per chunk and no tensor of size t x t exists (see `LSGBlockAttention._block_attention`);
`output_attentions` takes an eager path whose maps keep that layout (`LSGBlockAttention._with_maps`).
Padding masks are boolean `keep` tensors (True = visible) and become `finfo(dtype).min` scores, which is what the
reference's additive masks give and stays finite in bf16.
"""

import math
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from torch.utils.checkpoint import checkpoint

from .configuration_lsg_pegasus import LSGPegasusConfig


def _chunk(x: torch.Tensor, size: int) -> torch.Tensor:
    """Split the sequence axis (dim 2) of `[n, h, t, d]` into consecutive chunks: `[n, h, t // size, size, d]`."""
    n, h, t, d = x.shape
    return x.reshape(n, h, t // size, size, d)


def _gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens `idx` `[n, h, s_len]` (or broadcastable) out of `x` `[n, h, t, d]`."""
    n, h, _, d = x.shape
    idx = idx.expand(n, h, -1)  # [n, h, s_len]
    return x.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, d))  # [n, h, s_len, d]


def _gather_keep(keep: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Visibility of the tokens `idx` `[n, h, s_len]`, from `keep` `[n, 1, t]`."""
    n, _, t = keep.shape
    idx = idx.expand(n, -1, -1)  # [n, h, s_len]
    return keep.expand(n, idx.shape[1], t).gather(2, idx)  # [n, h, s_len]


@dataclass(frozen=True)
class LSGGeometry:
    """Which keys each block of queries sees, read once from the config; shared by the selector and the layout.

    Query block i (tokens `[i*blk, (i+1)*blk)`) sees the `g` globals, the local window `[(i-1)*blk, (i+2)*blk)` and,
    with sparse tokens, the windows of the compressed sequence that `sparse_windows` gives.
    """

    num_global_tokens: int
    block_size: int
    sparse_block_size: int
    sparsity_factor: int
    uses_sparse_tokens: bool
    # Query tokens per chunk: bounds the gathered keys and values. With block 128, chunks of 128 tokens were as fast
    # as 256 or 512 and left the smallest peak memory (attention benchmark, 4k and 16k tokens).
    chunk_tokens: int = 128
    # Start of block 0's "before" / "after" sparse windows when they are plain runs; derived, see `__post_init__`.
    sparse_starts: tuple[int, int] | None = field(init=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "sparse_starts", self._regular_sparse_starts() if self.uses_sparse_tokens else None)

    @classmethod
    def from_config(cls, config: LSGPegasusConfig) -> "LSGGeometry":
        return cls(
            num_global_tokens=config.num_global_tokens,
            block_size=config.block_size,
            sparse_block_size=config.sparse_block_size,
            sparsity_factor=config.sparsity_factor,
            uses_sparse_tokens=config.uses_sparse_tokens,
        )

    @property
    def sparse_step(self) -> int:
        """Sparse tokens per block of `block_size` tokens."""
        return self.block_size // self.sparsity_factor

    def sparse_windows(self, n_blocks: int, device: torch.device | None = None) -> torch.Tensor:
        """Positions on the sparse sequence seen by each query block `[n_blocks, k_sparse]`; -1 = outside it.

        Built by the reference's own recipe (`reshape_to_sparse_block`) applied to positions instead of vectors:
        pad the sparse sequence by `p` on each side, cut windows of `6 * sbs` every `step`, and take the slices
        `[u - sbs, u)` and `[-u', -u' + sbs)` of each window with Python's slice rules. For an even step (and
        `sbs >= 0.75 * step`) that is the `sbs` sparse tokens right before and after the local window; step 1
        (`blk == sf`) puts the "after" window at the block itself; a smaller `sbs` gives the reference's shorter or
        overlapping windows, reproduced rather than refused.
        """
        step, sbs = self.sparse_step, self.sparse_block_size
        odd = step % 2
        window = 6 * sbs
        pad = (window - step) // 2 + odd
        s_len = n_blocks * step
        positions = torch.arange(-pad, s_len + pad, device=device)
        positions = positions.masked_fill((positions < 0) | (positions >= s_len), -1)
        windows = positions.unfold(0, window, step)  # [n_windows, 6 * sbs]
        if odd:
            windows = windows[:-1]
        u = (window - 3 * step) // 2 + odd
        u_after = u + odd
        return torch.cat([windows[:, u - sbs : u], windows[:, -u_after : -u_after + sbs]], dim=1)

    def _regular_sparse_starts(self) -> tuple[int, int] | None:
        """Where block 0's "before" and "after" sparse windows start (block i adds i * step), if every window is one
        run of `sparse_block_size` consecutive sparse tokens as `sparse_windows` builds them; None otherwise (the
        reference's short or overlapping windows of a small `sparse_block_size`)."""
        step, sbs = self.sparse_step, self.sparse_block_size
        starts = (-1 - sbs, 0) if step == 1 else (-step - sbs, 2 * step)
        n_blocks = 4 * (sbs // step) + 8  # enough blocks for windows fully inside the sparse sequence
        cpu = torch.device("cpu")  # explicit: models are built under a meta-device context by from_pretrained
        first = torch.arange(n_blocks, device=cpu)[:, None] * step
        runs = torch.cat([first + start + torch.arange(sbs, device=cpu) for start in starts], dim=1)
        runs[(runs < 0) | (runs >= n_blocks * step)] = -1
        return starts if torch.equal(runs, self.sparse_windows(n_blocks, cpu)) else None


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
            return _gather_tokens(keys, idx), _gather_tokens(values, idx), sparse_keep
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
        return idx, _gather_keep(keep, idx)

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
        pooled_keys = (_chunk(keys, sf) * weight).sum(dim=-2) / (count + 1e-6)  # [n, h, s_len, d]
        pooled_values = (_chunk(values, sf) * weight).sum(dim=-2) / (count + 1e-6)
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
        chunk_keys, chunk_values = _chunk(keys, sf), _chunk(values, sf)  # [n, h, s_len, sf, d]
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
        chunk_keys = _chunk(keys, chunk) * visible  # [n, h, t / chunk, chunk, d]
        chunk_values = _chunk(values, chunk) * visible
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
        return chunk_keys.reshape(n, h, -1, d), chunk_values.reshape(n, h, -1, d), sparse_keep


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
    zeros = keys.new_zeros(n, h, c, buckets, d)
    keys = zeros.scatter_add(-2, bucket.expand(-1, -1, -1, -1, d), keys)  # [n, h, c, buckets, d]
    values = zeros.scatter_add(-2, bucket.expand(-1, -1, -1, -1, d), values)
    counts = counts.new_zeros(n, h, c, buckets, 1).scatter_add(-2, bucket, counts)  # [n, h, c, buckets, 1]
    return keys, values, counts


class LSGBlockAttention(nn.Module):
    """Softmax attention of LSG: full for global queries and short inputs, block-sparse otherwise."""

    def __init__(self, config: LSGPegasusConfig):
        super().__init__()
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
        positions `attention_rows` (`(first, last)`, default all) from which the context is computed (`_with_maps`).
        """
        g, blk = self.geometry.num_global_tokens, self.geometry.block_size
        t = query.shape[2] - g
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            return self._with_maps(query, key, value, keep, dropout, attention_rows or (0, g + t))
        if t <= 2 * blk:
            # Local windows would cover every token: the reference runs full attention over [globals; tokens].
            return _full_attention(query, key, value, keep, dropout)[0], None
        if t % blk != 0:
            raise ValueError(f"the LSG path needs a length that is a multiple of block_size ({blk}), got {t}")
        queries = query[:, :, g:]  # [n, h, t, d]
        token_keep = keep[:, None, g:]  # [n, 1, t]
        flex = _use_flex_attention(query, dropout, self.geometry)
        cpu_function = not flex and _use_cpu_function(query)
        sparse_keys = sparse_values = sparse_keep = sparse_tokens = None
        if cpu_function and self.select_sparse is not None:
            # Sparse tokens that are a choice of tokens are read from `key` / `value` by index inside the function:
            # no copies, and their gradients land in the key / value gradients directly.
            picked = self.select_sparse.token_indices(key[:, :, g:], token_keep)
            if picked is not None:
                sparse_tokens, sparse_keep = picked  # [n or 1, h, s_len], [n, h, s_len]
        if self.select_sparse is not None and sparse_tokens is None:
            sparse_keys, sparse_values, sparse_keep = self.select_sparse(
                queries, key[:, :, g:], value[:, :, g:], token_keep
            )  # [n, h, s_len, d], [n, h, s_len]
        layout = _BlockLayout(self.geometry, token_keep, sparse_keep, dtype=query.dtype, sparse_tokens=sparse_tokens)
        if cpu_function:
            # Global rows included: no slice of the queries and no concatenation, whose gradients are full copies.
            global_mask = _additive_mask(keep, query.dtype)[:, None, None, :]  # [n, 1, 1, g + t]
            layout.read_rows_of(key, value)
            return _CPUBlockAttention.apply(query, key, value, sparse_keys, sparse_values, layout, global_mask,
                                            dropout), None  # fmt: skip
        # Global queries see every key (reference `not_causal_forward`, "bos" attention).
        global_context, _ = _full_attention(query[:, :, :g], key, value, keep, dropout)  # [n, h, g, d]
        inputs = (queries, key, value, sparse_keys, sparse_values)
        local_context = self._block_attention(layout, inputs, token_keep, sparse_keep, dropout, flex)
        return torch.cat([global_context, local_context], dim=2), None

    def _block_attention(self, layout, inputs, token_keep, sparse_keep, dropout, flex) -> torch.Tensor:
        """Context of the non-global queries `[n, h, t, d]`, in chunks of query blocks.

        Each chunk gathers its blocks' keys and values as `[global | local | sparse before | sparse after]` and runs
        one fused attention over them; no score matrix and no gathered key outlives its chunk, so memory is linear in
        length and bounded by the chunk. On CUDA the chunks become one flex_attention call where it applies (no
        attention dropout), else each chunk is recomputed in backward (activation checkpointing). (CPU takes
        `_CPUBlockAttention`, which keeps each chunk's softmax statistics and computes the backward directly.)
        """
        queries, key, value, sparse_keys, sparse_values = inputs
        if flex:  # `_use_flex_attention`, decided by the caller
            return _flex_block_attention(self.geometry, queries, key, value, token_keep, sparse_keys, sparse_values,
                                         sparse_keep)  # fmt: skip
        contexts = []
        for first, count in layout.chunks():
            attend = partial(layout.attend, first, count, dropout=dropout)
            if torch.is_grad_enabled() and queries.requires_grad:
                contexts.append(checkpoint(attend, *inputs, use_reentrant=False))
            else:
                contexts.append(attend(*inputs))
        return torch.cat(contexts, dim=2)

    def _with_maps(self, query, key, value, keep, dropout, rows: tuple[int, int]):
        """The eager path of `output_attentions`: context `[n, h, g + t, d]` and the probability maps of the
        positions `rows` `[first, last)`, laid out as docs/model.md "Encoder attentions" describes.

        The maps are the tensor the context is computed from (the other rows' probabilities are joined to it, then
        multiplied with the values), so gradients reach them (`retain_grad`, `torch.autograd.grad`). Short inputs
        (full attention): `[n, h, rows, g + t]` over the keys `[globals | tokens]`. Long inputs (blocks):
        `[n, h, rows, k_len + g]`; a token row holds its own probabilities over its block's `k_len` keys
        `[globals | local window | sparse]`, then what each global query gives that token; a global row holds its
        probabilities over the global keys (what it gives the tokens is in the tokens' rows), then zeros.
        """
        g, blk = self.geometry.num_global_tokens, self.geometry.block_size
        n, h, length, d = query.shape
        t, (first, last) = length - g, rows
        if not 0 <= first <= g <= last <= length:
            raise ValueError(f"attention_rows {rows} must start among the {g} globals and end after them")
        global_mask = _additive_mask(keep, query.dtype)[:, None, None, :]  # [n, 1, 1, g + t]
        if t <= 2 * blk:  # full attention over [globals; tokens]
            probabilities = _probabilities(query, key, global_mask)  # [n, h, g + t, g + t]
            maps = probabilities[:, :, first:last]
            used = torch.cat([probabilities[:, :, :first], maps, probabilities[:, :, last:]], dim=2)
            return _dropout(used, dropout) @ value, maps
        if t % blk != 0:
            raise ValueError(f"the LSG path needs a length that is a multiple of block_size ({blk}), got {t}")
        queries, token_keep = query[:, :, g:], keep[:, None, g:]  # [n, h, t, d], [n, 1, t]
        sparse_keys = sparse_values = sparse_keep = None
        if self.select_sparse is not None:
            sparse_keys, sparse_values, sparse_keep = self.select_sparse(
                queries, key[:, :, g:], value[:, :, g:], token_keep
            )  # [n, h, s_len, d], [n, h, s_len]
        layout = _BlockLayout(self.geometry, token_keep, sparse_keep, dtype=query.dtype)
        inputs = (queries, key, value, sparse_keys, sparse_values)
        global_probabilities = _probabilities(query[:, :, :g], key, global_mask)  # [n, h, g, g + t]
        token_probabilities = torch.cat(
            [layout.probabilities(*chunk, *inputs) for chunk in layout.chunks()], dim=2
        )  # [n, h, t, k_len]
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
        token_used = _dropout(token_used, dropout)
        contexts = [_dropout(global_used, dropout) @ value]
        for first_block, count in layout.chunks():
            block_values = layout.gather(first_block, count, *inputs)[2]  # [n, h*count, k_len, d]
            chunk = token_used.narrow(2, first_block * blk, count * blk).reshape(n, h * count, blk, k_len)
            contexts.append((chunk @ block_values).view(n, h, count * blk, d))
        return torch.cat(contexts, dim=2), maps


def _use_flex_attention(query: torch.Tensor, dropout: float, geometry: LSGGeometry) -> bool:
    """On CUDA, one compiled flex_attention call replaces the chunks. flex_attention has no dropout, so training
    with attention dropout keeps the chunked SDPA path (its memory-efficient kernel applies dropout)."""
    return query.device.type == "cuda" and dropout == 0.0 and _flex_supports(geometry)


def _flex_supports(geometry: LSGGeometry) -> bool:
    """Triton tiles need blocks of a multiple of 16 tokens; the sparse windows must be plain runs (no duplicates)."""
    return geometry.block_size % 16 == 0 and (not geometry.uses_sparse_tokens or geometry.sparse_starts is not None)


def _use_cpu_function(query: torch.Tensor) -> bool:
    """CPU takes the custom autograd function (flash kernels, or explicit scores with attention dropout)."""
    return query.device.type == "cpu"


class _ChunkIndices(NamedTuple):
    """Where one chunk's keys come from (see `_BlockLayout.indices`)."""

    dense: torch.Tensor  # [count, g + 3*blk] positions in `key` (globals + tokens)
    dense_keep: torch.Tensor  # [n, 1, count, g + 3*blk]
    sparse: torch.Tensor | None  # [count, k_sparse] positions in the sparse tensors, or [n or 1, h, count*k_sparse]
    sparse_keep: torch.Tensor | None  # [n, h, count, k_sparse]
    rows: torch.Tensor | None = None  # [n * h * count * k_len] rows of `key` / `value` (`_BlockLayout.read_rows_of`)


class _BlockLayout:
    """The keys of each query block of one input, as gather indices into `key` (globals + tokens) and the sparse
    sequence, with their visibility. Out-of-range positions are clamped to a valid index and masked.

    The sparse sequence is either separate tensors (`sparse_keys` / `sparse_values` of the chunk functions) or, with
    `sparse_tokens` `[n or 1, h, s_len]`, tokens picked from `key` / `value` themselves.
    """

    def __init__(
        self, geometry: LSGGeometry, token_keep: torch.Tensor, sparse_keep, dtype: torch.dtype, sparse_tokens=None
    ):
        self.g, self.blk = geometry.num_global_tokens, geometry.block_size
        self.token_keep, self.sparse_keep = token_keep, sparse_keep  # [n, 1, t], [n, h, s_len] or None
        self.sparse_tokens = sparse_tokens
        self.t = token_keep.shape[-1]
        self.n_blocks = self.t // self.blk
        self.chunk_blocks = max(1, geometry.chunk_tokens // self.blk)
        # [n_blocks, k_sparse] positions on the sparse sequence, -1 outside it; built once per layer call
        self.sparse_windows = None if sparse_keep is None else geometry.sparse_windows(self.n_blocks, token_keep.device)
        self.min_value = torch.finfo(dtype).min
        self.dtype = dtype
        self.row_strides = None  # see `read_rows_of`

    def read_rows_of(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Gather every chunk's keys (globals, local window and, with `sparse_tokens`, sparse tokens) as rows of
        `key` / `value` seen as `[rows, d]`: one `index_select` per chunk, no concatenation, and one `index_add_` for
        the gradients. Needs every key to come from `key` (no separate sparse tensors) and `key` / `value` laid out
        alike, either as the projections give them (`[n, L, h, d]` in memory) or contiguous; else nothing changes."""
        if self.sparse_keep is not None and self.sparse_tokens is None:
            return
        if key.stride() != value.stride() or not (key.is_contiguous() or key.transpose(1, 2).is_contiguous()):
            return
        d = key.shape[-1]
        self.row_strides = tuple(stride // d for stride in key.stride()[:3])  # (batch, head, position), in rows
        self.heads = key.shape[1]

    def chunks(self) -> list[tuple[int, int]]:
        return [
            (first, min(self.chunk_blocks, self.n_blocks - first))
            for first in range(0, self.n_blocks, self.chunk_blocks)
        ]

    def indices(self, first: int, count: int) -> _ChunkIndices:
        """Gather indices and visibility of the chunk's keys.

        Dense indices into `key` `[count, g + 3*blk]` with visibility `[n, 1, count, g + 3*blk]`; sparse indices
        `[count, k_sparse]` into the sparse tensors, or `[n or 1, h, count * k_sparse]` into `key` with
        `sparse_tokens`, with visibility `[n, h, count, k_sparse]` (None without sparse tokens).
        """
        g, blk, t = self.g, self.blk, self.t
        device = self.token_keep.device
        blocks = torch.arange(first, first + count, device=device).unsqueeze(1)  # [count, 1]
        positions = (blocks - 1) * blk + torch.arange(3 * blk, device=device)  # [count, 3*blk]
        inside = (positions >= 0) & (positions < t)
        positions = positions.clamp(0, t - 1)
        n = self.token_keep.shape[0]
        local_keep = self.token_keep[:, :, positions] & inside  # [n, 1, count, 3*blk]
        global_keep = local_keep.new_ones(n, 1, count, g)
        dense_index = torch.cat([torch.arange(g, device=device).expand(count, g), positions + g], dim=1)
        dense_keep = torch.cat([global_keep, local_keep], dim=-1)
        if self.sparse_keep is None:
            return _ChunkIndices(dense_index, dense_keep, None, None, self._rows(dense_index, None))
        sparse_positions = self.sparse_windows[first : first + count]
        inside = sparse_positions >= 0  # [count, k_sparse]
        sparse_positions = sparse_positions.clamp(min=0)
        sparse_keep = self.sparse_keep[:, :, sparse_positions] & inside  # [n, h, count, k_sparse]
        if self.sparse_tokens is None:
            return _ChunkIndices(dense_index, dense_keep, sparse_positions, sparse_keep)
        sparse_positions = self.sparse_tokens[:, :, sparse_positions.flatten()] + g  # [n or 1, h, count*k_sparse]
        return _ChunkIndices(
            dense_index, dense_keep, sparse_positions, sparse_keep, self._rows(dense_index, sparse_positions)
        )

    def _rows(self, dense_index: torch.Tensor, sparse_positions: torch.Tensor | None) -> torch.Tensor | None:
        """Rows of the chunk's keys in `key` seen as `[rows, d]`, ordered `[n, h, count, k_len]` (flattened)."""
        if self.row_strides is None:
            return None
        n, h, count = self.token_keep.shape[0], self.heads, dense_index.shape[0]
        device = dense_index.device
        per_batch, per_head, per_position = self.row_strides
        offsets = (torch.arange(n, device=device).view(n, 1, 1, 1) * per_batch
                   + torch.arange(h, device=device).view(1, h, 1, 1) * per_head)  # fmt: skip
        parts = [dense_index.view(1, 1, count, -1)]
        if sparse_positions is not None:
            parts.append(sparse_positions.view(sparse_positions.shape[0], h, count, -1))
        return torch.cat([part * per_position + offsets for part in parts], dim=-1).flatten()

    def gather(self, first, count, queries, key, value, sparse_keys, sparse_values, indices=None):
        """Chunk inputs of flash attention: queries `[n, h*count, blk, d]`, keys/values `[n, h*count, k_len, d]`
        (one attention per head and block) and an additive mask `[n, h*count, 1, k_len]`.

        `indices` is `self.indices(first, count)` when the caller already has it.
        """
        n, h, _, d = queries.shape
        dense_index, dense_keep, sparse_index, sparse_keep, rows = indices or self.indices(first, count)
        keeps = [dense_keep.expand(n, h, -1, -1)] + ([] if sparse_keep is None else [sparse_keep])
        keep = torch.cat(keeps, dim=3).view(n, h * count, 1, -1)  # [n, h*count, 1, k_len]
        if rows is not None:
            block_keys = _as_rows(key).index_select(0, rows).view(n, h * count, -1, d)  # [n, h*count, k_len, d]
            block_values = _as_rows(value).index_select(0, rows).view(n, h * count, -1, d)
        else:
            keys = [key.index_select(2, dense_index.flatten()).view(n, h, count, -1, d)]  # [n, h, count, g+3*blk, d]
            values = [value.index_select(2, dense_index.flatten()).view(n, h, count, -1, d)]
            if sparse_index is not None:
                keys.append(sparse_keys.index_select(2, sparse_index.flatten()).view(n, h, count, -1, d))
                values.append(sparse_values.index_select(2, sparse_index.flatten()).view(n, h, count, -1, d))
            block_keys = torch.cat(keys, dim=3).view(n, h * count, -1, d)  # [n, h*count, k_len, d]
            block_values = torch.cat(values, dim=3).view(n, h * count, -1, d)
        mask = torch.zeros(keep.shape, dtype=self.dtype, device=keep.device).masked_fill_(~keep, self.min_value)
        block_queries = queries.narrow(2, first * self.blk, count * self.blk).reshape(n, h * count, self.blk, d)
        return block_queries, block_keys, block_values, mask

    def attend(self, first, count, queries, key, value, sparse_keys, sparse_values, dropout=0.0) -> torch.Tensor:
        """Context `[n, h, count*blk, d]` of one chunk, with autograd through plain SDPA."""
        n, h, _, d = queries.shape
        block_queries, block_keys, block_values, mask = self.gather(
            first, count, queries, key, value, sparse_keys, sparse_values
        )
        context = F.scaled_dot_product_attention(
            block_queries, block_keys, block_values, attn_mask=mask, dropout_p=dropout
        )
        return context.view(n, h, count * self.blk, d)

    def probabilities(self, first, count, queries, key, value, sparse_keys, sparse_values) -> torch.Tensor:
        """Attention probabilities `[n, h, count*blk, k_len]` of one chunk's queries over their keys."""
        n, h, _, d = queries.shape
        block_queries, block_keys, _, mask = self.gather(first, count, queries, key, value, sparse_keys, sparse_values)
        return _probabilities(block_queries, block_keys, mask).view(n, h, count * self.blk, -1)

    def scatter_grads(self, indices, grads, block_grads) -> None:
        """Add a chunk's key/value gradients `[n, h*count, k_len, d]` back to the full tensors at the chunk's
        `indices` (overlapping windows sum, clamped out-of-range positions get the zero gradient of masked keys)."""
        grad_key, grad_value, grad_sparse_keys, grad_sparse_values = grads
        dense_index, _, sparse_index, _, rows = indices
        count = dense_index.shape[0]
        n, _, k_len, d = block_grads[0].shape
        if rows is not None:  # gradient buffers are laid out as `key` / `value` (zeros_like)
            for full, block in ((grad_key, block_grads[0]), (grad_value, block_grads[1])):
                _as_rows(full).index_add_(0, rows, block.reshape(-1, d))
            return
        h = grad_key.shape[1]
        dense = dense_index.shape[1]
        for full, sparse_full, block in (
            (grad_key, grad_sparse_keys, block_grads[0]),
            (grad_value, grad_sparse_values, block_grads[1]),
        ):
            block = block.reshape(n, h, count, k_len, d)
            full.index_add_(2, dense_index.flatten(), block[:, :, :, :dense].reshape(n, h, -1, d))
            if sparse_index is not None:
                sparse_full.index_add_(2, sparse_index.flatten(), block[:, :, :, dense:].reshape(n, h, -1, d))


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` `[n, h, L, d]` (contiguous, or laid out `[n, L, h, d]`) as a `[n * h * L, d]` view of its rows, in memory
    order (the order `_BlockLayout.row_strides` counts in)."""
    return (x if x.is_contiguous() else x.transpose(1, 2)).view(-1, x.shape[-1])


class _CPUBlockAttention(torch.autograd.Function):
    """LSG attention on CPU, global and token queries, keeping each chunk's log-sum-exp for the backward.

    Saves only its inputs and output (no gathered keys, no scores); backward regathers each chunk's keys, so the
    forward is not recomputed, and accumulates every key and value gradient into one buffer each. Without attention
    dropout each chunk runs CPU's flash kernels; with it (the real checkpoints train with 0.1, which those kernels
    lack) each chunk's scores are formed explicitly, and the backward regenerates the chunk's dropout mask from a
    seed drawn from the global RNG in the forward. The few global queries attend every key with explicit scores.
    """

    @staticmethod
    def forward(ctx, query, key, value, sparse_keys, sparse_values, layout: _BlockLayout, global_mask, dropout):
        n, h, _, d = query.shape
        g, blk = layout.g, layout.blk
        # [n, h, g + t, d] laid out like the projections (`[n, g + t, h, d]` in memory, as SDPA's output is), so
        # that merging the heads afterwards is a view, not a copy.
        context = torch.empty_like(query)
        chunks = layout.chunks()
        seeds = torch.randint(2**62, (len(chunks) + 1,)).tolist() if dropout else [None] * (len(chunks) + 1)
        global_out, global_logsumexp = _explicit_attention_forward(
            query[:, :, :g], key, value, global_mask, dropout, seeds[-1]
        )  # [n, h, g, d], [n, h, g]
        context[:, :, :g] = global_out
        queries = query[:, :, g:]
        # Allocated before the loop, like `context`: chunk-sized buffers freed between long-lived small ones would
        # fragment the heap and keep the process's memory high after the layer.
        logsumexps = global_logsumexp.new_empty(queries.shape[:3])  # [n, h, t]
        for (first, count), seed in zip(chunks, seeds, strict=False):
            block_queries, block_keys, block_values, mask = layout.gather(
                first, count, queries, key, value, sparse_keys, sparse_values
            )
            if dropout:
                out, logsumexp = _explicit_attention_forward(
                    block_queries, block_keys, block_values, mask, dropout, seed
                )
            else:
                out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    block_queries, block_keys, block_values, attn_mask=mask
                )  # [n, h*count, blk, d], [n, h*count, blk]
            context.narrow(2, g + first * blk, count * blk).copy_(out.view(n, h, -1, d))
            logsumexps.narrow(2, first * blk, count * blk).copy_(logsumexp.reshape(n, h, -1))
        ctx.layout, ctx.dropout, ctx.seeds = layout, dropout, seeds
        ctx.save_for_backward(query, key, value, sparse_keys, sparse_values, context, global_mask, global_logsumexp,
                              logsumexps)  # fmt: skip
        return context

    @staticmethod
    def backward(ctx, grad_context):
        query, key, value, sparse_keys, sparse_values, context, global_mask, global_logsumexp, logsumexps = (
            ctx.saved_tensors
        )
        layout, dropout, seeds = ctx.layout, ctx.dropout, ctx.seeds
        n, h, _, d = query.shape
        g, blk = layout.g, layout.blk
        # Laid out like the inputs (so the projections' backward copies nothing); the global rows accumulate into
        # them in place (baddbmm_), the chunks by index_add_.
        grad_query, grad_key, grad_value = (torch.zeros_like(x) for x in (query, key, value))
        grad_sparse_keys = None if sparse_keys is None else torch.zeros_like(sparse_keys)
        grad_sparse_values = None if sparse_values is None else torch.zeros_like(sparse_values)
        grads = (grad_key, grad_value, grad_sparse_keys, grad_sparse_values)
        grad_query[:, :, :g] = _explicit_attention_backward(
            grad_context[:, :, :g], query[:, :, :g], key, value, global_mask, context[:, :, :g], global_logsumexp,
            dropout, seeds[-1], accumulate_into=(grad_key, grad_value),
        )[0]  # fmt: skip
        queries = query[:, :, g:]
        for (first, count), seed in zip(layout.chunks(), seeds, strict=False):
            indices = layout.indices(first, count)  # shared by the gather and the gradient scatter
            block_queries, block_keys, block_values, mask = layout.gather(
                first, count, queries, key, value, sparse_keys, sparse_values, indices
            )
            rows = (n, h * count, blk, d)
            grad_out = grad_context.narrow(2, g + first * blk, count * blk).reshape(rows)
            out = context.narrow(2, g + first * blk, count * blk).reshape(rows)
            logsumexp = logsumexps.narrow(2, first * blk, count * blk).reshape(rows[:3])
            if dropout:
                grad_q, grad_k, grad_v = _explicit_attention_backward(
                    grad_out, block_queries, block_keys, block_values, mask, out, logsumexp, dropout, seed
                )
            else:
                grad_q, grad_k, grad_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                    grad_out, block_queries, block_keys, block_values, out, logsumexp, 0.0, False, attn_mask=mask
                )
            grad_query.narrow(2, g + first * blk, count * blk).copy_(grad_q.reshape(n, h, -1, d))
            layout.scatter_grads(indices, grads, (grad_k, grad_v))
        return grad_query, *grads, None, None, None


def _dropout_keep(shape: torch.Size, dropout: float, seed: int) -> torch.Tensor:
    """The attention-dropout mask of one chunk (True = kept), the same for the same seed."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) >= dropout


def _explicit_attention_forward(query, key, value, mask, dropout, seed) -> tuple[torch.Tensor, torch.Tensor]:
    """`dropout(softmax(q k^T / sqrt(d) + mask)) v` `[n, H, q, d]` with the scores formed explicitly (softmax in at
    least fp32), and the scores' log-sum-exp `[n, H, q]`. The dropout mask is drawn from `seed`."""
    accumulate = torch.promote_types(query.dtype, torch.float32)
    scores = (query @ key.transpose(-1, -2)).to(accumulate).mul_(query.shape[-1] ** -0.5).add_(mask)  # [n, H, q, k]
    logsumexp = scores.logsumexp(dim=-1)
    weights = scores.sub_(logsumexp.unsqueeze(-1)).exp_()
    if dropout:
        weights.masked_fill_(~_dropout_keep(weights.shape, dropout, seed), 0.0).mul_(1.0 / (1.0 - dropout))
    return weights.to(value.dtype) @ value, logsumexp


def _explicit_attention_backward(
    grad_out, query, key, value, mask, out, logsumexp, dropout, seed, accumulate_into=None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `_explicit_attention_forward` for queries, keys and values, from the saved log-sum-exp.

    With `accumulate_into` (key and value gradient buffers `[n, H, k, d]`, any layout), the key and value gradients
    are added to them in place and None is returned for both: no key-sized temporary.
    """
    scale, dtype, accumulate = query.shape[-1] ** -0.5, query.dtype, logsumexp.dtype
    scores = (query @ key.transpose(-1, -2)).to(accumulate).mul_(scale).add_(mask)
    weights = scores.sub_(logsumexp.unsqueeze(-1)).exp_()  # [n, H, q, k]
    dropped = ~_dropout_keep(weights.shape, dropout, seed) if dropout else None
    kept_weights = weights.masked_fill(dropped, 0.0).mul_(1.0 / (1.0 - dropout)) if dropout else weights
    grad_weights = (grad_out @ value.transpose(-1, -2)).to(accumulate)
    if dropout:
        grad_weights.masked_fill_(dropped, 0.0).mul_(1.0 / (1.0 - dropout))
    # softmax backward; sum_j P_ij dP_ij equals dO_i . O_i, with or without dropout
    row_dot = (grad_out.to(accumulate) * out.to(accumulate)).sum(-1, keepdim=True)
    if accumulate_into is None:
        grad_value = kept_weights.to(dtype).transpose(-1, -2) @ grad_out
        del kept_weights
        grad_scores = weights.mul_(grad_weights.sub_(row_dot)).mul_(scale).to(dtype)
        return grad_scores @ key, grad_scores.transpose(-1, -2) @ query, grad_value
    grad_key, grad_value = accumulate_into

    def add_product(buffer, left, right):  # buffer [n, H, k, d] += left [n, H, k, q] @ right [n, H, q, d]
        for item in range(buffer.shape[0]):  # per batch item: baddbmm_ accumulates into strided buffers in place
            buffer[item].baddbmm_(left[item], right[item])

    add_product(grad_value, kept_weights.to(dtype).transpose(-1, -2), grad_out)
    del kept_weights
    grad_scores = weights.mul_(grad_weights.sub_(row_dot)).mul_(scale).to(dtype)
    add_product(grad_key, grad_scores.transpose(-1, -2), query)
    return grad_scores @ key, None, None


@lru_cache(maxsize=16)
def _flex_candidate_blocks(geometry: LSGGeometry, n_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KV blocks each query block may see, for `n_blocks` query blocks: the local ones `[n_blocks, 3]` and the
    global and sparse ones `[n_blocks, m]` (-1 pads both). KV blocks: `[globals, padded | tokens | sparse, padded]`."""
    blk, g = geometry.block_size, geometry.num_global_tokens
    global_blocks = -(-g // blk)
    local = [[global_blocks + j if 0 <= j < n_blocks else -1 for j in (b - 1, b, b + 1)] for b in range(n_blocks)]
    others = [list(range(global_blocks)) for _ in range(n_blocks)]
    if geometry.uses_sparse_tokens:
        step, sbs = geometry.sparse_step, geometry.sparse_block_size
        first_sparse_block, s_len = global_blocks + n_blocks, n_blocks * step
        for b, blocks in enumerate(others):
            for start in geometry.sparse_starts:
                low, high = max(b * step + start, 0), min(b * step + start + sbs, s_len)
                if low < high:
                    blocks.extend(range(first_sparse_block + low // blk, first_sparse_block + (high - 1) // blk + 1))
    width = max(len(blocks) for blocks in others)
    others = [sorted(set(blocks)) + [-1] * (width - len(set(blocks))) for blocks in others]
    return torch.tensor(local), torch.tensor(others)


def _flex_block_attention(geometry, queries, key, value, token_keep, sparse_keys, sparse_values, sparse_keep):
    """Context `[n, h, t, d]` of the token queries as one flex_attention call over
    `[globals, padded to a block | tokens | sparse tokens, padded to a block]` keys and values."""
    n, h, t, d = queries.shape
    g, blk = geometry.num_global_tokens, geometry.block_size
    global_pad = -g % blk
    keys = [key[:, :, :g], key.new_zeros(n, h, global_pad, d), key[:, :, g:]]
    values = [value[:, :, :g], value.new_zeros(n, h, global_pad, d), value[:, :, g:]]
    keeps = [token_keep.new_ones(n, h, g), token_keep.new_zeros(n, h, global_pad), token_keep.expand(n, h, t)]
    if sparse_keys is not None:
        sparse_pad = -sparse_keys.shape[2] % blk
        keys += [sparse_keys, key.new_zeros(n, h, sparse_pad, d)]
        values += [sparse_values, value.new_zeros(n, h, sparse_pad, d)]
        keeps += [sparse_keep, token_keep.new_zeros(n, h, sparse_pad)]
    block_mask = lsg_block_mask(geometry, torch.cat(keeps, dim=2), t)
    attend = _compiled_flex_attention() if queries.device.type == "cuda" else flex_attention
    return attend(queries, torch.cat(keys, dim=2), torch.cat(values, dim=2), block_mask=block_mask)


def lsg_block_mask(geometry: LSGGeometry, kv_keep: torch.Tensor, t: int) -> BlockMask:
    """The `BlockMask` of `t` token queries over the keys of `_flex_block_attention`, whose visibility is
    `kv_keep` `[n, h, kv_len]`; built from the block layout, never by evaluating the mask on every pair.

    KV blocks are LSG blocks, so each query block's local window is exactly three KV blocks, kept "full" (no mask
    evaluation) where none of their tokens is padding. Globals, sparse windows and padded local blocks are
    "partial": `mask_mod` checks the window and each key's visibility there.
    """
    n = kv_keep.shape[0]
    g, blk = geometry.num_global_tokens, geometry.block_size
    n_blocks, globals_end, kv_len = t // blk, g + (-g % blk), kv_keep.shape[-1]
    before, after = geometry.sparse_starts or (0, 0)
    step, sbs = max(geometry.sparse_step, 1), geometry.sparse_block_size

    def mask_mod(b, head, q_idx, kv_idx):
        q_block = q_idx // blk
        token = kv_idx - globals_end
        local = (token >= 0) & (token < t) & ((token // blk - q_block).abs() <= 1)
        sparse = kv_idx - globals_end - t
        in_before = (sparse - q_block * step - before >= 0) & (sparse - q_block * step - before < sbs)
        in_after = (sparse - q_block * step - after >= 0) & (sparse - q_block * step - after < sbs)
        in_sparse = (sparse >= 0) & (in_before | in_after)
        return kv_keep[b, head, kv_idx] & ((kv_idx < g) | local | in_sparse)

    local, others = (x.to(kv_keep.device) for x in _flex_candidate_blocks(geometry, n_blocks))
    block_keep = kv_keep[:, 0, globals_end : globals_end + t].view(n, n_blocks, blk)
    all_visible, any_visible = block_keep.all(-1), block_keep.any(-1)  # [n, n_blocks]
    token_block = (local - globals_end // blk).clamp(min=0)  # [n_blocks, 3]
    full = (local >= 0) & all_visible[:, token_block]  # [n, n_blocks, 3]
    partial = (local >= 0) & any_visible[:, token_block] & ~full

    def as_kv_blocks(blocks):  # -1-padded [n, n_blocks, m] -> counts [n, 1, n_blocks], indices [n, 1, n_blocks, kv]
        blocks = F.pad(blocks.sort(dim=-1, descending=True).values, (0, kv_len // blk - blocks.shape[-1]), value=-1)
        return (blocks >= 0).sum(-1, dtype=torch.int32)[:, None], blocks.clamp(min=0).to(torch.int32)[:, None]

    partial_blocks = torch.cat([local.where(partial, -1), others.expand(n, -1, -1)], dim=-1)
    return BlockMask.from_kv_blocks(
        *as_kv_blocks(partial_blocks), *as_kv_blocks(local.where(full, -1)), BLOCK_SIZE=blk, mask_mod=mask_mod,
        seq_lengths=(t, kv_len),
    )  # fmt: skip


@lru_cache(maxsize=1)
def _compiled_flex_attention():
    """flex_attention compiled once (Triton on CUDA); uncompiled it runs a slow reference implementation."""
    return torch.compile(flex_attention, dynamic=False)


def _additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `keep` is True, `finfo(dtype).min` elsewhere (the reference's additive mask)."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)


def _full_attention(query, key, value, keep, dropout) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of `[n, h, q, d]` queries over all keys `[n, h, k, d]`, padding keys hidden.

    Returns the context `[n, h, q, d]` and the weights `[n, h, q, k]`."""
    return _softmax_attention(query, key, value, _additive_mask(keep, query.dtype)[:, None, None, :], dropout)


def _softmax_attention(query, key, value, mask, dropout) -> tuple[torch.Tensor, torch.Tensor]:
    """`softmax(q k^T / sqrt(d) + mask) v` (the reference's formula), returning the context and the weights."""
    weights = _probabilities(query, key, mask).to(value.dtype)
    return _dropout(weights, dropout) @ value, weights


def _probabilities(query, key, mask) -> torch.Tensor:
    """`softmax(q k^T / sqrt(d) + mask)` `[n, H, q, k]` in the queries' dtype, the softmax in at least fp32."""
    scores = (query @ key.transpose(-1, -2)) / math.sqrt(query.shape[-1]) + mask  # [n, H, q, k]
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)


def _dropout(weights: torch.Tensor, dropout: float) -> torch.Tensor:
    return F.dropout(weights, p=dropout, training=dropout > 0)


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
        positions `attention_rows` (layout in `LSGBlockAttention._with_maps`), else None.
        """
        n, length, _ = hidden_states.shape
        head_shape = (n, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(head_shape).transpose(1, 2)  # [n, h, g + t, d]
        key = self.k_proj(hidden_states).view(head_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(head_shape).transpose(1, 2)
        context, weights = self.attention(query, key, value, attention_mask, output_attentions, attention_rows)
        context = context.transpose(1, 2).reshape(n, length, self.embed_dim)  # [n, g + t, D]
        return self.out_proj(context), weights


__all__ = ["LSGBlockAttention", "LSGGeometry", "LSGPegasusEncoderSelfAttention", "SparseTokenSelector"]
