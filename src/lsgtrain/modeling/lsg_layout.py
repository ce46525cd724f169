"""Shared geometry and index arithmetic of LSG attention: which keys each query block sees, and where to read them.

Every kernel (`lsg_kernels.py`) and the CPU autograd function (`lsg_cpu_function.py`) use these; none of them decides
a layout of its own. Shapes: n batch, h heads, d head_dim, g global tokens, t tokens (after adaptive padding),
blk block_size, n_blk = t // blk, s_len = t // sparsity_factor, sbs sparse_block_size, k_len keys per query block
(`g + 3 * blk + k_sparse`, k_sparse = 2 * sbs with sparse tokens, else 0).
"""

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .configuration_lsg_pegasus import LSGPegasusConfig


def chunked(x: torch.Tensor, size: int) -> torch.Tensor:
    """Split the sequence axis (dim 2) of `[n, h, t, d]` into consecutive chunks: `[n, h, t // size, size, d]`."""
    n, h, t, d = x.shape
    return x.reshape(n, h, t // size, size, d)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens `idx` `[n, h, s_len]` (or broadcastable) out of `x` `[n, h, t, d]`."""
    n, h, _, d = x.shape
    idx = idx.expand(n, h, -1)  # [n, h, s_len]
    return x.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, d))  # [n, h, s_len, d]


