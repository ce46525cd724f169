"""The reference's block attention (LSG_SPEC.md §4-§6) written directly on tensors, for configurations the oracle
files do not cover.

It builds every block's keys the way the reference does, by padding and unfolding the key/value/mask tensors
themselves (`[global | sparse | local]`), and materialises all scores; it shares nothing with `lsg_attention`'s
index arithmetic. Slow and memory-hungry by design: tiny inputs only. `reference_sparse_mixing` writes the sparse
tokens of LSG_SPEC.md §5 the same way, as loops.
"""

import itertools
import math

import torch
import torch.nn.functional as F


def _blocks(x: torch.Tensor, pad: int, size: int, step: int, pad_value: float) -> torch.Tensor:
    """`[n, h, L, d]` -> windows `[n, h, n_windows, size, d]` after padding (or cropping, if negative) dim 2."""
    x = F.pad(x.transpose(-1, -2), (pad, pad), value=pad_value).transpose(-1, -2)
    return x.unfold(2, size, step).transpose(-1, -2)


def _sparse_blocks(x: torch.Tensor, block_size: int, sparse_block_size: int, sparsity_factor: int, pad_value):
    """Reference `reshape_to_sparse_block`: the sparse tokens each query block sees, `[n, h, n_blk, k_sparse, d]`."""
    step = block_size // sparsity_factor
    odd = step % 2
    window = 6 * sparse_block_size
    windows = _blocks(x, (window - step) // 2 + odd, window, step, pad_value)
    if odd:
        windows = windows[:, :, :-1]
    u = (window - 3 * step) // 2 + odd
    u_after = u + odd
    sbs = sparse_block_size
    return torch.cat([windows[..., u - sbs : u, :], windows[..., -u_after : -u_after + sbs, :]], dim=-2)


def reference_lsg_attention(query, key, value, keep, sparse, config) -> torch.Tensor:
    """Context `[n, h, g + t, d]` of LSG attention for `[n, h, g + t, d]` inputs on the long path (`t > 2 * blk`).

    `keep` `[n, g + t]` is True where visible; `sparse` is `(keys, values, keep)` of the sparse sequence
    (`[n, h, s_len, d]`, `[n, h, s_len]`) or None.
    """
    g, blk, sbs, sf = config.num_global_tokens, config.block_size, config.sparse_block_size, config.sparsity_factor
    n, h, length, d = query.shape
    minimum = torch.finfo(query.dtype).min
    additive = torch.zeros(n, 1, length, 1).masked_fill(~keep[:, None, :, None], minimum).expand(n, h, -1, 1)

    def full(q):
        scores = q @ key.transpose(-1, -2) / math.sqrt(d) + additive.transpose(-1, -2)
        return torch.softmax(scores, dim=-1) @ value

    tokens = slice(g, None)
    n_blocks = (length - g) // blk
    parts_k = [_blocks(key[:, :, tokens], blk, 3 * blk, blk, 0.0)]
    parts_v = [_blocks(value[:, :, tokens], blk, 3 * blk, blk, 0.0)]
    parts_m = [_blocks(additive[:, :, tokens], blk, 3 * blk, blk, minimum)]
    if sparse is not None:
        sparse_keys, sparse_values, sparse_keep = sparse
        sparse_mask = torch.zeros(sparse_keep.shape).masked_fill(~sparse_keep, minimum).unsqueeze(-1)
        parts_k.insert(0, _sparse_blocks(sparse_keys, blk, sbs, sf, 0.0))
        parts_v.insert(0, _sparse_blocks(sparse_values, blk, sbs, sf, 0.0))
        parts_m.insert(0, _sparse_blocks(sparse_mask, blk, sbs, sf, minimum))
    parts_k.insert(0, key[:, :, None, :g].expand(-1, -1, n_blocks, -1, -1))
    parts_v.insert(0, value[:, :, None, :g].expand(-1, -1, n_blocks, -1, -1))
    parts_m.insert(0, additive[:, :, None, :g].expand(-1, -1, n_blocks, -1, -1))
    block_keys, block_values = torch.cat(parts_k, dim=3), torch.cat(parts_v, dim=3)  # [n, h, n_blk, K, d]
    block_mask = torch.cat(parts_m, dim=3).transpose(-1, -2)  # [n, h, n_blk, 1, K]
    block_queries = query[:, :, tokens].reshape(n, h, n_blocks, blk, d)
    scores = block_queries @ block_keys.transpose(-1, -2) / math.sqrt(d) + block_mask
    local = (torch.softmax(scores, dim=-1) @ block_values).reshape(n, h, -1, d)
    return torch.cat([full(query[:, :, :g]), local], dim=2)


def reference_sparse_mixing(sparsity_type, queries, keys, keep, blk, sbs, sf):
    """What LSG_SPEC.md section 5 says each sparse token is, as weights over the tokens `[n, h, t // sf, t]`, written
    with loops over heads and chunks (none of the selector's index arithmetic)."""
    n, h, t, d = keys.shape
    mixing = torch.zeros(n, h, t // sf, t)
    for b, head in itertools.product(range(n), range(h)):
        if sparsity_type == "norm":  # largest key norms of each chunk of min(blk, sbs) keys, ascending
            chunk, kept = min(blk, sbs), min(blk, sbs) // sf
            norms = keys[b, head].norm(dim=-1) * keep[b]
            for c in range(t // chunk):
                order = norms[c * chunk : (c + 1) * chunk].argsort()[chunk - kept :] + c * chunk
                for j, position in enumerate(order.tolist()):
                    mixing[b, head, c * kept + j, position] = 1.0
        elif sparsity_type == "stride":  # head i takes j * sf + (i % sf)
            for j in range(t // sf):
                mixing[b, head, j, j * sf + head % sf] = 1.0
        elif sparsity_type == "block_stride":  # per block, a run of blk // sf tokens from i * blk // sf, wrapping
            per_block = blk // sf
            for block, j in itertools.product(range(t // blk), range(per_block)):
                mixing[b, head, block * per_block + j, block * blk + (j + head * per_block) % blk] = 1.0
        elif sparsity_type == "pooling":  # mean of the visible keys of sf consecutive ones (count + 1e-6)
            for j in range(t // sf):
                members = keep[b, j * sf : (j + 1) * sf].float()
                mixing[b, head, j, j * sf : (j + 1) * sf] = members / (members.sum() + 1e-6)
        elif sparsity_type == "bos_pooling":  # softmax weights from the first token's query, per chunk of sf
            for j in range(t // sf):
                scores = keys[b, head, j * sf : (j + 1) * sf] @ queries[b, head, 0] / d**0.5
                scores = scores.masked_fill(~keep[b, j * sf : (j + 1) * sf], torch.finfo(scores.dtype).min)
                mixing[b, head, j, j * sf : (j + 1) * sf] = torch.softmax(scores, dim=-1)
    return mixing
