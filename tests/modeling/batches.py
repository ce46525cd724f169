"""Random token batches of two rows, the second one right-padded (pad id 0, mask 0)."""

import torch


def padded_batch(length: int, pad: int, vocab: int = 128, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, vocab, (2, length), generator=generator)
    attention_mask = torch.ones(2, length, dtype=torch.long)
    input_ids[1, length - pad :] = 0
    attention_mask[1, length - pad :] = 0
    return input_ids, attention_mask
