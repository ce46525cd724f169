"""The kernels of LSG attention: one plain function each, one signature, chosen once by name.

`LSGBlockAttention` looks its kernel up by `config._attn_implementation`, transformers' key, which also picks the
decoder's attention (as `ALL_ATTENTION_FUNCTIONS.get_interface` does there); `from_pretrained(...,
attn_implementation=...)` and `model.set_attn_implementation(...)` set it for the whole model:

    name                encoder, inputs longer than two blocks                            decoder
    sdpa (default)      CPU: `CPUBlockAttention` (flash kernels per chunk, own backward);  SDPA
                        CUDA: one flex_attention call where it applies (no attention
                        dropout, `flex_applies`), else chunked SDPA, checkpointed
    eager               explicit scores, autograd through plain ops                       eager
    flex_attention      one flex_attention call (CUDA; forward only on CPU)               flex_attention
    flash_attention_2   as sdpa: flash-attn has no LSG block layout                        flash-attn

Signature: `kernel(module, query, key, value, keep, dropout) -> context`: query, key and value `[n, h, g + t, d]`
(globals first), `keep` `[n, g + t]` True where visible, the context `[n, h, g + t, d]`; `module` is the
`LSGBlockAttention` (its `geometry` and `sparse_sequence`). Inputs of at most two blocks are full attention and
never reach a kernel. Shapes as in `lsg_layout.py`.
"""

from functools import lru_cache, partial

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from torch.utils.checkpoint import checkpoint

from .lsg_cpu_function import CPUBlockAttention
from .lsg_layout import BlockLayout, LSGGeometry, additive_mask, dropout_probabilities, full_attention, probabilities


def lsg_eager_attention(module, query, key, value, keep, dropout: float) -> torch.Tensor:
    """Explicit scores `softmax(q k^T / sqrt(d) + mask)` for the global rows over every key and for each chunk's
    rows over its keys; dropout on the probabilities; autograd through plain ops (memory linear in length)."""
    global_probabilities, token_probabilities, layout, inputs = explicit_probabilities(
        module.geometry, query, key, value, keep, module.sparse_sequence(query, key, value, keep)
    )
    global_context = dropout_probabilities(global_probabilities, dropout) @ value  # [n, h, g, d]
    token_context = block_context(layout, inputs, dropout_probabilities(token_probabilities, dropout))
    return torch.cat([global_context, token_context], dim=2)


def lsg_sdpa_attention(module, query, key, value, keep, dropout: float) -> torch.Tensor:
    """The fused kernels: on CPU the custom autograd function (`lsg_cpu_function.py`), on CUDA one flex_attention
    call where it applies (flex_attention has no attention dropout), else chunked SDPA (its memory-efficient kernel
    applies dropout), each chunk recomputed in backward."""
    if query.device.type == "cpu":
        return _cpu_function_attention(module, query, key, value, keep, dropout)
    if dropout == 0.0 and flex_applies(module.geometry, query.device):
        return lsg_flex_attention(module, query, key, value, keep, dropout)
    return _chunked_sdpa_attention(module, query, key, value, keep, dropout)


def lsg_flex_attention(module, query, key, value, keep, dropout: float) -> torch.Tensor:
    """The token rows as one flex_attention call over `[globals | tokens | sparse tokens]` (`lsg_block_mask`); the
    few global rows by explicit scores. `check_kernel_applies` has refused attention dropout."""
    g = module.geometry.num_global_tokens
    queries, token_keep, (sparse_keys, sparse_values, sparse_keep) = module.sparse_sequence(query, key, value, keep)
    global_context = full_attention(query[:, :, :g], key, value, keep, dropout)  # [n, h, g, d]
    token_context = _flex_block_attention(
        module.geometry, queries, key, value, token_keep, sparse_keys, sparse_values, sparse_keep
    )  # [n, h, t, d]
    return torch.cat([global_context, token_context], dim=2)


LSG_ATTENTION_FUNCTIONS = {
    "sdpa": lsg_sdpa_attention,
    "eager": lsg_eager_attention,
    "flex_attention": lsg_flex_attention,
    "flash_attention_2": lsg_sdpa_attention,
}


def lsg_attention_function(name: str | None):
    """The encoder kernel named `name` (`config._attn_implementation`; None, a config not yet given to a model, is
    transformers' default `sdpa`)."""
    if name is None:
        return lsg_sdpa_attention
    if name not in LSG_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"attn_implementation={name!r} has no LSG encoder kernel; choose one of {sorted(LSG_ATTENTION_FUNCTIONS)}"
        )
    return LSG_ATTENTION_FUNCTIONS[name]


def check_kernel_applies(name: str | None, geometry: LSGGeometry, dropout: float, query: torch.Tensor) -> None:
    """Refuse a forced flex_attention where it cannot run, naming the alternatives (no silent fallback)."""
    if name != "flex_attention":
        return
    others = "attn_implementation='sdpa' (the default) or 'eager'"
    if dropout > 0.0:
        raise ValueError(
            f"attn_implementation='flex_attention' has no attention dropout, and this model trains with "
            f"attention_dropout={dropout}: set attention_dropout=0.0 or use {others}"
        )
    if query.device.type != "cuda" and torch.is_grad_enabled() and query.requires_grad:
        raise ValueError(
            f"attn_implementation='flex_attention' has no backward on {query.device.type} (torch "
            f"{torch.__version__}: forward only, e.g. evaluation or generation); train with {others}, or on CUDA"
        )
    if not flex_applies(geometry, query.device):
        raise ValueError(
            f"attn_implementation='flex_attention' cannot express block_size={geometry.block_size}, "
            f"sparse_block_size={geometry.sparse_block_size}, sparsity_factor={geometry.sparsity_factor} "
            f"(Triton tiles need blocks of a multiple of 16 tokens, and the sparse windows must be plain runs: "
            f"sparse_block_size > 0.75 * block_size / sparsity_factor); use {others}"
        )