def gather_keep(keep: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
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


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `keep` is True, `finfo(dtype).min` elsewhere (the reference's additive mask)."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)


def probabilities(query, key, mask) -> torch.Tensor:
    """`softmax(q k^T / sqrt(d) + mask)` `[n, H, q, k]` in the queries' dtype, the softmax in at least fp32."""
    scores = (query @ key.transpose(-1, -2)) / math.sqrt(query.shape[-1]) + mask  # [n, H, q, k]
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)


def full_attention(query, key, value, keep, dropout: float) -> torch.Tensor:
    """Softmax attention of `[n, h, q, d]` queries over all keys `[n, h, k, d]`, padding keys (`keep` `[n, k]`)
    hidden: the context `[n, h, q, d]` (the reference's `BaseAttentionProduct`)."""
    weights = probabilities(query, key, additive_mask(keep, query.dtype)[:, None, None, :]).to(value.dtype)
    return dropout_probabilities(weights, dropout) @ value


def dropout_probabilities(weights: torch.Tensor, dropout: float) -> torch.Tensor:
    """Attention dropout on probabilities (`dropout` is 0 outside training)."""
    return F.dropout(weights, p=dropout, training=dropout > 0)


class ChunkIndices(NamedTuple):
    """Where one chunk's keys come from (see `BlockLayout.indices`)."""

    dense: torch.Tensor  # [count, g + 3*blk] positions in `key` (globals + tokens)
    dense_keep: torch.Tensor  # [n, 1, count, g + 3*blk]
    sparse: torch.Tensor | None  # [count, k_sparse] positions in the sparse tensors, or [n or 1, h, count*k_sparse]
    sparse_keep: torch.Tensor | None  # [n, h, count, k_sparse]
    rows: torch.Tensor | None = None  # [n * h * count * k_len] rows of `key` / `value` (`BlockLayout(rows_of=...)`)


class BlockLayout:
    """The keys of each query block of one input, as gather indices into `key` (globals + tokens) and the sparse
    sequence, with their visibility. Out-of-range positions are clamped to a valid index and masked.

    The sparse sequence is either separate tensors (`sparse_keys` / `sparse_values` of the chunk functions) or, with
    `sparse_tokens` `[n or 1, h, s_len]`, tokens picked from `key` / `value` themselves.
    """

    def __init__(
        self,
        geometry: LSGGeometry,
        token_keep: torch.Tensor,
        sparse_keep: torch.Tensor | None,
        dtype: torch.dtype,
        sparse_tokens: torch.Tensor | None = None,
        rows_of: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """`token_keep` `[n, 1, t]`; `sparse_keep` `[n, h, s_len]` (None without sparse tokens); `sparse_tokens`
        `[n or 1, h, s_len]` the sparse tokens' positions among the tokens, when they are a choice of tokens.

        With `rows_of=(key, value)` every chunk's keys (globals, local window and, with `sparse_tokens`, sparse
        tokens) are read as rows of `key` / `value` seen as `[rows, d]`: one `index_select` per chunk, no
        concatenation, and one `index_add_` for the gradients. That needs every key to come from `key` (no separate
        sparse tensors) and `key` / `value` laid out alike (`_row_strides`); otherwise chunks gather by position.
        """
        self.g, self.blk = geometry.num_global_tokens, geometry.block_size
        self.token_keep, self.sparse_keep = token_keep, sparse_keep
        self.sparse_tokens = sparse_tokens
        self.t = token_keep.shape[-1]
        self.n_blocks = self.t // self.blk
        self.chunk_blocks = max(1, geometry.chunk_tokens // self.blk)
        # [n_blocks, k_sparse] positions on the sparse sequence, -1 outside it; built once per layer call
        self.sparse_windows = None if sparse_keep is None else geometry.sparse_windows(self.n_blocks, token_keep.device)
        self.min_value = torch.finfo(dtype).min
        self.dtype = dtype
        every_key_in_key = sparse_keep is None or sparse_tokens is not None
        # (batch, head, position) strides of `key` in rows, or None: gather by position
        self.row_strides = _row_strides(*rows_of) if rows_of is not None and every_key_in_key else None
        self.heads = None if self.row_strides is None else rows_of[0].shape[1]

    def chunks(self) -> list[tuple[int, int]]:
        return [
            (first, min(self.chunk_blocks, self.n_blocks - first))
            for first in range(0, self.n_blocks, self.chunk_blocks)
        ]

    def indices(self, first: int, count: int) -> ChunkIndices:
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
            return ChunkIndices(dense_index, dense_keep, None, None, self._rows(dense_index, None))
        sparse_positions = self.sparse_windows[first : first + count]
        inside = sparse_positions >= 0  # [count, k_sparse]
        sparse_positions = sparse_positions.clamp(min=0)
        sparse_keep = self.sparse_keep[:, :, sparse_positions] & inside  # [n, h, count, k_sparse]
        if self.sparse_tokens is None:
            return ChunkIndices(dense_index, dense_keep, sparse_positions, sparse_keep)
        sparse_positions = self.sparse_tokens[:, :, sparse_positions.flatten()] + g  # [n or 1, h, count*k_sparse]
        return ChunkIndices(
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
            block_keys = as_rows(key).index_select(0, rows).view(n, h * count, -1, d)  # [n, h*count, k_len, d]
            block_values = as_rows(value).index_select(0, rows).view(n, h * count, -1, d)
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

    def probabilities(self, first, count, queries, key, value, sparse_keys, sparse_values) -> torch.Tensor:
        """Attention probabilities `[n, h, count*blk, k_len]` of one chunk's queries over their keys."""
        n, h, _, d = queries.shape
        block_queries, block_keys, _, mask = self.gather(first, count, queries, key, value, sparse_keys, sparse_values)
        return probabilities(block_queries, block_keys, mask).view(n, h, count * self.blk, -1)

    def scatter_grads(self, indices, grads, block_grads) -> None:
        """Add a chunk's key/value gradients `[n, h*count, k_len, d]` back to the full tensors at the chunk's
        `indices` (overlapping windows sum, clamped out-of-range positions get the zero gradient of masked keys)."""
        grad_key, grad_value, grad_sparse_keys, grad_sparse_values = grads
        dense_index, _, sparse_index, _, rows = indices
        count = dense_index.shape[0]
        n, _, k_len, d = block_grads[0].shape
        if rows is not None:  # gradient buffers are laid out as `key` / `value` (zeros_like)
            for full, block in ((grad_key, block_grads[0]), (grad_value, block_grads[1])):
                as_rows(full).index_add_(0, rows, block.reshape(-1, d))
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


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` `[n, h, L, d]` (contiguous, or laid out `[n, L, h, d]`) as a `[n * h * L, d]` view of its rows, in memory
    order (the order `BlockLayout.row_strides` counts in)."""
    return (x if x.is_contiguous() else x.transpose(1, 2)).view(-1, x.shape[-1])


def _row_strides(key: torch.Tensor, value: torch.Tensor) -> tuple[int, int, int] | None:
    """Strides of `key` `[n, h, L, d]` counted in rows of `d`, if `key` and `value` are laid out alike, either as
    the projections give them (`[n, L, h, d]` in memory) or contiguous; else None."""
    if key.stride() != value.stride() or not (key.is_contiguous() or key.transpose(1, 2).is_contiguous()):
        return None
    d = key.shape[-1]
    return tuple(stride // d for stride in key.stride()[:3])
