"""The summarization task learns from its documents: a tiny model copies held-out sequences, predictions follow the
document, the lead baseline beside ROUGE."""

import importlib
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from lsgtrain.metrics.rouge import ROUGE_TYPES, lead_baseline
from lsgtrain.run.folder import lead_baseline_lines
from lsgtrain.train import CONFIG_DIR, train

LETTERS = "a b c d e f g h i j k l m n o p".split()


BLOCK = 4  # model.lsg.block_size: a sequence (2 tokens per letter, `▁` and the letter, then `</s>`) spans 6 blocks


SEQUENCE_LETTERS = 10  # one length: 8-10 letters were copied but often ended a letter early or late in 400 steps


# init_std 0.1: with Pegasus' 0.02 the same model had not started to copy after 800 steps (loss near uniform).
COPY_RUN = [
    "model.pretrained=null", "data.source=files", "data.max_source_length=64", "data.max_target_length=64",
    "data.batch_size=32",
    "data.eval_batch_size=64", "data.tokenizer.vocab_size=100", f"model.lsg.block_size={BLOCK}",
    f"model.lsg.sparse_block_size={BLOCK}", "model.lsg.sparsity_factor=2", "++model.init.d_model=64",
    "++model.init.encoder_ffn_dim=128", "++model.init.decoder_ffn_dim=128", "++model.init.dropout=0.0",
    "++model.init.init_std=0.1", "module.optimizer.lr=3e-3", "module.generation.num_beams=1",
    "module.generation.max_new_tokens=40", "module.generation.no_repeat_ngram_size=0", "trainer.max_epochs=1",
    "callbacks.rouge.every_n_epochs=1", "logger=none", "trainer.accelerator=cpu", "trainer.devices=1",
]  # fmt: skip


SIZES = {"train": 12800, "val": 32, "test": 32}  # 400 steps of 32


PREDICTIONS_SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "default_run_predictions.py"


def _sequences(generator: torch.Generator, count: int) -> list[str]:
    letters = torch.randint(len(LETTERS), (count, SEQUENCE_LETTERS), generator=generator).tolist()
    return [" ".join(LETTERS[i] for i in row) for row in letters]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on matrices this small, 2 threads contending on a busy 2-core CPU ran 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory, cache_dir, one_thread) -> dict:
    """`train(cfg)` on generated copy data: document = summary = a random letter sequence; held-out val/test."""
    root = tmp_path_factory.mktemp("copy")
    generator = torch.Generator().manual_seed(0)
    files = {}
    for split, size in SIZES.items():
        rows = [{"document": s, "summary": s} for s in _sequences(generator, size)]
        files[split] = root / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_files = "data.data_files={" + ",".join(f"{split}:{path}" for split, path in files.items()) + "}"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*COPY_RUN, data_files])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.output_dir = str(root), str(root / "run")
        cfg.paths.log_dir, cfg.paths.cache_dir = str(root / "logs"), str(cache_dir)
    metrics, objects = train(cfg)
    return {"metrics": metrics, "objects": objects, "run": root / "run", "files": files}


def _generate(model, tokenizer, documents: list[str]) -> list[str]:
    batch = tokenizer(documents, padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**batch, num_beams=1, max_new_tokens=40)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def test_a_tiny_lsg_pegasus_learns_to_copy_held_out_sequences_of_several_blocks(copy_run):
    datamodule = copy_run["objects"]["datamodule"]
    lengths = [len(ids) for ids in datamodule.datasets["test"]["input_ids"]]
    assert min(lengths) > 2 * BLOCK  # the block-sparse path, not the full attention of short inputs
    assert not set(datamodule.documents("test")) & set(datamodule.documents("train"))  # held out
    rows = [json.loads(line) for line in (copy_run["run"] / "predictions" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == SIZES["test"]
    exact = sum(row["prediction"] == row["reference"] for row in rows)
    assert exact / len(rows) >= 0.9, [(row["prediction"], row["reference"]) for row in rows[:4]]


def test_predictions_differ_per_document_and_follow_a_changed_document(copy_run):
    model = copy_run["objects"]["module"].model.eval()
    tokenizer = copy_run["objects"]["datamodule"].tokenizer
    documents = copy_run["objects"]["datamodule"].documents("test")[:16]
    changed = [" ".join(LETTERS[(LETTERS.index(letter) + 1) % len(LETTERS)] for letter in d.split()) for d in documents]
    predictions, after_change = _generate(model, tokenizer, documents), _generate(model, tokenizer, changed)
    assert len(set(predictions)) == len(documents)
    assert all(before != after for before, after in zip(predictions, after_change, strict=True))

    # the same checks see a decoder that no longer hears the encoder: zeroed encoder output, one string for all
    hook = model.get_encoder().register_forward_hook(
        lambda module, args, output: output.__class__(last_hidden_state=torch.zeros_like(output.last_hidden_state))
    )
    try:
        deaf = _generate(model, tokenizer, documents + changed)
    finally:
        hook.remove()
    assert len(set(deaf)) == 1


def test_lead_baseline_is_reported_beside_rouge_in_logs_summary_and_card(copy_run):
    metrics, objects = copy_run["metrics"], copy_run["objects"]
    datamodule = objects["datamodule"]
    words, scores = lead_baseline(datamodule.documents("test"), datamodule.references("test"))
    logged = objects["trainer"].logged_metrics  # what the loggers received
    assert metrics["test/lead_words"] == words
    for name in ROUGE_TYPES:
        assert metrics[f"test/lead_{name}"] == pytest.approx(scores[name])
        assert float(logged[f"test/lead_{name}"]) == pytest.approx(scores[name])
        assert f"val/lead_{name}" in metrics
    summary = json.loads((copy_run["run"] / "run_summary.json").read_text())
    assert summary["metrics"]["test/lead_rouge1"] == metrics["test/lead_rouge1"]
    printed = lead_baseline_lines(summary["metrics"])  # the end-of-run summary's line, 95% intervals beside

    def shown(key: str) -> str:
        return f"{metrics[key]:.2f} [{metrics[key + '_low']:.2f}, {metrics[key + '_high']:.2f}]"

    assert printed == [
        f"  test ROUGE vs lead baseline (first {words} words of each document; 95% bootstrap intervals): "
        + ", ".join(f"{name} {shown(f'test/{name}')} vs {shown(f'test/lead_{name}')}" for name in ROUGE_TYPES)
    ]
    card = ModelCard.load(copy_run["run"] / "hf_model" / "README.md")
    assert f"Lead baseline: the first {words} words of each test document" in card.text
    assert f"| rouge1 | {shown('test/rouge1')} | {shown('test/lead_rouge1')} |" in card.text
    assert "lead" not in " ".join(r.metric_type for r in card.data.eval_results)  # not the model's results
    assert "| lead_rouge1 |" not in card.text


def test_predictions_table_script_shows_three_predictions_beside_references(copy_run, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("default_run_predictions", PREDICTIONS_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr("sys.argv", ["default_run_predictions.py", str(copy_run["run"]), "--chars", "12"])
    script.main()
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in (copy_run["run"] / "predictions" / "test.jsonl").read_text().splitlines()]
    assert lines[:2] == ["| id | prediction | reference |", "|---|---|---|"]
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| 0", "| 1", "| 2"] and lines[5] == ""
    assert lines[2].endswith(f"| {script.shorten(rows[0]['reference'], 12)} |") and " …" in lines[2]
    assert lines[6] == f"{len({r['prediction'] for r in rows})} of the {len(rows)} test predictions are distinct."
