"""Samplers: length grouping under DDP, reshuffling per epoch, mid-epoch resume on the batches not yet trained (and the
masks of the uninterrupted epoch)."""

import pytest
import torch

from lsgtrain.data.datamodule import LengthGroupedSampler, ResumableSampler


def test_length_grouped_sampler_shards_cover_everything_with_similar_lengths():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 5000, (103,), generator=generator).tolist()
    shards = [
        list(LengthGroupedSampler(lengths, batch_size=4, num_replicas=2, rank=rank, seed=1, mega_batches=50))
        for rank in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 52
    assert set(shards[0]) | set(shards[1]) == set(range(103))
    # one optimizer step = batch 4 on each rank: its 8 documents are neighbours in a length-sorted mega-batch
    spread_grouped = sum(
        max(lengths[i] for s in shards for i in s[k : k + 4]) - min(lengths[i] for s in shards for i in s[k : k + 4])
        for k in range(0, 48, 4)
    )
    shuffled = torch.randperm(103, generator=generator).tolist()
    spread_random = sum(
        max(lengths[i] for i in shuffled[k : k + 8]) - min(lengths[i] for i in shuffled[k : k + 8])
        for k in range(0, 96, 8)
    )
    assert spread_grouped < 0.3 * spread_random


def test_length_grouped_sampler_reshuffles_each_epoch():
    sampler = LengthGroupedSampler(list(range(40)), batch_size=2, num_replicas=1, rank=0, seed=0, mega_batches=2)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(first) == sorted(sampler) and first != list(sampler)


@pytest.mark.parametrize("grouped", [True, False])
def test_sampler_resumes_mid_epoch_with_the_batches_not_yet_trained(grouped):
    def make(rank):
        options = {"batch_size": 3, "num_replicas": 2, "rank": rank, "seed": 5}
        return LengthGroupedSampler(list(range(50)), **options) if grouped else ResumableSampler(50, **options)

    for rank in range(2):
        whole = make(rank)
        whole.set_epoch(2)
        uninterrupted = list(whole)
        resumed = make(rank)
        resumed.resume_at(epoch=2, batches=4)
        resumed.set_epoch(2)
        assert list(resumed) == uninterrupted[12:]
        assert len(resumed) == len(uninterrupted)  # Lightning still counts the epoch's full length
        assert list(resumed) == uninterrupted  # the skip applies to one pass only
        other_epoch = make(rank)
        other_epoch.resume_at(epoch=1, batches=4)
        other_epoch.set_epoch(2)
        assert list(other_epoch) == uninterrupted


def test_a_resumed_epoch_draws_the_masks_of_the_uninterrupted_one():
    from lsgtrain.data.datamodule import ResumableSampler

    def sampler() -> ResumableSampler:
        sampler = ResumableSampler(20, batch_size=4, num_replicas=1, rank=0, seed=0)
        sampler.yield_epoch = True
        sampler.set_epoch(3)
        return sampler

    uninterrupted = list(sampler())
    resumed = sampler()
    resumed.resume_at(3, 2)  # a checkpoint after 2 batches of epoch 3
    assert list(resumed) == uninterrupted[8:] and {epoch for epoch, _ in uninterrupted} == {3}
