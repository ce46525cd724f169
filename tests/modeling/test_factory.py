"""One decision for model and tokenizer (`build_model`), on checkpoints laid out like the hub's."""

import logging
import shutil

import pytest
import torch
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

from lsgtrain.modeling.convert import ConversionError, convert_checkpoint
from lsgtrain.modeling.factory import build_model, check_tokenizer_fits
from lsgtrain.modeling.loading import CheckpointError, pegasus_vocabulary
from lsgtrain.train import train

SAMPLE = "we study @xmath3 sparse attention over long documents .\nglobal tokens summarise every block ."
PEGASUS, LSG = "google/pegasus-large", "ccdv/lsg-pegasus-large-4096"


def must_not_train():
    raise AssertionError("a tokenizer was trained although the checkpoint brings one")


def must_not_read_data():
    raise AssertionError("the data was read before the tokenizer was checked")


def ids(tokenizer) -> list[int]:
    return tokenizer(SAMPLE).input_ids


@pytest.mark.parametrize("key", ["pretrained", "convert_from"])
def test_a_checkpoint_brings_its_own_tokenizer(hub_standins, key):
    """The bug of `model=pegasus_large_converted`: the converter's tokenizer was dropped and one trained instead."""
    folder = hub_standins[LSG if key == "pretrained" else PEGASUS]
    model, tokenizer = build_model(
        task="seq2seq", max_source_length=1024, lsg={}, train_tokenizer=must_not_train, **{key: str(folder)}
    )
    # Pegasus' ids, as in the checkpoint's spiece.model (transformers 5 alone swaps <mask_1> and <mask_2> for the
    # transformers-4 tokenizer_config.json of google/pegasus-large)
    assert tokenizer.get_vocab() == pegasus_vocabulary(folder / "spiece.model")
    assert ids(tokenizer) == ids(AutoTokenizer.from_pretrained(hub_standins[LSG]))  # its tokenizer.json
    assert len(tokenizer) == model.config.vocab_size == 503  # 400 pieces + Pegasus' 103 reserved ids
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id) == (0, 1, 3)
    assert tokenizer.convert_tokens_to_ids(["<mask_1>", "<unk_2>", "<unk>"]) == [2, 4, 105]


def test_an_explicit_tokenizer_that_fits_is_used(hub_standins):
    # the plain checkpoint's tokenizer has the same ids as the LSG one's
    _, tokenizer = build_model(
        task="seq2seq", max_source_length=1024, lsg={}, pretrained=str(hub_standins[LSG]),
        tokenizer=str(hub_standins[PEGASUS]), train_tokenizer=must_not_train,
    )  # fmt: skip
    assert tokenizer.name_or_path == str(hub_standins[PEGASUS])


def test_an_explicit_tokenizer_that_does_not_fit_is_refused_before_the_data_is_read(hub_standins, tmp_path):
    from lsgtrain.data.tokenizer import train_pegasus_tokenizer

    other = tmp_path / "other-tokenizer"
    texts = [f"token{i} word{i * 7} piece{i * 13}" for i in range(3000)]
    train_pegasus_tokenizer(texts, vocab_size=1000).save_pretrained(other)
    refused = rf"tokenizer {other} is not the model's own .*1000 ids against the model's 503"
    with pytest.raises(CheckpointError, match=refused):
        build_model(
            task="classification", max_source_length=1024, lsg={}, pretrained=str(hub_standins[LSG]),
            tokenizer=str(other), data_head=must_not_read_data,
        )  # fmt: skip


