"""The pretraining task: the MLM step adds the encoder loss; a pretraining run exports a model that fine-tunes and
predicts."""

import json
from pathlib import Path

import torch

from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.train import train

from ..helpers import PRETRAIN, QUICK, objects_vocab


def test_mlm_pretraining_step_adds_the_encoder_loss(make_cfg):
    metrics, objects = train(make_cfg(*PRETRAIN, *QUICK, "data.objective.mlm_probability=0.15"))
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert (batch["mlm_labels"] != -100).any()
    assert batch["mlm_labels"].shape[1] <= batch["input_ids"].shape[1]
    module = objects["module"].eval()
    inputs = module.model_inputs(batch)
    labels = inputs.pop("labels")
    with torch.no_grad():
        output = module.model(**inputs, labels=labels)
        loss_sum, tokens = module._loss_terms(output, labels, batch)
        gap_sum, gap_tokens = module._loss_terms(output, labels, {"input_ids": batch["input_ids"]})
    assert tokens == gap_tokens + (batch["mlm_labels"] != -100).sum()  # the masked tokens count too
    assert torch.isfinite(loss_sum) and loss_sum > gap_sum


def test_pretraining_run_exports_a_model_that_fine_tunes_and_predicts(make_cfg, tmp_path):
    from lsgtrain.predict import predict, read_documents

    cfg = make_cfg(*PRETRAIN, "trainer.max_epochs=2", "trainer.limit_train_batches=3",
                   "callbacks.rouge.every_n_epochs=1", "data.max_eval_samples=1", "data.eval_batch_size=8",
                   "module.generation.max_new_tokens=6")  # fmt: skip
    metrics, objects = train(cfg)
    assert {"val/loss", "val/rouge1", "val/rougeLsum"} <= metrics.keys()
    assert "test/rouge1" not in metrics  # no test split: the papers' test set is not pretraining's
    export = Path(cfg.paths.output_dir) / "hf_model"
    assert (export / "tokenizer.json").is_file() or (export / "spiece.model").is_file()
    card = (export / "README.md").read_text()  # its ROUGE is of gap sentences: not listed as summarization results
    assert "model-index" not in card and "LSG-Pegasus gap-sentence pretrained" in card
    assert "lead sentences, gap ratio [0.15, 0.45], 80% of them left in the input" in card
    predictions = sorted(export.parent.glob("predictions/val_epoch*.jsonl"))[-1].read_text().splitlines()
    assert all(json.loads(line)["reference"] for line in predictions)

    # summaries longer than the 128 tokens it was pretrained at: the position tables grow to cover them
    finetune = make_cfg(*QUICK, f"model.pretrained={export}", "data.max_source_length=128",
                        "data.max_target_length=256")  # fmt: skip
    finetune.paths.output_dir = str(tmp_path / "finetune")
    metrics, objects = train(finetune)
    assert objects["model"].config.max_position_embeddings == 256 and torch.isfinite(torch.tensor(metrics["val/loss"]))
    assert max(len(row["labels"]) for row in objects["datamodule"].examples("train")) > 128
    assert objects["model"].config.vocab_size == len(objects["datamodule"].tokenizer)
    assert objects["datamodule"].tokenizer.get_vocab() == objects_vocab(export)
    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(json.dumps({"text": row["document"][:500]}) + "\n"
                                 for row in load_aclsum_split("train")[:2]))  # fmt: skip
    out = tmp_path / "predicted.jsonl"
    predict(export, read_documents([str(documents)], text_column="text"), output=out,
            generation={"max_new_tokens": 4, "num_beams": 1})  # fmt: skip
    assert len(out.read_text().splitlines()) == 2
