"""`lsgtrain summarize` / `predict`: documents of any format and length, rows written as they come and resumed,
classifiers' labels, bad files and unsafe models refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from lsgtrain.cli import main as cli_main
from lsgtrain.evaluate import evaluate
from lsgtrain.metrics.rouge import compute_rouge
from lsgtrain.predict import metrics_path
from lsgtrain.train import train

from ..helpers import SHORT, WORDS


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(home / "modules"), "HF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lsgtrain.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


QUICK_GENERATION = ["--num-beams", "1", "--max-new-tokens", "3"]


VENUES = ["acl", "emnlp", "naacl"]


def _text(words: int, seed: int = 0) -> str:
    picks = torch.randint(len(WORDS), (words,), generator=torch.Generator().manual_seed(seed)).tolist()
    return " ".join(WORDS[i] for i in picks) + "."


def _metrics_file(output: Path) -> dict:
    return json.loads(output.with_name(f"{output.stem}.metrics.json").read_text())


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _table(size: int = 5) -> Dataset:
    """Rows with an id, a document (of growing length), a summary and a venue."""
    return Dataset.from_list(
        [{"doc_id": f"p{i}", "text": _text(20 + 30 * i, seed=i), "abstract": _text(12, seed=100 + i),
          "venue": VENUES[i % 3]} for i in range(size)]
    )  # fmt: skip


def _classifier(checkpoint: Path, folder: Path, problem_type: str) -> Path:
    """An exported LSGPegasusForSequenceClassification over the 3 venues, as a classification run writes one."""
    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForSequenceClassification

    config = LSGPegasusConfig.from_pretrained(
        checkpoint, num_labels=3, id2label=dict(enumerate(VENUES)), problem_type=problem_type
    )
    torch.manual_seed(0)
    LSGPegasusForSequenceClassification(config).save_pretrained(folder)
    for tokenizer_file in checkpoint.glob("tokenizer*"):
        shutil.copy(tokenizer_file, folder)
    return folder


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint, tmp_path_factory) -> Path:
    return _classifier(tiny_checkpoint, tmp_path_factory.mktemp("classifier"), "single_label_classification")


def _write(table: Dataset, path: Path) -> Path:
    {".jsonl": table.to_json, ".csv": table.to_csv, ".parquet": table.to_parquet}[path.suffix](str(path))
    return path


def _copy_of(checkpoint: Path, folder: Path) -> Path:
    shutil.copytree(checkpoint, folder)
    return folder


def test_summarize_cli_writes_a_summary_per_file(make_cfg, tmp_path):
    from lsgtrain.cli import main as cli_main

    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false"))
    documents = []
    for i in range(2):
        documents.append(tmp_path / f"doc{i}.txt")
        documents[-1].write_text("Long documents need sparse attention. " * (30 + i))
    output = tmp_path / "summaries.jsonl"
    code = cli_main(["summarize", str(tmp_path / "run" / "hf_model"), *map(str, documents), "--output", str(output),
                     "--num-beams", "1", "--max-new-tokens", "5"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == [str(d) for d in documents]
    assert all(isinstance(row["prediction"], str) and row["input_tokens"] > 100 for row in rows)
    assert all(row["reference"] is None and "rougeLsum" not in row for row in rows)  # no reference, no score
    assert cli_main(["summarize", str(tmp_path / "nowhere"), str(documents[0])]) == 2


def test_summarize_warns_with_counts_when_documents_are_truncated(tiny_checkpoint, tmp_path, caplog, capsys):
    long, short = tmp_path / "long.txt", tmp_path / "short.txt"
    long.write_text(_text(3000))
    short.write_text(_text(50))
    output = tmp_path / "out.jsonl"
    assert cli_main(["summarize", str(tiny_checkpoint), str(long), str(short), "--output", str(output),
                     *QUICK_GENERATION]) == 0  # fmt: skip
    assert "1 of 2 documents are longer than 512 tokens and were truncated to it" in caplog.text
    rows = {row["id"]: row for row in _rows(output)}
    assert rows[str(long)]["truncated"] and rows[str(long)]["input_tokens"] == 512
    assert rows[str(long)]["document_tokens"] > 2000
    assert not rows[str(short)]["truncated"] and rows[str(short)]["input_tokens"] == rows[str(short)]["document_tokens"]
    assert "1 predictions written" not in capsys.readouterr().out  # 2 were
    assert cli_main(["summarize", str(tiny_checkpoint), str(long), "--max-length", "-5", *QUICK_GENERATION]) == 2
    assert "--max-length=-5 must be between 1 and the model's max_position_embeddings (512)" in capsys.readouterr().err


def test_summarize_reports_and_skips_empty_documents(tiny_checkpoint, tmp_path, caplog, capsys):
    empty, blank, text = tmp_path / "empty.txt", tmp_path / "blank.txt", tmp_path / "text.txt"
    empty.write_text("")
    blank.write_text("  \n\n ")
    text.write_text(_text(60))
    output = tmp_path / "out.jsonl"
    files = [str(empty), str(blank), str(text)]
    assert cli_main(["summarize", str(tiny_checkpoint), *files, "--output", str(output), *QUICK_GENERATION]) == 0
    assert f"2 of 3 documents are empty and were skipped (no prediction written): ids {files[:2]}" in caplog.text
    assert [row["id"] for row in _rows(output)] == [str(text)]
    assert "1 predictions written" in capsys.readouterr().out
    assert cli_main(["summarize", str(tiny_checkpoint), str(empty), *QUICK_GENERATION]) == 2
    assert "every document is empty: nothing to predict" in capsys.readouterr().err


def test_summarize_names_a_non_utf8_file_and_keeps_earlier_results(tiny_checkpoint, tmp_path, capsys):
    good, other, bad = tmp_path / "good.txt", tmp_path / "other.txt", tmp_path / "latin1.txt"
    good.write_text(_text(40))
    other.write_text(_text(50))
    bad.write_bytes("Résumé of a long document.".encode("latin-1"))
    message = f"{bad} is not UTF-8 text (invalid continuation byte at byte 1); convert it"
    fresh = tmp_path / "fresh.jsonl"
    assert cli_main(["summarize", str(tiny_checkpoint), str(other), str(bad), "--output", str(fresh),
                     *QUICK_GENERATION]) == 2  # fmt: skip
    assert message in capsys.readouterr().err
    assert not fresh.exists()  # refused before any work, nothing half-written
    output = tmp_path / "out.jsonl"
    options = ["--output", str(output), *QUICK_GENERATION]
    assert cli_main(["summarize", str(tiny_checkpoint), str(good), *options]) == 0
    written = output.read_text()
    assert cli_main(["summarize", str(tiny_checkpoint), str(good), str(other), str(bad), *options, "--resume"]) == 2
    assert message in capsys.readouterr().err
    assert output.read_text() == written  # the earlier summary is still there
    assert cli_main(["summarize", str(tiny_checkpoint), str(other), *options]) == 2  # not clobbered without --resume
    assert f"{output} exists: pass --resume" in capsys.readouterr().err
    assert output.read_text() == written


def test_rows_are_written_as_they_come_and_resume_skips_them(tiny_checkpoint, tmp_path, monkeypatch):
    from lsgtrain import predict as predict_module

    documents = predict_module.read_documents([str(_write(_table(), tmp_path / "docs.jsonl"))], text_column="text")
    output = tmp_path / "out.jsonl"
    real = predict_module._summarize
    calls = []

    def crash_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "_summarize", crash_on_second_batch)
    generation = {"num_beams": 1, "max_new_tokens": 3}
    with pytest.raises(RuntimeError, match="killed"):
        predict_module.predict(tiny_checkpoint, documents, output=output, batch_size=2, generation=generation)
    first = _rows(output)
    assert [row["id"] for row in first] == [4, 3]  # the first batch: the two longest documents
    output.write_text(output.read_text() + '{"id": 2, "summ')  # a row cut short by the crash
    monkeypatch.setattr(predict_module, "_summarize", real)
    report = predict_module.predict(
        tiny_checkpoint, documents, output=output, resume=True, batch_size=2, generation=generation
    )
    assert (report.resumed, report.written) == (2, 3)
    rows = _rows(output)
    assert rows[:2] == first and sorted(row["id"] for row in rows) == [0, 1, 2, 3, 4]
    lengths = [row["document_tokens"] for row in rows[2:]]
    assert lengths == sorted(lengths, reverse=True)  # batched by length, longest first


def test_summarize_reads_as_many_tokens_as_the_model_was_trained_on(tiny_checkpoint, tmp_path, caplog):
    """An export whose position tables outgrew its training length (longer summaries) records that length as its
    tokenizer's `model_max_length`: predict reads that much by default, and more only when asked."""
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": 128}))
    document, output = tmp_path / "long.txt", tmp_path / "out.jsonl"
    document.write_text(_text(3000))
    assert cli_main(["summarize", str(model), str(document), "--output", str(output), *QUICK_GENERATION]) == 0
    assert "truncated to it (longest" in caplog.text and "raise --max-length, up to the model's 512" in caplog.text
    assert _rows(output)[0]["input_tokens"] == 128
    output.unlink()
    assert cli_main(["summarize", str(model), str(document), "--output", str(output), "--max-length", "300",
                     *QUICK_GENERATION]) == 0  # fmt: skip
    assert _rows(output)[0]["input_tokens"] == 300


