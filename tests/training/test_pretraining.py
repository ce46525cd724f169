"""Gap-sentence pretraining: Pegasus' objective (scores, selection, masking), windows and per-epoch masks of the
datamodule, the `aclsum_pretrain` run whose export fine-tunes and predicts, and the embedded pretrained model."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.data.gap_sentences import (
    MASK_SENTENCE_ID,
    MASK_TOKEN_ID,
    GapSentenceObjective,
    pack_windows,
    sentence_scores,
    split_sentences,
)
from lsgtrain.train import train

from .conftest import QUICK

SENTENCES = [
    "Sparse attention reads long documents.",
    "Long documents need sparse attention and global tokens.",
    "The weather was nice.",
    "Global tokens summarise long documents.",
    "We thank the reviewers.",
]
EOS = 1


def test_sentences_are_split_inside_paragraphs():
    assert split_sentences("First one. Second one.\nA heading\n\nLast one.") == [
        "First one.", "Second one.", "A heading", "Last one.",
    ]  # fmt: skip


def test_scores_are_rouge1_f1_of_each_sentence_against_the_rest():
    scores = sentence_scores(["a b c", "a b", "d"])
    # "a b c" vs "a b d": overlap 2 of 3 + 3 -> 4/6; "a b" vs "a b c d": 2*2/6; "d" vs "a b c a b": 0
    assert scores == pytest.approx([4 / 6, 4 / 6, 0.0])
    ranked = np.argsort(sentence_scores(SENTENCES))[::-1]
    assert set(ranked[:2]) <= {0, 1, 3} and set(ranked[-2:]) == {2, 4}  # on-topic sentences score highest


def test_windows_pack_consecutive_sentences_into_the_budget():
    assert pack_windows([3, 4, 2, 6, 1], budget=7) == [(0, 2), (2, 3), (3, 5)]
    assert pack_windows([9, 2], budget=5) == [(0, 1), (1, 2)]  # a longer sentence: a window of its own
    assert pack_windows([], budget=5) == []


def sentence_ids(n: int = 10) -> list[list[int]]:
    return [[100 + 10 * i + j for j in range(3)] for i in range(n)]


@pytest.mark.parametrize(
    ("strategy", "expected"), [("principal", [2, 5, 7]), ("lead", [0, 1, 2])]
)  # fmt: skip
def test_gap_sentences_are_masked_in_the_input_and_generated_in_document_order(strategy, expected):
    scores = [0.1, 0.2, 0.9, 0.0, 0.3, 0.8, 0.1, 0.7, 0.2, 0.1]
    objective = GapSentenceObjective(gap_ratio=0.3, strategy=strategy)
    example = objective.example(sentence_ids(), scores, np.random.default_rng(0), eos_id=EOS,
                                max_source_length=100, max_target_length=100)  # fmt: skip
    assert example["labels"] == [t for i in expected for t in sentence_ids()[i]] + [EOS]
    pieces = [[MASK_SENTENCE_ID] if i in expected else s for i, s in enumerate(sentence_ids())]
    assert example["input_ids"] == [t for piece in pieces for t in piece] + [EOS]
    assert "mlm_labels" not in example


def test_random_and_stochastic_selection_follow_their_generator():
    scores = list(np.linspace(1, 0, 20))
    random = GapSentenceObjective(strategy="random")
    draws = [random.select(scores, np.random.default_rng(seed)) for seed in range(5)]
    assert all(len(d) == 6 for d in draws) and len({tuple(d) for d in draws}) > 1
    assert random.select(scores, np.random.default_rng(3)) == draws[3]
    stochastic = GapSentenceObjective(stochastic=True)
    counts = {len(stochastic.select(scores, np.random.default_rng(seed))) for seed in range(50)}
    assert min(counts) >= 3 and max(counts) <= 9 and len(counts) > 3  # ratio drawn from [0.15, 0.45] of 20
    noisy = [stochastic.select(scores, np.random.default_rng(seed)) for seed in range(50)]
    assert any(d != list(range(len(d))) for d in noisy)  # noise on the scores changes which sentences win
    assert GapSentenceObjective().select(scores, np.random.default_rng(0)) == list(range(6))


def test_mlm_masks_other_sentences_tokens_with_mask_2_and_labels_them():
    objective = GapSentenceObjective(mlm_probability=0.5)
    example = objective.example(sentence_ids(), [0.0] * 10, np.random.default_rng(0), eos_id=EOS,
                                max_source_length=100, max_target_length=100)  # fmt: skip
    ids, mlm = example["input_ids"], example["mlm_labels"]
    assert len(ids) == len(mlm)
    masked = [i for i, token in enumerate(ids) if token == MASK_TOKEN_ID]
    assert masked and all(mlm[i] >= 100 for i in masked)
    assert all(label == -100 for i, label in enumerate(mlm) if i not in masked)


def test_intact_gap_sentences_stay_in_the_input_and_are_still_generated():
    scores = [0.1, 0.2, 0.9, 0.0, 0.3, 0.8, 0.1, 0.7, 0.2, 0.1]  # gaps: sentences 2, 5, 7
    objective = GapSentenceObjective(gap_ratio=0.3, intact_probability=0.5)
    kept_counts = set()
    for seed in range(40):
        example = objective.example(sentence_ids(), scores, np.random.default_rng(seed), eos_id=EOS,
                                    max_source_length=100, max_target_length=100)  # fmt: skip
        assert example["labels"] == [t for i in (2, 5, 7) for t in sentence_ids()[i]] + [EOS]
        masks = example["input_ids"].count(MASK_SENTENCE_ID)
        kept = [i for i in (2, 5, 7) if sentence_ids()[i][0] in example["input_ids"]]
        assert masks + len(kept) == 3  # each gap is either <mask_1> or itself, in place
        pieces = [[MASK_SENTENCE_ID] if i in {2, 5, 7} - set(kept) else s for i, s in enumerate(sentence_ids())]
        assert example["input_ids"] == [t for piece in pieces for t in piece] + [EOS]
        kept_counts.add(len(kept))
    assert kept_counts == {0, 1, 2, 3}  # drawn per sentence
    with pytest.raises(ValueError, match="intact_probability must lie in"):
        GapSentenceObjective(intact_probability=1.0)


def test_impossible_objectives_are_refused():
    with pytest.raises(ValueError, match="strategy='best' is unknown"):
        GapSentenceObjective(strategy="best")
    with pytest.raises(ValueError, match="must lie in"):
        GapSentenceObjective(gap_ratio=1.0)


PRETRAIN = ["experiment=aclsum_pretrain", "data.max_source_length=128", "data.max_target_length=32",
            "data.max_samples=6", "data.tokenizer.vocab_size=600", "data.max_windows=null"]  # fmt: skip


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


def objects_vocab(folder) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


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


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{3,}", text.lower()))


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


def test_a_resumed_epoch_draws_the_masks_of_the_uninterrupted_one():
    from lsgtrain.data.datamodule import ResumableSampler

    def sampler() -> ResumableSampler:
        sampler = ResumableSampler(20, batch_size=4, num_replicas=1, rank=0, seed=0)
        sampler.yield_epoch = True
        sampler.set_epoch(3)
        return sampler

    uninterrupted = list(sampler())
    resumed = sampler()
    resumed.resume_at(3, 2)  # a checkpoint after 2 batches of epoch 3
    assert list(resumed) == uninterrupted[8:] and {epoch for epoch, _ in uninterrupted} == {3}
