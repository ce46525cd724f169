"""LSG attention on CPU as one autograd function: flash kernels per chunk, and a backward of its own.

Autograd through the chunks would save every chunk's gathered keys and scores (or, checkpointed, recompute each chunk
in backward); this function saves only its inputs and output plus each query's log-sum-exp. It is what the `sdpa`
kernel runs on CPU (`lsg_kernels.lsg_sdpa_attention`). Shapes as in `lsg_layout.py`; H = h * count (one attention per
head and block of a chunk).
"""

import torch

from .lsg_layout import BlockLayout


class CPUBlockAttention(torch.autograd.Function):
    """LSG attention on CPU, global and token queries, keeping each chunk's log-sum-exp for the backward.

    Saves only its inputs and output (no gathered keys, no scores); backward regathers each chunk's keys, so the
    forward is not recomputed, and accumulates every key and value gradient into one buffer each. Without attention
    dropout each chunk runs CPU's flash kernels; with it (the real checkpoints train with 0.1, which those kernels
    lack) each chunk's scores are formed explicitly, and the backward regenerates the chunk's dropout mask from a
    seed drawn from the global RNG in the forward. The few global queries attend every key with explicit scores.
    """

    @staticmethod
    def forward(ctx, query, key, value, sparse_keys, sparse_values, layout: BlockLayout, global_mask, dropout):
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