def flex_applies(geometry: LSGGeometry, device: torch.device) -> bool:
    """The sparse windows must be plain runs (no duplicates); on CUDA, Triton tiles need blocks of a multiple of 16
    tokens."""
    regular = not geometry.uses_sparse_tokens or geometry.sparse_starts is not None
    return regular and (device.type != "cuda" or geometry.block_size % 16 == 0)


def explicit_probabilities(
    geometry: LSGGeometry, query, key, value, keep, sparse
) -> tuple[torch.Tensor, torch.Tensor, BlockLayout, tuple]:
    """Probabilities of the global rows over every key `[n, h, g, g + t]` and of the token rows over their block's
    keys `[n, h, t, k_len]`, with the layout and the chunk inputs they were computed on. `sparse` is
    `module.sparse_sequence(...)` (or a variant of it, see `LSGBlockAttention._square_maps`)."""
    g = geometry.num_global_tokens
    queries, token_keep, (sparse_keys, sparse_values, sparse_keep) = sparse
    layout = BlockLayout(geometry, token_keep, sparse_keep, dtype=query.dtype)
    inputs = (queries, key, value, sparse_keys, sparse_values)
    global_probabilities = probabilities(query[:, :, :g], key, additive_mask(keep, query.dtype)[:, None, None, :])
    token_probabilities = torch.cat(
        [layout.probabilities(*chunk, *inputs) for chunk in layout.chunks()], dim=2
    )  # [n, h, t, k_len]
    return global_probabilities, token_probabilities, layout, inputs


def block_context(layout: BlockLayout, inputs: tuple, token_probabilities: torch.Tensor) -> torch.Tensor:
    """Context `[n, h, t, d]` of the token rows: each chunk's probabilities `[n, h, t, k_len]` times its values."""
    queries = inputs[0]
    n, h, _, d = queries.shape
    blk, k_len = layout.blk, token_probabilities.shape[-1]
    contexts = []
    for first, count in layout.chunks():
        block_values = layout.gather(first, count, *inputs)[2]  # [n, h*count, k_len, d]
        chunk = token_probabilities.narrow(2, first * blk, count * blk).reshape(n, h * count, blk, k_len)
        contexts.append((chunk @ block_values).view(n, h, count * blk, d))
    return torch.cat(contexts, dim=2)


def _cpu_function_attention(module, query, key, value, keep, dropout: float) -> torch.Tensor:
    """`CPUBlockAttention` over every row. Sparse tokens that are a choice of tokens are read from `key` / `value`
    by index inside the function: no copies, and their gradients land in the key / value gradients directly."""
    g = module.geometry.num_global_tokens
    token_keep = keep[:, None, g:]  # [n, 1, t]
    sparse_keys = sparse_values = sparse_keep = sparse_tokens = None
    if module.select_sparse is not None:
        picked = module.select_sparse.token_indices(key[:, :, g:], token_keep)
        if picked is not None:
            sparse_tokens, sparse_keep = picked  # [n or 1, h, s_len], [n, h, s_len]
        else:
            _, _, (sparse_keys, sparse_values, sparse_keep) = module.sparse_sequence(query, key, value, keep)
    layout = BlockLayout(
        module.geometry, token_keep, sparse_keep, dtype=query.dtype, sparse_tokens=sparse_tokens, rows_of=(key, value)
    )
    # Global rows included: no slice of the queries and no concatenation, whose gradients are full copies.
    global_mask = additive_mask(keep, query.dtype)[:, None, None, :]  # [n, 1, 1, g + t]
    return CPUBlockAttention.apply(query, key, value, sparse_keys, sparse_values, layout, global_mask, dropout)


def _chunked_sdpa_attention(module, query, key, value, keep, dropout: float) -> torch.Tensor:
    """Query blocks in chunks: each gathers its blocks' `[global | local | sparse before | sparse after]` keys and
    values and runs one fused SDPA over them; no score matrix and no gathered key outlives its chunk, so memory is
    linear in length and bounded by the chunk. Each chunk is recomputed in backward (activation checkpointing)."""
    g = module.geometry.num_global_tokens
    queries, token_keep, (sparse_keys, sparse_values, sparse_keep) = module.sparse_sequence(query, key, value, keep)
    layout = BlockLayout(module.geometry, token_keep, sparse_keep, dtype=query.dtype)
    # Global queries see every key (reference `not_causal_forward`, "bos" attention).
    contexts = [full_attention(query[:, :, :g], key, value, keep, dropout)]  # [n, h, g, d]
    inputs = (queries, key, value, sparse_keys, sparse_values)
    for first, count in layout.chunks():
        attend = partial(_sdpa_chunk, layout, first, count, dropout=dropout)
        if torch.is_grad_enabled() and queries.requires_grad:
            contexts.append(checkpoint(attend, *inputs, use_reentrant=False))
        else:
            contexts.append(attend(*inputs))
    return torch.cat(contexts, dim=2)


def _sdpa_chunk(layout, first, count, queries, key, value, sparse_keys, sparse_values, dropout=0.0) -> torch.Tensor:
    """Context `[n, h, count*blk, d]` of one chunk, with autograd through plain SDPA."""
    n, h, _, d = queries.shape
    block_queries, block_keys, block_values, mask = layout.gather(
        first, count, queries, key, value, sparse_keys, sparse_values
    )
    context = F.scaled_dot_product_attention(block_queries, block_keys, block_values, attn_mask=mask, dropout_p=dropout)
    return context.view(n, h, count * layout.blk, d)


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
