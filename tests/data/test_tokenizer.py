"""Runs pair weights with the tokenizer they were trained with (a checkpoint's own, a resumed run's saved one, another
refused); a trained tokenizer is reproducible and says when it is smaller than asked."""

import json
import logging
import random
import shutil

import pytest

from lsgtrain.data.tokenizer import train_pegasus_tokenizer
from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration
from lsgtrain.modeling.convert import save_atomically
from lsgtrain.modeling.loading import CheckpointError
from lsgtrain.train import train

from ..helpers import QUICK, assert_refused_before_data_work, tokenizer_vocab

ONE_EPOCH = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false", "callbacks.hf_export=null",
             "callbacks.rouge.every_n_epochs=5"]  # fmt: skip


def _write_papers(folder, seed: int) -> list[str]:
    """Local jsonl splits of made-up papers (`seed` picks the words); returns the config overrides reading them."""
    words = [f"w{seed}x{i}" for i in range(300)] + ["the", "of", "model", "attention"]
    generator = random.Random(seed)
    files = {}
    for split in ("train", "val", "test"):
        rows = [
            {"article": " ".join(generator.choices(words, k=400)), "abstract": " ".join(generator.choices(words, k=30))}
            for _ in range(6)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        files[split] = folder / f"{split}.jsonl"
    data_files = ",".join(f"{split}:{path}" for split, path in files.items())
    return ["data.source=files", f"data.data_files={{{data_files}}}", "data.text_column=article",
            "data.summary_column=abstract"]  # fmt: skip


def test_an_exported_model_as_pretrained_trains_with_its_own_tokenizer(make_cfg, tmp_path):
    """Before, `model.pretrained=<hf_model>` trained a new tokenizer on the data: its ids meant other pieces."""
    export = tmp_path / "hf_model"
    tokenizer = train_pegasus_tokenizer([f"term{i} of paper {i * 7} ." for i in range(500)], vocab_size=300)
    config = LSGPegasusConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
        block_size=16, sparse_block_size=16, sparsity_factor=4,
    )  # fmt: skip
    save_atomically(LSGPegasusForConditionalGeneration(config), tokenizer, export)  # what HFExport writes

    _, objects = train(make_cfg(*ONE_EPOCH, f"model.pretrained={export}", "data.max_samples=4"))
    assert objects["datamodule"].tokenizer.get_vocab() == tokenizer.get_vocab()
    assert objects["model"].config.vocab_size == len(tokenizer)


def test_a_resumed_run_keeps_its_tokenizer_after_the_data_changed(make_cfg, tmp_path):
    """Before, rerunning a run whose data files had changed since trained a new tokenizer for the old weights."""
    data = _write_papers(tmp_path, seed=0)
    _, first = train(make_cfg(*ONE_EPOCH, *data))
    saved = first["datamodule"].tokenizer.get_vocab()
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()

    (tmp_path / "run" / "run_summary.json").unlink()  # as if it had been killed after its last checkpoint
    _write_papers(tmp_path, seed=1)  # same settings, other papers: a tokenizer trained now would differ
    with pytest.raises(CheckpointError, match=r"trained on other data than this run reads"):  # unless asked for
        train(make_cfg(*ONE_EPOCH, *data, "trainer.max_epochs=2"))
    resume = [*ONE_EPOCH, *data, "trainer.max_epochs=2", "data.allow_data_change=true"]
    _, resumed = train(make_cfg(*resume))  # same run folder: resumes last.ckpt
    assert resumed["trainer"].global_step == 4  # 2 restored + 2 new: it did resume
    assert resumed["datamodule"].tokenizer.get_vocab() == saved
    assert resumed["datamodule"].train_tokenizer().get_vocab() != saved

    # a checkpoint whose run folder lost its tokenizer is refused rather than paired with a retrained one
    shutil.rmtree(tmp_path / "run" / "tokenizer")
    (tmp_path / "run" / "run_summary.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"whose run folder has no saved tokenizer .* data\.tokenizer\.pre"):
        train(make_cfg(*ONE_EPOCH, *data, "trainer.max_epochs=3", "data.allow_data_change=true"))


def test_a_tokenizer_other_than_the_models_own_is_refused_naming_both(make_cfg, tiny_checkpoint, tmp_path):
    from lsgtrain.data.tokenizer import train_pegasus_tokenizer

    other = tmp_path / "other-tokenizer"
    texts = [f"term{i} of paper {i * 7} ." for i in range(2000)]
    train_pegasus_tokenizer(texts, vocab_size=60).save_pretrained(other)  # fewer ids than the model's embedding
    cfg = make_cfg(*QUICK, f"model.pretrained={tiny_checkpoint}", f"data.tokenizer.pretrained={other}")
    message = rf"the tokenizer {other} is not the model's own \({tiny_checkpoint}\): .*model.allow_tokenizer_change"
    assert_refused_before_data_work(cfg, tmp_path, CheckpointError, message)
    cfg = make_cfg(*QUICK, f"model.pretrained={tiny_checkpoint}", f"data.tokenizer.pretrained={other}",
                   "model.allow_tokenizer_change=true")  # fmt: skip
    _, objects = train(cfg)
    assert objects["datamodule"].tokenizer.get_vocab() == tokenizer_vocab(other)


def test_a_tokenizer_smaller_than_asked_is_named(tmp_path, caplog):
    """Before, an 8000-piece tokenizer trained on 8 short texts came out with a few hundred ids without a word."""
    from lsgtrain.data.tokenizer import cached_pegasus_tokenizer

    texts = [f"paper {i} studies long documents and sparse attention." for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="lsgtrain.data.tokenizer"):
        tokenizer = cached_pegasus_tokenizer(texts, 8000, tmp_path)
    assert len(tokenizer) < 8000
    assert f"the tokenizer trained on 8 texts has {len(tokenizer):,} pieces, not the 8,000 asked" in caplog.text
    assert f"data.tokenizer.vocab_size={len(tokenizer)}" in caplog.text


def test_a_tokenizer_trained_twice_on_the_same_texts_gives_the_same_ids():
    """The Unigram trainer alone ordered its pieces differently from one training to the next (scores differing in
    their last bits, rare characters appended in hash-set order): two DDP ranks or a rerun got other ids."""
    from lsgtrain.data.aclsum import load_aclsum_split

    texts = [row["document"] for row in load_aclsum_split("train")[:30]]
    vocabularies = [train_pegasus_tokenizer(texts, 3000).backend_tokenizer.to_str() for _ in range(4)]
    assert len(set(vocabularies)) == 1
    tokenizer = train_pegasus_tokenizer(texts, 3000)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<pad>", "</s>", "<mask_1>", "<mask_2>", "<unk>"]
    pieces = json.loads(vocabularies[0])["model"]["vocab"]
    assert any(len(piece) == 1 and ord(piece) > 0x2E80 for piece, _ in pieces[-60:])  # rare characters, last
    assert tokenizer.decode(
        tokenizer("Sparse attention reads long documents.").input_ids, skip_special_tokens=True
    ) == ("Sparse attention reads long documents.")
