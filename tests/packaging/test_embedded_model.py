"""The model shipped in the package (embedded.py, src/lsgtrain/pretrained/): the default run fine-tunes it with its own
tokenizer, and its weights read their input."""

import re
from pathlib import Path

import torch

from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.train import train

from ..helpers import objects_vocab


def embedded_generations(papers: list[str]) -> tuple[list[str], list[str]]:
    """What the embedded model reads of each paper (its first 256 tokens) and its greedy output for it."""
    from transformers import AutoTokenizer

    from lsgtrain.embedded import embedded_model
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    model = LSGPegasusForConditionalGeneration.from_pretrained(embedded_model("aclsum_tiny")).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model("aclsum_tiny"))
    batch = tokenizer(papers, max_length=256, truncation=True, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=48, num_beams=1, do_sample=False)
    read = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    return read, tokenizer.batch_decode(generated, skip_special_tokens=True)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{3,}", text.lower()))


def test_the_default_fine_tunes_the_embedded_model_shipped_in_the_package(make_cfg):
    from lsgtrain.embedded import embedded_model

    folder = Path(embedded_model("aclsum_tiny"))
    assert sum(path.stat().st_size for path in folder.iterdir()) <= 30e6  # small enough to ship in a wheel
    assert not list(folder.glob("*.py"))  # loaded with lsgtrain's own classes, no remote code
    cfg = make_cfg(fast=False)  # what `python train.py` composes
    assert cfg.model.pretrained == str(folder) and cfg.data.source == "aclsum"

    quick = ["debug=fast_dev_run", "logger=none", "data.max_samples=4", "data.max_source_length=256",
             "module.generation.max_new_tokens=4", "module.generation.num_beams=1"]  # fmt: skip
    metrics, objects = train(make_cfg(*quick, fast=False))  # offline: HF_HUB_OFFLINE=1 in every test
    assert objects["datamodule"].tokenizer.get_vocab() == objects_vocab(folder)  # the checkpoint's, not one trained
    assert objects["model"].config.d_model == 128 and objects["trainer"].global_step == 1


def test_the_shipped_weights_read_their_input():
    """The embedded model's greedy output for a paper's opening comes from that paper: outputs differ per paper, and
    each shares more of its words with its own input than with any other paper's (held-out test papers, read here
    for evaluation only)."""
    papers = [row["document"] for row in load_aclsum_split("test")[:6]]
    inputs, texts = embedded_generations(papers)
    assert len(set(texts)) == len(texts)
    for i, text in enumerate(texts):
        shared = [len(words(text) & words(read)) / max(1, len(words(text))) for read in inputs]
        assert shared[i] > max(shared[:i] + shared[i + 1 :]), (i, text, shared)
