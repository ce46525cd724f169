"""Pegasus -> LSG conversion: the reference's numbers, the CLI, length extension and clear failures."""

import json
import resource
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, PegasusConfig
from transformers import PegasusForConditionalGeneration as PlainPegasus

from lsgtrain.cli import main as cli_main
from lsgtrain.data.tokenizer import train_pegasus_tokenizer
from lsgtrain.modeling.convert import ConversionError, convert_checkpoint, order_positions
from lsgtrain.modeling.loading import CheckpointError

from .oracle import load_case, state_dict_of

CORPUS = [f"long documents need sparse attention, case {i}. global tokens see every token." for i in range(200)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_pegasus_tokenizer(CORPUS, vocab_size=120)


def _save_plain(folder, tokenizer=None, **overrides):
    values = dict(
        vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
        scale_embedding=True,
    )  # fmt: skip
    values.update(overrides)
    torch.manual_seed(0)
    model = PlainPegasus(PegasusConfig(**values)).eval()
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return model


def test_matches_the_reference_converter(oracle_dir, tmp_path):
    case = load_case(oracle_dir / "converter_pooling_g3.npz")
    plain = PlainPegasus(PegasusConfig.from_dict(json.loads(str(case["plain_config_json"]))))
    plain.load_state_dict(state_dict_of(case, "plain_state_dict/"), strict=False)
    plain.save_pretrained(tmp_path / "plain")
    convert_checkpoint(
        tmp_path / "plain", tmp_path / "lsg", max_sequence_length=1024, global_positional_stride=64,
        sparsity_type="pooling", block_size=8, sparse_block_size=8, sparsity_factor=2, num_global_tokens=3,
    )  # fmt: skip
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "lsg", trust_remote_code=True).eval()
    state = model.state_dict()
    for name, expected in state_dict_of(case, "converted_changed/").items():
        torch.testing.assert_close(state[name], expected, atol=1e-6, rtol=0, msg=name)
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(case["input_ids"]),
            attention_mask=torch.from_numpy(case["attention_mask"]),
            decoder_input_ids=torch.from_numpy(case["decoder_input_ids"]),
        )
    torch.testing.assert_close(
        out.encoder_last_hidden_state, torch.from_numpy(case["encoder_last_hidden_state"]), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(out.logits, torch.from_numpy(case["logits"]), atol=1e-4, rtol=0)
    written = json.loads((tmp_path / "lsg" / "config.json").read_text())
    reference = json.loads(str(case["converted_config_json"]))
    for key in ("block_size", "sparse_block_size", "sparsity_factor", "sparsity_type", "num_global_tokens",
                "max_position_embeddings", "base_model_prefix", "architectures", "model_type"):  # fmt: skip
        assert written[key] == reference[key], key


def test_order_positions_spreads_the_globals():
    table = torch.arange(1024, dtype=torch.float32)[:, None].expand(1024, 2)
    ordered = order_positions(table, stride=64)[:, 0].long()
    j = torch.arange(512)
    assert torch.equal(ordered, (j % 16) * 64 + 2 * (j // 16))


def test_cli_converts_a_local_pegasus_with_its_tokenizer(tmp_path, tokenizer):
    plain = _save_plain(tmp_path / "plain", tokenizer, vocab_size=len(tokenizer))
    code = cli_main([
        "convert", str(tmp_path / "plain"), str(tmp_path / "lsg"), "--max-sequence-length", "2048",
        "--block-size", "16", "--sparse-block-size", "16", "--sparsity-factor", "4", "--sparsity-type", "bos_pooling",
        "--num-global-tokens", "2", "--model-kwargs", "{'mask_first_token': true}",
    ])  # fmt: skip
    assert code == 0
    names = {p.name for p in (tmp_path / "lsg").iterdir()}
    assert {"config.json", "model.safetensors", "modeling_lsg_pegasus.py", "tokenizer.json"} <= names
    config = json.loads((tmp_path / "lsg" / "config.json").read_text())
    assert (config["max_position_embeddings"], config["block_size"], config["sparsity_type"]) == (
        2048,
        16,
        "bos_pooling",
    )
    assert config["mask_first_token"] is True and config["architectures"] == ["LSGPegasusForConditionalGeneration"]
    tokenizer_config = json.loads((tmp_path / "lsg" / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 2048
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "lsg", trust_remote_code=True)
    # Position tables regenerated: the first 512 rows are the old ones, the rest continue the sinusoids.
    old = plain.model.encoder.embed_positions.weight
    for table in (model.model.encoder.embed_positions.weight, model.model.decoder.embed_positions.weight):
        assert table.shape == (2048, 32)
        torch.testing.assert_close(table[:512], old, atol=0, rtol=0)
    # Global row 0 = position 0 + E[bos]; the fallback bos is decoder_start_token_id (0) for Pegasus.
    shared = plain.model.shared.weight
    globals_ = model.model.encoder.global_embeddings.weight
    torch.testing.assert_close(globals_[0], old[0] + shared[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(globals_[1], old[64] + shared[tokenizer.mask_token_id], atol=1e-6, rtol=0)
    text = " ".join(CORPUS[:20])
    encoded = tokenizer(text, return_tensors="pt")
    assert encoded["input_ids"].shape[1] > 2 * 16  # the LSG path
    out = model.generate(**encoded, max_new_tokens=4)
    assert out.shape[0] == 1


def test_extends_an_lsg_checkpoint_keeping_its_globals(tmp_path, tokenizer):
    _save_plain(tmp_path / "plain", tokenizer, vocab_size=len(tokenizer))
    first, _ = convert_checkpoint(tmp_path / "plain", tmp_path / "lsg1k", max_sequence_length=1024, block_size=16)
    with torch.no_grad():  # pretend the global embeddings were trained
        first.model.encoder.global_embeddings.weight.add_(1.0)
    first.save_pretrained(tmp_path / "lsg1k", safe_serialization=True)
    longer, _ = convert_checkpoint(tmp_path / "lsg1k", tmp_path / "lsg4k", max_sequence_length=4096)
    torch.testing.assert_close(
        longer.model.encoder.global_embeddings.weight, first.model.encoder.global_embeddings.weight, atol=0, rtol=0
    )
    assert longer.config.block_size == 16 and longer.config.max_position_embeddings == 4096
    assert longer.model.encoder.embed_positions.weight.shape[0] == 4096


def test_converts_to_a_classifier(tmp_path, tokenizer):
    _save_plain(tmp_path / "plain", tokenizer, vocab_size=len(tokenizer))
    model, _ = convert_checkpoint(
        tmp_path / "plain", tmp_path / "cls", architecture="PegasusForSequenceClassification", num_labels=3,
        max_sequence_length=1024, block_size=16,
    )  # fmt: skip
    assert type(model).__name__ == "LSGPegasusForSequenceClassification"
    assert model.model.encoder.embed_positions.weight.shape[0] == 1024


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        convert_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_pegasus_checkpoint(tmp_path):
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)  # fmt: skip
    BartForConditionalGeneration(config).save_pretrained(tmp_path / "bart")
    with pytest.raises(ConversionError, match="'bart' checkpoint, not Pegasus"):
        convert_checkpoint(tmp_path / "bart", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_length_below_the_current_one(tmp_path):
    _save_plain(tmp_path / "plain")
    with pytest.raises(ConversionError, match=r"below the checkpoint's max_position_embeddings \(512\)"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out", max_sequence_length=256)
    assert not (tmp_path / "out").exists()


def test_impossible_lsg_parameters_fail_before_writing(tmp_path):
    _save_plain(tmp_path / "plain")
    with pytest.raises(Exception, match="block_size // sparsity_factor"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out", block_size=12, sparsity_factor=4)
    assert not (tmp_path / "out").exists()


def test_offline_hub_name_gives_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="could not fetch model 'google/pegasus-large' from the Hugging Face hub"):
        convert_checkpoint("google/pegasus-large", tmp_path / "out")


def test_failure_while_saving_leaves_nothing_behind(tmp_path, tokenizer, monkeypatch):
    _save_plain(tmp_path / "plain", tokenizer, vocab_size=len(tokenizer))

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out", max_sequence_length=1024)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


def test_a_file_size_limit_while_saving_names_the_output_folder_and_the_cause(tmp_path):
    """Before: a bare SafetensorError with a traceback, no path (issue 26.13)."""
    _save_plain(tmp_path / "plain")
    limit = (tmp_path / "plain" / "model.safetensors").stat().st_size // 2
    command = [sys.executable, "-m", "lsgtrain.cli", "convert", str(tmp_path / "plain"), str(tmp_path / "out")]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"could not write the model's weights to {tmp_path / 'out'} (staged in .out." in result.stderr
    assert "File too large" in result.stderr and "raise the file-size limit (`ulimit -f`" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_refuses_a_non_empty_output_folder(tmp_path):
    _save_plain(tmp_path / "plain")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not empty"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err


def test_length_that_is_not_a_multiple_of_the_block_size_is_refused(tmp_path):
    _save_plain(tmp_path / "plain")
    code = cli_main(["convert", str(tmp_path / "plain"), str(tmp_path / "out"), "--max-sequence-length", "600",
                     "--block-size", "64", "--sparse-block-size", "64"])  # fmt: skip
    assert code == 2
    with pytest.raises(ConversionError, match=r"max_sequence_length=600 is not a multiple of block_size \(64\).*576"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out", max_sequence_length=600, block_size=64)
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_a_model_folder_but_never_deletes_other_files(tmp_path):
    _save_plain(tmp_path / "plain")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match=r"is not a model folder \(it holds \['notes.txt'\]\)"):
        convert_checkpoint(tmp_path / "plain", mixed, max_sequence_length=1024, overwrite=True)
    assert [p.name for p in mixed.iterdir()] == ["notes.txt"]
    convert_checkpoint(tmp_path / "plain", tmp_path / "lsg", max_sequence_length=1024)
    (tmp_path / "lsg" / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match=r"not a model folder \(it holds \['notes.txt'\]\)"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "lsg", max_sequence_length=2048, overwrite=True)
    (tmp_path / "lsg" / "notes.txt").unlink()
    convert_checkpoint(tmp_path / "plain", tmp_path / "lsg", max_sequence_length=2048, overwrite=True)
    assert json.loads((tmp_path / "lsg" / "config.json").read_text())["max_position_embeddings"] == 2048


def _lsg_with_trained_globals(tmp_path, tokenizer):
    """A 512-token LSG checkpoint with 4 global tokens whose embeddings moved away from their init (as training
    moves them), and the rows it saved."""
    _save_plain(tmp_path / "plain", tokenizer, vocab_size=len(tokenizer))
    first, _ = convert_checkpoint(tmp_path / "plain", tmp_path / "lsg", max_sequence_length=512, block_size=16,
                                  num_global_tokens=4)  # fmt: skip
    with torch.no_grad():
        first.model.encoder.global_embeddings.weight.add_(1.0)
    first.save_pretrained(tmp_path / "lsg", safe_serialization=True)
    return tmp_path / "lsg", first


def _extended_globals(first, tokenizer) -> torch.Tensor:
    """`first`'s 512 global rows given 4 -> 16 global tokens: rows 0-3 as trained, rows 4.. as the reference
    conversion starts every row (the pre-extension position table reordered with stride 64, + E[<mask_2>])."""
    trained = first.model.encoder.global_embeddings.weight.detach()
    positions = order_positions(first.model.encoder.embed_positions.weight.detach(), stride=64)
    mask_row = first.get_input_embeddings().weight[tokenizer.mask_token_id].detach()
    return torch.cat([trained[:4], positions[4:] + mask_row])


def test_more_global_tokens_keep_the_trained_ones_and_start_the_new_ones_as_the_reference(tmp_path, tokenizer):
    """4 -> 16 globals, 512 -> 2,048 positions: the 4 trained rows stay, rows 4.. start as the reference conversion
    starts them (before, they kept whatever the checkpoint held beyond its 4), the first 512 positions unchanged."""
    folder, first = _lsg_with_trained_globals(tmp_path, tokenizer)
    longer, _ = convert_checkpoint(folder, tmp_path / "lsg2k", max_sequence_length=2048, num_global_tokens=16)
    torch.testing.assert_close(longer.model.encoder.global_embeddings.weight, _extended_globals(first, tokenizer),
                               atol=1e-6, rtol=0)  # fmt: skip
    assert longer.config.num_global_tokens == 16 and longer.config.max_position_embeddings == 2048
    table = longer.model.encoder.embed_positions.weight
    assert table.shape[0] == 2048 and torch.equal(table[:512], first.model.encoder.embed_positions.weight)


def test_a_run_extends_a_checkpoint_with_the_code_of_convert(tmp_path, tokenizer):
    """`build_model` of a checkpoint at a longer length with more globals gives the model `lsgtrain convert` writes:
    one extension, not two that could drift apart."""
    from lsgtrain.modeling.factory import build_model

    folder, first = _lsg_with_trained_globals(tmp_path, tokenizer)
    converted, _ = convert_checkpoint(folder, None, max_sequence_length=2048, num_global_tokens=16)
    built, _ = build_model(
        task="seq2seq", max_source_length=2048, lsg={"num_global_tokens": 16}, pretrained=str(folder)
    )
    torch.testing.assert_close(built.model.encoder.global_embeddings.weight, _extended_globals(first, tokenizer),
                               atol=1e-6, rtol=0)  # fmt: skip
    for name in ("model.encoder.global_embeddings.weight", "model.encoder.embed_positions.weight",
                 "model.decoder.embed_positions.weight"):  # fmt: skip
        torch.testing.assert_close(built.state_dict()[name], converted.state_dict()[name], atol=0, rtol=0, msg=name)
    assert built.config.max_position_embeddings == 2048 and built.config.num_global_tokens == 16