def test_special_ids_must_agree():
    class Tokenizer:
        pad_token_id, eos_token_id = 0, 1

        def get_vocab(self):
            return {"<pad>": 0, "</s>": 1, "a": 2}

    config = {"vocab_size": 10, "pad_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 1}
    message = r"model's eos_token_id is 2, the tokenizer's is 1; the model's decoder_start_token_id is 1, .* is 0"
    with pytest.raises(CheckpointError, match=message):
        check_tokenizer_fits(Tokenizer(), config, "TOK", "MODEL")
    check_tokenizer_fits(Tokenizer(), {**config, "eos_token_id": 1, "decoder_start_token_id": 0}, "TOK", "MODEL")


@pytest.mark.parametrize("key", ["pretrained", "convert_from"])
def test_a_non_pegasus_checkpoint_is_refused(tmp_path, key):
    t5 = tmp_path / "t5"
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(config).save_pretrained(t5)
    with pytest.raises(CheckpointError, match=rf"model.{key}={t5} is a 't5' checkpoint: .* Pegasus"):
        build_model(task="seq2seq", max_source_length=1024, lsg={}, train_tokenizer=must_not_train,
                    data_head=must_not_read_data, **{key: str(t5)})  # fmt: skip


def test_missing_weights_are_an_error_unless_allowed(hub_standins):
    # a plain Pegasus checkpoint as `pretrained` lacks the LSG global embeddings: they would stay random
    options = dict(task="seq2seq", max_source_length=1024, lsg={}, pretrained=str(hub_standins[PEGASUS]))
    with pytest.raises(ConversionError, match=r"1 weights missing .*global_embeddings.*model\.convert_from"):
        build_model(**options)
    model, _ = build_model(**options, allow_weight_mismatch=True)
    assert model.config.vocab_size == 503


def test_conversion_refuses_a_checkpoint_with_missing_weights(hub_standins, tmp_path):
    source = tmp_path / "pegasus"
    shutil.copytree(hub_standins[PEGASUS], source)
    state = torch.load(source / "pytorch_model.bin")
    del state["model.encoder.layers.0.fc1.weight"]
    torch.save(state, source / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"1 weights missing .*'model.encoder.layers.0.fc1.weight'"):
        convert_checkpoint(source, None, max_sequence_length=1024)
    model, _ = convert_checkpoint(source, None, max_sequence_length=1024, allow_weight_mismatch=True)
    assert model.config.max_position_embeddings == 1024


def test_a_checkpoint_without_a_tokenizer_needs_an_explicit_one(hub_standins, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "pytorch_model.bin"):
        shutil.copy(hub_standins[LSG] / name, bare / name)
    options = dict(task="seq2seq", max_source_length=1024, lsg={}, pretrained=str(bare), train_tokenizer=must_not_train)
    with pytest.raises(CheckpointError, match=r"has no tokenizer .* set data.tokenizer.pretrained"):
        build_model(**options)
    _, tokenizer = build_model(**options, tokenizer=str(hub_standins[LSG]))
    assert ids(tokenizer) == ids(AutoTokenizer.from_pretrained(hub_standins[LSG]))


@pytest.mark.parametrize("key", ["pretrained", "convert_from", None])
def test_model_attention_dropout_replaces_the_checkpoints_in_every_attention_layer(hub_standins, key):
    """google/pegasus-large and ccdv/lsg-pegasus-large-4096 train with attention dropout 0.1; the recipes set 0 so
    that the encoder takes the fast kernels (which have no dropout): every layer must see the override."""
    from lsgtrain.data.tokenizer import train_pegasus_tokenizer

    source = {key: str(hub_standins[LSG if key == "pretrained" else PEGASUS])} if key else {}
    texts = [f"token{i} word{i * 7} piece{i * 13}" for i in range(3000)]
    random = {"train_tokenizer": lambda: train_pegasus_tokenizer(texts, vocab_size=500), "init": {"d_model": 32}}
    build = dict(task="seq2seq", max_source_length=1024, lsg={}, **(source or random))
    model, _ = build_model(attention_dropout=0.0, **build) if key else build_model(attention_dropout=0.2, **build)
    expected = 0.0 if key else 0.2
    if key:  # None keeps the checkpoint's
        assert build_model(**build).model.config.attention_dropout == 0.1
    layers = [m for m in model.modules() if hasattr(m, "dropout") and type(m).__name__.endswith("Attention")]
    assert len(layers) >= 3 and {layer.dropout for layer in layers} == {expected}  # encoder, decoder self + cross
    assert model.config.attention_dropout == expected
    if not key:
        with pytest.raises(ValueError, match=r"model\.attention_dropout or model\.init\.attention_dropout"):
            build_model(attention_dropout=0.2, **{**build, "init": {"attention_dropout": 0.1}})


def test_the_expected_missing_weights_of_a_conversion_are_one_line_not_a_load_report(hub_standins, caplog, capfd):
    """Before, transformers' LOAD REPORT listed the position tables and global_embeddings as MISSING, "newly
    initialized ... Consider training", on every conversion and every hub LSG checkpoint."""
    with caplog.at_level(logging.INFO, logger="lsgtrain.modeling.convert"):
        convert_checkpoint(hub_standins[PEGASUS], None, max_sequence_length=1024)
        build_model(task="seq2seq", max_source_length=4096, lsg={}, pretrained=str(hub_standins[LSG]))
    assert "Consider training" not in capfd.readouterr().err + caplog.text  # the report's own words
    lines = [r.getMessage() for r in caplog.records if "not in the checkpoint, as expected" in r.getMessage()]
    assert len(lines) == 2
    assert "the sinusoidal position tables (computed from the length); the global embeddings" in lines[0]
    assert "global embeddings" not in lines[1]  # an LSG checkpoint brings its own


def test_a_load_report_with_a_real_problem_is_shown(hub_standins, capfd, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(ConversionError, match="1 weights missing"):
        build_model(task="seq2seq", max_source_length=1024, lsg={}, pretrained=str(hub_standins[PEGASUS]))
    assert "Consider training" in capfd.readouterr().err + caplog.text


def test_offline_hub_model_gives_a_clear_error(make_cfg):
    with pytest.raises(Exception, match=r"could not fetch model 'ccdv/lsg-pegasus-large-4096'.*model\.pretrained=DIR"):
        train(make_cfg("model=lsg_pegasus_large", "data.max_samples=4", fast=False))