def test_summarize_refuses_a_model_with_non_finite_weights(tiny_checkpoint, tmp_path, capsys):
    from lsgtrain.cli import main as cli_main
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    model = LSGPegasusForConditionalGeneration.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        model.model.shared.weight[3] = float("nan")
    shutil.copytree(tiny_checkpoint, tmp_path / "nan")
    model.save_pretrained(tmp_path / "nan")
    document = tmp_path / "doc.txt"
    document.write_text("Long documents need sparse attention. " * 20)
    assert cli_main(["summarize", str(tmp_path / "nan"), str(document), "--max-new-tokens", "3"]) == 2
    assert "has non-finite weights" in capsys.readouterr().err


def test_summarize_does_not_run_a_model_folders_code_unless_asked(tiny_checkpoint, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    marker = tmp_path / "code-ran"
    with open(folder / "modeling_lsg_pegasus.py", "a") as modeling:
        modeling.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    document = tmp_path / "doc.txt"
    document.write_text("Long documents need sparse attention. " * 20)
    options = [str(folder), str(document), "--num-beams", "1", "--max-new-tokens", "3"]
    result = _cli("summarize", *options, home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prediction" in json.loads(result.stdout.splitlines()[-1])
    assert not marker.exists()
    result = _cli("summarize", *options, "--trust-remote-code", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "ran"  # the opt-in does run the folder's code


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_predict_reads_jsonl_csv_and_parquet_with_ids_and_rouge(tiny_checkpoint, tmp_path, suffix, capsys):
    path = _write(_table(), tmp_path / f"docs{suffix}")
    output = tmp_path / "out.jsonl"
    code = cli_main(["predict", str(tiny_checkpoint), "--input", str(path), "--text-column", "text", "--id-column",
                     "doc_id", "--reference-column", "abstract", "--output", str(output), "--batch-size", "2",
                     "--dtype", "bf16", *QUICK_GENERATION])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = _rows(output)
    assert sorted(row["id"] for row in rows) == [f"p{i}" for i in range(5)]
    references = dict(zip(_table()["doc_id"], _table()["abstract"], strict=True))
    assert all(row["reference"] == references[row["id"]] and isinstance(row["prediction"], str) for row in rows)
    expected = compute_rouge([row["prediction"] for row in rows], [row["reference"] for row in rows])
    for row in rows:  # each row's own ROUGE, as a training run's predictions carry it
        assert row["rougeLsum"] == round(compute_rouge([row["prediction"]], [row["reference"]])["rougeLsum"], 2)
    saved = _metrics_file(output)
    assert {name: saved["metrics"][name] for name in expected} == pytest.approx(expected) and saved["rows"] == 5
    for name, value in expected.items():  # each ROUGE with its 95% bootstrap interval
        assert saved["metrics"][f"{name}_low"] <= value <= saved["metrics"][f"{name}_high"]
    assert saved["generation"]["num_beams"] == 1 and saved["generation"]["max_new_tokens"] == 3
    assert f"rougeLsum    {expected['rougeLsum']:.4f}" in capsys.readouterr().out


def test_predict_names_unreadable_files_and_missing_columns(tiny_checkpoint, tmp_path, monkeypatch):
    from lsgtrain.predict import PredictionError, predict, read_documents

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a document"}\n{"text": \n')
    with pytest.raises(PredictionError, match=f"cannot read {broken} as jsonl"):
        read_documents([str(broken)], text_column="text")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"text": "une \u00e9tude"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"--input: {latin1} is not UTF-8: bytes .* on line 1"):
        read_documents([str(latin1)], text_column="text")
    good = _write(_table(), tmp_path / "docs.parquet")
    with pytest.raises(PredictionError, match=r"--text-column='article' is not a column of .*docs.parquet; columns "
                       r"present: \['doc_id', 'text', 'abstract', 'venue'\]"):  # fmt: skip
        read_documents([str(good)], text_column="article")
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nowhere\.jsonl"):
        read_documents([str(good), str(tmp_path / "nowhere.jsonl")])
    repeated = _write(Dataset.from_list([{"text": "a", "n": 1}, {"text": "b", "n": 1}]), tmp_path / "repeated.jsonl")
    with pytest.raises(PredictionError, match="--id-column='n': the id 1 appears more than once; ids must be unique"):
        read_documents([str(repeated)], text_column="text", id_column="n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PredictionError, match=r"--device=cuda, but torch sees no CUDA GPU here; use --device cpu"):
        predict(tiny_checkpoint, read_documents([str(good)], text_column="text"), device="cuda")


def test_predict_reads_a_dataset_split_from_a_local_folder(hub_standins, tmp_path):
    from lsgtrain.predict import PredictionError, predict, read_documents

    documents = read_documents(
        dataset=str(hub_standins["ccdv/arxiv-summarization"]), split="test", config="section",
        text_column="article", reference_column="abstract",
    )  # fmt: skip
    output = tmp_path / "out.jsonl"
    report = predict(hub_standins["ccdv/lsg-pegasus-large-4096"], documents, output=output,
                     generation={"num_beams": 1, "max_new_tokens": 4})  # fmt: skip
    rows = _rows(output)
    assert report.written == len(rows) == 4 and sorted(row["id"] for row in rows) == [0, 1, 2, 3]
    assert all(row["document_tokens"] > 200 and not row["truncated"] for row in rows)  # 4,096 positions
    rouge = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    assert set(_metrics_file(output)["metrics"]) == {
        f"{name}{bound}" for name in rouge for bound in ("", "_low", "_high")
    }
    with pytest.raises(PredictionError, match=r"could not load the 'tset' split of dataset .*Unknown split"):
        read_documents(dataset=str(hub_standins["ccdv/arxiv-summarization"]), split="tset", config="section")


def test_predict_reads_each_local_dataset_folder_from_its_own_files(hub_standins, tmp_path):
    """A second folder with the same name (datasets 5.2 keys a local folder's cache by name and config only) must
    not be read from the first one's cache."""
    from lsgtrain.predict import read_documents

    first = hub_standins["ccdv/arxiv-summarization"]
    second = shutil.copytree(first, tmp_path / "copy" / first.name)
    shard = second / "section" / "test-00000-of-00001.parquet"
    Dataset.from_list([{"article": "a document only the copy has .", "abstract": "its summary ."}]).to_parquet(shard)
    read = {folder: read_documents(dataset=str(folder), split="test", config="section", text_column="article")
            for folder in (first, second)}  # fmt: skip
    assert len(read[first].texts) == 4 and read[second].texts == ["a document only the copy has ."]


def test_predict_takes_min_new_tokens_and_early_stopping(tiny_checkpoint, tmp_path):
    documents = tmp_path / "docs.jsonl"
    row = {"text": "long documents need sparse attention so global tokens summarise every block", "summary": "a b"}
    documents.write_text(json.dumps(row) + "\n")
    output = tmp_path / "out.jsonl"
    code = cli_main(["predict", str(tiny_checkpoint), "--input", str(documents), "--text-column", "text",
                     "--reference-column", "summary", "--output", str(output), "--num-beams", "2",
                     "--max-new-tokens", "4", "--min-new-tokens", "4", "--early-stopping", "never"])  # fmt: skip
    assert code == 0
    saved = json.loads(metrics_path(output).read_text())
    assert saved["generation"]["min_new_tokens"] == 4 and saved["generation"]["early_stopping"] == "never"
    with pytest.raises(SystemExit):
        cli_main(["predict", str(tiny_checkpoint), "--input", str(documents), "--early-stopping", "sometimes"])


def test_classifier_predicts_label_names_and_scores_accuracy_and_f1(classifier, tmp_path, capsys):
    path = _write(_table(6), tmp_path / "docs.jsonl")
    output = tmp_path / "labels.jsonl"
    code = cli_main(["predict", str(classifier), "--input", str(path), "--text-column", "text", "--reference-column",
                     "venue", "--output", str(output)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = _rows(output)
    assert len(rows) == 6 and {row["prediction"] for row in rows} <= set(VENUES)
    assert all(row["correct"] == (row["prediction"] == row["reference"]) for row in rows)
    saved = _metrics_file(output)["metrics"]
    accuracy = sum(row["prediction"] == row["reference"] for row in rows) / len(rows)
    assert saved["acc"] == pytest.approx(accuracy) and 0.0 <= saved["f1_macro"] <= 1.0
    unknown = _write(Dataset.from_list([{"text": "a paper", "venue": "coling"}]), tmp_path / "unknown.jsonl")
    assert cli_main(["predict", str(classifier), "--input", str(unknown), "--text-column", "text",
                     "--reference-column", "venue"]) == 2  # fmt: skip
    assert (
        "labels the model does not know: ['coling']; the model's labels (id2label) are ['acl'"
        in capsys.readouterr().err
    )


def test_multi_label_classifier_predicts_label_lists_and_scores_them(tiny_checkpoint, tmp_path):
    from lsgtrain.predict import predict, read_documents

    model = _classifier(tiny_checkpoint, tmp_path / "multi", "multi_label_classification")
    table = _table(4).map(lambda row, i: {"venues": VENUES[: 1 + i % 3]}, with_indices=True)
    documents = read_documents([str(_write(table, tmp_path / "docs.parquet"))], text_column="text",
                               reference_column="venues")  # fmt: skip
    report = predict(model, documents, output=tmp_path / "labels.jsonl")
    rows = _rows(tmp_path / "labels.jsonl")
    assert all(isinstance(row["prediction"], list) and set(row["prediction"]) <= set(VENUES) for row in rows)
    exact = [[float(venue in row["prediction"]) == float(venue in row["reference"]) for venue in VENUES]
             for row in rows]  # fmt: skip
    assert report.metrics["acc"] == pytest.approx(sum(map(sum, exact)) / (3 * len(rows)))  # per-label accuracy
    assert _metrics_file(tmp_path / "labels.jsonl")["metrics"] == report.metrics


def test_predict_names_a_model_folder_without_a_tokenizer_or_a_missing_one(tiny_checkpoint, tmp_path, capsys):
    """The model folder is read by the one checkpoint reader and tokenizer loader (`lsgtrain.modeling.loading`)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_checkpoint / name, bare / name)
    document = tmp_path / "document.txt"
    document.write_text(_text(30))
    assert cli_main(["summarize", str(bare), str(document), *QUICK_GENERATION]) == 2
    assert f"model={bare} has no tokenizer (tokenizer.json or spiece.model): copy the files" in capsys.readouterr().err
    assert cli_main(["summarize", str(tmp_path / "nowhere"), str(document), *QUICK_GENERATION]) == 2
    assert f"model={tmp_path / 'nowhere'}: no checkpoint folder there" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "content"), [("empty_list.json", b"[]"), ("header.csv", b"text\n")])
def test_predict_reads_input_files_as_a_run_reads_its_data_files(tmp_path, name, content):
    """One reader of data files (`lsgtrain.data.sources.read_table`): a file that parses to no rows is named as a
    run's `data.data_files` names it."""
    from lsgtrain.predict import PredictionError, read_documents

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PredictionError, match=rf"--input: {path} has no rows; give a file with one row per document"):
        read_documents([str(path)], text_column="text")


def test_predict_writes_the_summaries_the_task_generates_in_a_test(make_cfg, standin_files, tmp_path):
    """One generation of summaries (`lsgtrain.tasks.summarization.generate_ids` / `decode_summaries`): `lsgtrain
    predict` over a run's test file writes the summaries that run's test (the ROUGE callback) wrote, for the same
    length and decoding settings. The shipped trained model, so that each document gets its own summary."""
    from lsgtrain.embedded import embedded_model

    model, files = embedded_model("aclsum_tiny"), standin_files("summarization", "document", "summary")
    cfg = make_cfg(f"model.pretrained={model}", "data.source=files", "logger=none", "trainer.accelerator=cpu",
                   *(f"++data.data_files.{split}={path}" for split, path in files.items()), "data.eval_batch_size=1",
                   config_name="eval", fast=False)  # fmt: skip
    cfg.paths.output_dir = str(tmp_path / "eval")
    decoding = ["module.generation.num_beams=3", "module.generation.max_new_tokens=12"]  # not the folder's own
    cfg.module.generation.num_beams, cfg.module.generation.max_new_tokens = 3, 12
    evaluate(cfg, overrides=decoding)  # what the user set: the folder's generation_config.json decides the rest
    tested = {row["id"]: row["prediction"] for row in _rows(tmp_path / "eval" / "predictions" / "test.jsonl")}
    output = tmp_path / "out.jsonl"
    options = ["--output", str(output), "--batch-size", "1", "--num-beams", "3", "--max-new-tokens", "12"]
    assert cli_main(["predict", model, "--input", files["test"], *options]) == 0
    assert {row["id"]: row["prediction"] for row in _rows(output)} == tested
    assert len(tested) == 5 and len(set(tested.values())) > 1  # every test document, each its own summary


def test_a_tokenizer_larger_than_the_models_embeddings_is_refused_before_any_output(tiny_checkpoint, tmp_path, capsys):
    """Before: an IndexError in the embedding lookup after loading, and an empty output file (issue 26.12). The
    same check as training's (`modeling.loading.tokenizer_overflow`)."""
    from lsgtrain.data.tokenizer import train_pegasus_tokenizer

    folder = _copy_of(tiny_checkpoint, tmp_path / "model")
    train_pegasus_tokenizer([_text(300, seed=i) + f" word{i}" for i in range(200)], vocab_size=400).save_pretrained(
        folder
    )
    document, output = tmp_path / "document.txt", tmp_path / "out.jsonl"
    document.write_text(_text(30))
    assert cli_main(["summarize", str(folder), str(document), "--output", str(output), *QUICK_GENERATION]) == 2
    error = capsys.readouterr().err
    assert f"{folder}: its tokenizer does not fit its model (its largest id is" in error
    rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    assert f"but the model has {rows} embedding rows" in error
    assert not output.exists()


def test_max_new_tokens_beyond_the_decoders_positions_is_refused_before_any_output(tiny_checkpoint, tmp_path, capsys):
    """Before: an IndexError at the first batch, and an empty output file (issue 26.7)."""
    document, output = tmp_path / "document.txt", tmp_path / "out.jsonl"
    document.write_text(_text(30))
    options = [str(tiny_checkpoint), str(document), "--output", str(output), "--num-beams", "1"]
    assert cli_main(["summarize", *options, "--max-new-tokens", "513"]) == 2
    assert (
        "max_new_tokens=513 (--max-new-tokens, or the model's generation_config.json) is beyond the decoder's "
        "position table (max_position_embeddings=512); pass --max-new-tokens 512 or less" in capsys.readouterr().err
    )
    assert not output.exists()


def test_reading_beyond_the_trained_length_extends_the_model_and_keeps_short_documents_predictions(
    tiny_checkpoint, tmp_path, caplog
):
    """A model trained at 256 tokens (position tables of 512) read at 1,024: its tables are extended as `lsgtrain
    convert` extends them, one warning names the trained length, rows and metrics record both lengths, and the
    documents shorter than 256 tokens get the predictions they got at 256 (the first rows of a regenerated
    sinusoidal table are the old ones). Before, --max-length beyond the position table was refused."""
    model = _copy_of(tiny_checkpoint, tmp_path / "model")
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": 256}))
    table = Dataset.from_list([{"document": _text(words, seed=i), "summary": _text(12, seed=50 + i)}
                               for i, words in enumerate((30, 60, 90, 3000))])  # fmt: skip
    documents = _write(table, tmp_path / "docs.jsonl")
    rows = {}
    for length in (256, 1024):
        caplog.clear()
        output = tmp_path / f"at{length}.jsonl"
        assert cli_main(["predict", str(model), "--input", str(documents), "--reference-column", "summary",
                         "--output", str(output), "--max-length", str(length), *QUICK_GENERATION]) == 0  # fmt: skip
        rows[length] = {row["id"]: row for row in _rows(output)}
        assert {(row["max_length"], row["trained_length"]) for row in rows[length].values()} == {(length, 256)}
        assert (_metrics_file(output)["max_length"], _metrics_file(output)["trained_length"]) == (length, 256)
        named = [r for r in caplog.records if r.levelname == "WARNING" and "trained at 256 tokens" in r.getMessage()]
        assert len(named) == (length > 256)
    assert "extended from 512" in named[0].getMessage()
    short = [i for i, row in rows[256].items() if row["document_tokens"] < 256]
    assert len(short) == 3 and rows[1024][3]["input_tokens"] == 1024 > rows[256][3]["input_tokens"]
    assert [rows[1024][i]["prediction"] for i in short] == [rows[256][i]["prediction"] for i in short]
    assert all(rows[256][i]["prediction"].strip() for i in short)  # summaries, not empty strings
