"""The datamodule's batches and state (data/datamodule.py): padding to whole blocks, a restored position reaching a
loader built before the restore."""

import json

from ..helpers import WORDS


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
