"""LSG encoder self-attention: global tokens, overlapping local blocks and sparse tokens (arXiv 2210.15497).

Notation used for tensor shapes:
    n: batch, h: heads, d: head_dim, g: global tokens, t: tokens after adaptive padding (globals excluded),
    blk: block_size, n_blk = t // blk, s_len = t // sparsity_factor (sparse sequence), sbs: sparse_block_size,
    k_len: keys seen by one query block = g + 2 * sbs + 3 * blk (g + 3 * blk without sparse tokens).

The numbers follow the reference implementation (`ccdv-ai/convert_checkpoint_to_lsg`, `modeling_lsg_pegasus.py`),
quirks included, so that existing checkpoints keep their outputs. The layout differs: the reference copies keys and
values into one `[global | sparse | local]` tensor per block; here each part is scored against its own view and
only the scores are concatenated, so no key or value is duplicated and no tensor of size t x t exists.
Padding masks are boolean `keep` tensors (True = visible) and become `finfo(dtype).min` scores, which is what the
reference's additive masks give and stays finite in bf16.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
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


class SparseTokenSelector:
    """Builds the compressed sparse sequence (keys, values, visibility) from the non-global tokens.

    Every builder takes queries/keys/values `[n, h, t, d]` and `keep` `[n, 1, t]` and returns keys and values
    `[n, h, t // sf, d]` plus their visibility `[n, h, t // sf]`.
    """

    def __init__(self, config: LSGPegasusConfig):
        self.block_size = config.block_size
        self.sparse_block_size = config.sparse_block_size
        self.sparsity_factor = config.sparsity_factor
        self.lsh_num_pre_rounds = config.lsh_num_pre_rounds
        self.sparsity_type = config.sparsity_type
        if self.sparsity_type == "lsh" and self.sparsity_factor == self.sparse_block_size:
            # Reference quirk (get_sparse_tokens_with_lsh): lsh with sf == sbs silently runs bos_pooling.
            self.sparsity_type = "bos_pooling"

    def __call__(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.sparsity_factor == 1:  # the sparse sequence is the sequence itself
            n, h = keys.shape[:2]
            return keys, values, keep.expand(n, h, -1)
        build = getattr(self, f"_{self.sparsity_type}")
        return build(queries, keys, values, keep)

    def _norm(self, queries, keys, values, keep):
        """Keep the `c // sf` keys of largest L2 norm in every chunk of `c = min(blk, sbs)` keys, per head."""
        n, h, t, d = keys.shape
        chunk = min(self.block_size, self.sparse_block_size)
        kept = chunk // self.sparsity_factor
        with torch.no_grad():
            norms = keys.norm(dim=-1) * keep  # [n, h, t], padded keys get norm 0
            order = norms.reshape(n, h, t // chunk, chunk).argsort(dim=-1)  # [n, h, t / chunk, chunk], ascending
            offsets = torch.arange(0, t, chunk, device=keys.device).view(1, 1, -1, 1)
            idx = (order[..., chunk - kept :] + offsets).reshape(n, h, -1)  # [n, h, s_len]
        return _gather_tokens(keys, idx), _gather_tokens(values, idx), _gather_keep(keep, idx)

    def _pooling(self, queries, keys, values, keep):
        """Average every `sf` consecutive keys/values over their visible members."""
        n, h, t, d = keys.shape
        sf = self.sparsity_factor
        weight = keep.to(keys.dtype).reshape(n, 1, t // sf, sf, 1)  # [n, 1, s_len, sf, 1]
        count = weight.sum(dim=-2)  # [n, 1, s_len, 1]
        # The reference divides by count + 1e-6, not by count: kept for identical numbers.
        pooled_keys = (_chunk(keys, sf) * weight).sum(dim=-2) / (count + 1e-6)  # [n, h, s_len, d]
        pooled_values = (_chunk(values, sf) * weight).sum(dim=-2) / (count + 1e-6)
        return pooled_keys, pooled_values, (count.squeeze(-1) > 0).expand(n, h, -1)

    def _stride(self, queries, keys, values, keep):
        """Head i takes tokens `j * sf + (i % sf)`."""
        n, h, t, d = keys.shape
        sf = self.sparsity_factor
        heads = torch.arange(h, device=keys.device).view(1, h, 1)
        idx = torch.arange(0, t, sf, device=keys.device).view(1, 1, -1) + heads % sf  # [1, h, s_len]
        return _gather_tokens(keys, idx), _gather_tokens(values, idx), _gather_keep(keep, idx)

    def _block_stride(self, queries, keys, values, keep):
        """In every block, head i takes a contiguous run of `blk // sf` tokens starting at `i * blk // sf`."""
        n, h, t, d = keys.shape
        blk, per_block = self.block_size, self.block_size // self.sparsity_factor
        heads = torch.arange(h, device=keys.device).view(1, h, 1, 1)
        within = (torch.arange(per_block, device=keys.device).view(1, 1, 1, -1) + heads * per_block) % blk
        starts = torch.arange(0, t, blk, device=keys.device).view(1, 1, -1, 1)
        idx = (within + starts).reshape(1, h, -1)  # [1, h, s_len]
        return _gather_tokens(keys, idx), _gather_tokens(values, idx), _gather_keep(keep, idx)

    def _bos_pooling(self, queries, keys, values, keep):
        """Pool every `sf` keys/values with softmax weights from the first token's query."""
        n, h, t, d = keys.shape
        sf = self.sparsity_factor
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
        chunk = min(self.block_size, self.sparse_block_size)
        visible = keep.to(keys.dtype).reshape(n, 1, t // chunk, chunk, 1)  # [n, 1, t / chunk, chunk, 1]
        chunk_keys = _chunk(keys, chunk) * visible  # [n, h, t / chunk, chunk, d]
        chunk_values = _chunk(values, chunk) * visible
        counts = visible.expand(n, h, -1, -1, -1)  # [n, h, t / chunk, chunk, 1]
        for _ in range(self.lsh_num_pre_rounds):
            chunk_keys, chunk_values, counts = _lsh_round(chunk_keys, chunk_values, counts, chunk)
        chunk_keys, chunk_values, counts = _lsh_round(chunk_keys, chunk_values, counts, chunk // self.sparsity_factor)
        # [n, h, t / chunk, chunk / sf, *]: bucket sums -> means (reference divides by count + 1e-8)
        chunk_keys = chunk_keys / (counts + 1e-8)
        chunk_values = chunk_values / (counts + 1e-8)
        sparse_keep = (counts > 0).reshape(n, h, -1)  # [n, h, s_len], empty buckets are masked
        return chunk_keys.reshape(n, h, -1, d), chunk_values.reshape(n, h, -1, d), sparse_keep

    def _none(self, queries, keys, values, keep):
        raise RuntimeError("sparsity_type='none' has no sparse tokens")


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


def _sparse_window_offsets(block_size: int, sparse_block_size: int, sparsity_factor: int) -> tuple[int, int]:
    """Start of the sparse tokens before / after query block 0, on the sparse sequence (block i adds i * step).

    Reproduces the windows of the reference's `reshape_to_sparse_block`: for an even step (`blk // sf`) block i
    sees the `sbs` sparse tokens right before and right after its local window `[(i-1)*blk, (i+2)*blk)`; for a
    step of 1 (`blk == sf`) the "after" window starts at block i itself.
    """
    step = block_size // sparsity_factor
    odd = step % 2
    window = 6 * sparse_block_size
    pad = (window - step) // 2 + odd
    inner = (window - 3 * step) // 2 + odd
    before = inner - pad - sparse_block_size
    after = window - (inner + odd) - pad
    return before, after


def _block_windows(x: torch.Tensor, start: int, size: int, step: int, n_blocks: int, pad: int) -> torch.Tensor:
    """Windows `x[start + i*step : start + i*step + size]` for i < n_blocks, out of range = padding.

    `x` is `[..., t, d]` or `[..., t]` already padded by `pad` on both sides of the sequence axis; the result is a
    view `[..., n_blocks, d, size]` (or `[..., n_blocks, size]`).
    """
    seq_dim = -2 if x.dim() == 4 else -1
    first = start + pad
    span = x.narrow(seq_dim, first, (n_blocks - 1) * step + size)
    return span.unfold(seq_dim, size, step)


class LSGBlockAttention(nn.Module):
    """Softmax attention of LSG: full for global queries and short inputs, block-sparse otherwise."""

    def __init__(self, config: LSGPegasusConfig):
        super().__init__()
        self.block_size = config.block_size
        self.sparse_block_size = config.sparse_block_size
        self.sparsity_factor = config.sparsity_factor
        self.num_global_tokens = config.num_global_tokens
        self.dropout = config.attention_dropout
        self.select_sparse = SparseTokenSelector(config) if config.uses_sparse_tokens else None
        # Query tokens attended per chunk: bounds the gathered keys/values (about 5x the chunk's keys).
        self.chunk_tokens = 2048

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Attend `[n, h, g + t, d]` queries to the same keys/values; `keep` `[n, g + t]` is True where visible.

        Returns the context `[n, h, g + t, d]`.
        """
        g, blk = self.num_global_tokens, self.block_size
        t = query.shape[2] - g
        dropout = self.dropout if self.training else 0.0
        if t <= 2 * blk:
            # Local windows would cover every token: the reference runs full attention over [globals; tokens].
            return _full_attention(query, key, value, keep, dropout)
        if t % blk != 0:
            raise ValueError(f"the LSG path needs a length that is a multiple of block_size ({blk}), got {t}")
        # Global queries see every key (reference `not_causal_forward`, "bos" attention).
        global_context = _full_attention(query[:, :, :g], key, value, keep, dropout)  # [n, h, g, d]
        local_context = self._block_attention(query, key, value, keep, dropout)  # [n, h, t, d]
        return torch.cat([global_context, local_context], dim=2)

    def _block_attention(self, query, key, value, keep, dropout):
        """Context of the non-global queries `[n, h, t, d]`, computed in chunks of blocks.

        Each chunk gathers its blocks' keys and values as `[global | sparse before | sparse after | local]` and
        runs one fused `scaled_dot_product_attention`; in training the chunk is recomputed in backward
        (activation checkpointing), so neither scores nor gathered keys outlive their chunk: memory stays linear
        in length and bounded by the chunk.
        """
        g, blk = self.num_global_tokens, self.block_size
        n, h, total, d = query.shape
        t = total - g
        n_blocks = t // blk
        keys, values = key[:, :, g:], value[:, :, g:]  # [n, h, t, d]
        token_keep = keep[:, None, g:]  # [n, 1, t]
        sources = {
            "global_keys": key[:, :, :g],  # [n, h, g, d]
            "global_values": value[:, :, :g],
            # Local windows: block i sees tokens [(i-1)*blk, (i+2)*blk); out of range is masked padding.
            "local_keys": F.pad(keys, (0, 0, blk, blk)),  # [n, h, t + 2*blk, d]
            "local_values": F.pad(values, (0, 0, blk, blk)),
            "local_keep": F.pad(token_keep, (blk, blk), value=False),  # [n, 1, t + 2*blk]
        }
        if self.select_sparse is not None:
            sparse_keys, sparse_values, sparse_keep = self.select_sparse(query[:, :, g:], keys, values, token_keep)
            pad = self.sparse_block_size + blk // self.sparsity_factor  # room for the first and last windows
            sources["sparse_keys"] = F.pad(sparse_keys, (0, 0, pad, pad))  # [n, h, s_len + 2*pad, d]
            sources["sparse_values"] = F.pad(sparse_values, (0, 0, pad, pad))
            sources["sparse_keep"] = F.pad(sparse_keep, (pad, pad), value=False)  # [n, h, s_len + 2*pad]
        queries = query[:, :, g:]  # [n, h, t, d]
        chunk = max(1, self.chunk_tokens // blk)
        contexts = []
        for first in range(0, n_blocks, chunk):
            count = min(chunk, n_blocks - first)
            args = (queries.narrow(2, first * blk, count * blk), first, count, dropout, *sources.values())
            if torch.is_grad_enabled() and query.requires_grad:
                contexts.append(checkpoint(self._chunk_attention, *args, use_reentrant=False))
            else:
                contexts.append(self._chunk_attention(*args))
        return torch.cat(contexts, dim=2) if len(contexts) > 1 else contexts[0]

    def _chunk_attention(self, queries, first, count, dropout, *sources):
        """Attention of `count` query blocks starting at block `first`: queries `[n, h, count*blk, d]`."""
        g, blk, sbs = self.num_global_tokens, self.block_size, self.sparse_block_size
        global_keys, global_values, local_keys, local_values, local_keep, *sparse = sources
        n, h, _, d = queries.shape
        # [n, h, count, k_part, d] keys/values and [n, h|1, count, k_part] visibility per part
        key_parts = [global_keys.unsqueeze(2).expand(-1, -1, count, -1, -1)]  # [n, h, count, g, d]
        value_parts = [global_values.unsqueeze(2).expand(-1, -1, count, -1, -1)]
        keep_parts = [local_keep.new_ones(1, 1, 1, 1).expand(n, h, count, g)]  # globals always visible
        windows = [((first - 1) * blk, 3 * blk, blk, blk, local_keys, local_values, local_keep)]
        if sparse:
            step = blk // self.sparsity_factor
            for offset in _sparse_window_offsets(blk, sbs, self.sparsity_factor):
                windows.append((offset + first * step, sbs, step, sbs + step, *sparse))
        for start, size, step, pad, part_keys, part_values, part_keep in windows:
            # window views are [n, h, count, d, size]; the key axis goes before d
            key_parts.append(_block_windows(part_keys, start, size, step, count, pad).transpose(-1, -2))
            value_parts.append(_block_windows(part_values, start, size, step, count, pad).transpose(-1, -2))
            keep_parts.append(_block_windows(part_keep, start, size, step, count, pad).expand(n, h, -1, -1))
        block_keys = torch.cat(key_parts, dim=3)  # [n, h, count, k_len, d], the only copy of the keys
        block_values = torch.cat(value_parts, dim=3)
        block_keep = torch.cat(keep_parts, dim=3)  # [n, h, count, k_len]
        k_len = block_keys.shape[3]
        context = F.scaled_dot_product_attention(
            queries.reshape(n, h * count, blk, d),  # [n, h*count, blk, d]: one attention per (head, block)
            block_keys.reshape(n, h * count, k_len, d),
            block_values.reshape(n, h * count, k_len, d),
            attn_mask=block_keep.reshape(n, h * count, 1, k_len),
            dropout_p=dropout,
        )  # [n, h*count, blk, d]
        return context.reshape(n, h, count * blk, d)


def _full_attention(query, key, value, keep, dropout) -> torch.Tensor:
    """Softmax attention of `[n, h, q, d]` queries over all keys `[n, h, k, d]`, padding keys hidden."""
    d = query.shape[-1]
    scores = (query @ key.transpose(-1, -2)) / math.sqrt(d)  # [n, h, q, k]
    scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return probs @ value  # [n, h, q, d]


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

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> tuple[torch.Tensor, None]:
        """`hidden_states` `[n, g + t, D]`; `attention_mask` `[n, g + t]` bool, True = visible.

        Returns the attention output `[n, g + t, D]` and `None` (attention maps are never materialised).
        """
        n, length, _ = hidden_states.shape
        head_shape = (n, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(head_shape).transpose(1, 2)  # [n, h, g + t, d]
        key = self.k_proj(hidden_states).view(head_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(head_shape).transpose(1, 2)
        context = self.attention(query, key, value, attention_mask)  # [n, h, g + t, d]
        context = context.transpose(1, 2).reshape(n, length, self.embed_dim)  # [n, g + t, D]
        return self.out_proj(context), None


__all__ = ["LSGBlockAttention", "LSGPegasusEncoderSelfAttention", "SparseTokenSelector"]
