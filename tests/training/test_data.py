"""Data pieces: length grouping under DDP, batch padding, local file formats, ROUGE."""

import json

import pytest
import torch

from lsgtrain.data.datamodule import LengthGroupedSampler, ResumableSampler
from lsgtrain.metrics.rouge import compute_rouge, split_sentences

from .conftest import WORDS


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


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_local_files_in_every_format(suffix, tmp_path):
    from datasets import Dataset

    from lsgtrain.data.sources import load_splits

    files = {}
    for split in ("train", "val", "test"):
        data = Dataset.from_list([{"article": f"text {i}", "abstract": f"sum {i}"} for i in range(3)])
        path = tmp_path / f"{split}.{suffix}"
        {"jsonl": data.to_json, "csv": data.to_csv, "parquet": data.to_parquet}[suffix](str(path))
        files[split] = str(path)
    splits, origins = load_splits("files", data_files=files)
    assert origins["val"] == files["val"]
    assert splits["val"][1] == {"article": "text 1", "abstract": "sum 1"}


def test_batches_are_padded_to_a_multiple_of_block_size(make_cfg, tmp_path):
    from hydra.utils import instantiate

    files = {}
    for split in ("train", "val", "test"):  # documents and summaries of growing lengths, all under the maxima
        words = [split, *WORDS * 9]
        rows = [{"document": " ".join(words[: 6 + 5 * i]), "summary": " ".join(words[: 2 + i])} for i in range(4)]
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_files = "data.data_files={" + ",".join(f"{split}:{path}" for split, path in files.items()) + "}"
    datamodule = instantiate(make_cfg("data.source=files", data_files).data, _convert_="all")
    datamodule.tokenizer = datamodule.train_tokenizer()
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["idx"].tolist() == [0, 1, 2, 3]
    rows = [datamodule.examples("val")[i] for i in range(4)]
    lengths = [len(row["input_ids"]) for row in rows]
    assert len(set(lengths)) == 4 and max(lengths) % datamodule.block_size  # rows to pad, a length to round up
    # the batch's longest document rounded up to a whole block, not the configured maximum length
    assert batch["input_ids"].shape[1] == -(-max(lengths) // datamodule.block_size) * datamodule.block_size
    assert batch["labels"].shape[1] == max(len(row["labels"]) for row in rows)
    for i, row in enumerate(rows):
        n, m = len(row["input_ids"]), len(row["labels"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"] and batch["attention_mask"][i, :n].all()
        assert (batch["input_ids"][i, n:] == datamodule.tokenizer.pad_token_id).all()
        assert not batch["attention_mask"][i, n:].any()
        assert batch["labels"][i, :m].tolist() == row["labels"] and (batch["labels"][i, m:] == -100).all()
    assert (batch["labels"] == -100).any()  # summaries of different lengths: the shorter ones are padded


def test_rouge_matches_known_values():
    scores = compute_rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert all(value == pytest.approx(100.0) for value in scores.values())
    scores = compute_rouge(["completely different words"], ["the cat sat on the mat"])
    assert scores["rouge1"] == 0.0
    assert split_sentences("First one. Second one!\nThird") == "First one.\nSecond one!\nThird"
    # stemming: "running" and "runs" share the stem "run"
    assert compute_rouge(["he runs"], ["he running"])["rouge1"] == pytest.approx(100.0)


def test_a_restored_position_reaches_a_loader_built_before_the_restore(make_cfg):
    """Strategies that restore checkpoints after building the loaders (FSDP, DeepSpeed) resume mid-epoch too."""
    from hydra.utils import instantiate

    datamodule = instantiate(make_cfg("data.max_samples=12", "data.batch_size=2").data, _convert_="all")
    datamodule.tokenizer = datamodule.train_tokenizer()
    datamodule.setup("fit")
    uninterrupted = [batch["idx"].tolist() for batch in datamodule.train_dataloader()]
    loader = datamodule.train_dataloader()
    datamodule.load_state_dict({"epoch": 0, "batches_trained": 2})
    assert [batch["idx"].tolist() for batch in loader] == uninterrupted[2:]
