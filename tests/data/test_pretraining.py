"""The pretraining datamodule (data/pretraining.py): documents in windows, masks redrawn each epoch, a tokenizer without
Pegasus' mask tokens refused."""

import pytest

from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.data.gap_sentences import MASK_SENTENCE_ID

from ..helpers import PRETRAIN
from .helpers import EOS


def test_datamodule_windows_documents_and_redraws_masks_each_epoch(make_cfg):
    from lsgtrain.train import build

    # every gap masked; stochastic, since principal alone draws the same masks every epoch
    objective = ["data.objective.strategy=principal", "data.objective.intact_probability=0",
                 "data.objective.stochastic=true"]  # fmt: skip
    objects = build(make_cfg(*PRETRAIN, *objective))
    datamodule = objects["datamodule"]
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_papers = {row["document"] for row in load_aclsum_split("train")}
    assert set(datamodule.raw) == {"train", "val"}  # aclsum's val/test papers are never read
    assert set(datamodule.raw["train"]["document"]) | set(datamodule.raw["val"]["document"]) <= train_papers
    windows = datamodule.datasets["train"]
    assert len(windows) > 10 * len(datamodule.raw["train"])  # many 128-token windows per paper
    assert max(len(ids) for ids in windows["input_ids"]) <= 127
    paper = {key: [value] for key, value in load_aclsum_split("train")[0].items()}
    datamodule.max_windows = 2
    assert len(datamodule.encode(paper)["input_ids"]) == 2  # data.max_windows: the first windows only

    examples = datamodule.examples("train")
    first, again = examples[(0, 3)], examples[(0, 3)]
    assert first == again  # the same epoch draws the same masks (a resumed run)
    redrawn = sum(examples[(0, i)] != examples[(1, i)] for i in range(len(examples)))
    assert redrawn > len(examples) / 4  # the next epoch masks other sentences
    assert MASK_SENTENCE_ID in first["input_ids"] and first["labels"][-1] == EOS

    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(2)
    batch = next(iter(loader))
    index = batch["idx"][0].item()
    assert batch["labels"][0][batch["labels"][0] != -100].tolist() == examples[(2, index)]["labels"]
    references = datamodule.references("val")
    assert len(references) == len(datamodule.datasets["val"]) and all(references)
    assert references == datamodule.references("val")  # a fixed validation sample


def test_a_tokenizer_without_pegasus_masks_is_refused(make_cfg, tmp_path):
    from lsgtrain.train import build

    objects = build(make_cfg(*PRETRAIN))
    datamodule = objects["datamodule"]
    vocab = datamodule.tokenizer.get_vocab()
    datamodule.tokenizer.get_vocab = lambda: {**vocab, "<mask_1>": 7}
    with pytest.raises(ValueError, match=r"needs Pegasus' <mask_1> at id 2"):
        datamodule.encode({"document": ["One sentence. Two sentences."]})
