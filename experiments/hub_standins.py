"""Offline stand-ins for the hub checkpoints and datasets of the experiments, laid out file for file like the real
repositories (random weights, synthetic text), so that the code paths a user with downloaded copies takes are the
ones we run.

    python experiments/hub_standins.py OUT                 # tiny (seconds): what CI runs the experiments on
    python experiments/hub_standins.py OUT --size full     # 568M parameters, 96,103 ids: 2.5 min, 4 GB RAM, 4.3 GB

Under OUT, one folder per repository, named as on the hub:

* `google/pegasus-large/`: `config.json` (the real keys and values; dimensions shrunk at tiny size),
  `pytorch_model.bin` (a pickled state dict without the sinusoidal position tables, as the original upload),
  `spiece.model` (a SentencePiece unigram model trained here: pad 0, eos 1, unk 2), `tokenizer_config.json`,
  `special_tokens_map.json`. Pegasus' tokenizer adds `<mask_1>` 2, `<mask_2>` 3, `<unk_2>`..`<unk_102>` and shifts
  the pieces by 103: 96,000 pieces give the real 96,103 ids.
* `ccdv/lsg-pegasus-large-4096/`: `config.json` (`LSGPegasusForConditionalGeneration`, `auto_map`,
  `base_model_prefix: lsg`, block 128, sparse block 128, factor 2, norm, 1 global token, 4,096 positions),
  `pytorch_model.bin` (with the 512-row `global_embeddings`), `spiece.model`, `tokenizer.json`,
  `tokenizer_config.json`, `special_tokens_map.json`. The real repository's `modeling_lsg_pegasus.py` (remote code
  for transformers 4) is not reproduced: lsgtrain never executes it.
* `ccdv/arxiv-summarization/`, `ccdv/pubmed-summarization/`: `README.md` whose YAML `configs:` block maps `section`
  (default) and `document` to `{section,document}/{train-000NN-of-000MM,validation-00000-of-00001,
  test-00000-of-00001}.parquet`; columns `article`, `abstract`; lowercased, one sentence per line.
* `ccdv/arxiv-classification/`: `README.md` + `data/*.parquet`; `text`, `label` (ClassLabel, 11 subjects).
* `coastalcph/lex_glue/`: `README.md` with an `eurlex` config + `eurlex/*.parquet`; `text`, `labels` (a sequence of
  ClassLabel over 100 EuroVoc concepts).

Point the experiments at them with the documented keys only (docs/data.md "Running from local copies"), e.g.
`python train.py experiment=arxiv_sum model.pretrained=OUT/ccdv/lsg-pegasus-large-4096
data.dataset_name=OUT/ccdv/arxiv-summarization`.
"""

import argparse
import io
import json
import random
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value

PEGASUS = "google/pegasus-large"
LSG_PEGASUS = "ccdv/lsg-pegasus-large-4096"
ARXIV_SUMMARIZATION = "ccdv/arxiv-summarization"
PUBMED_SUMMARIZATION = "ccdv/pubmed-summarization"
ARXIV_CLASSIFICATION = "ccdv/arxiv-classification"
LEX_GLUE = "coastalcph/lex_glue"

PEGASUS_OFFSET = 103  # pad, eos, <mask_1>, <mask_2>, <unk_2>..<unk_102> come before the SentencePiece pieces
ARXIV_SUBJECTS = ["math.AC", "cs.CV", "cs.AI", "cs.SY", "math.GR", "cs.CE", "cs.PL", "cs.IT", "cs.DS", "cs.NE",
                  "math.ST"]  # fmt: skip
EUROVOC_CONCEPTS = [str(100140 + i) for i in range(100)]


@dataclass(frozen=True)
class Size:
    """Model dimensions, SentencePiece pieces and data sizes of one stand-in size."""

    d_model: int
    layers: int
    heads: int
    ffn: int
    pieces: int
    distinct_words: int
    corpus_sentences: int  # what the SentencePiece model is trained on
    rows: tuple[int, int, int]  # train, validation, test
    article_words: tuple[int, int]  # shortest, longest
    train_shards: int


SIZES = {
    "tiny": Size(d_model=32, layers=1, heads=4, ffn=64, pieces=400, distinct_words=600, corpus_sentences=2_000,
                 rows=(8, 4, 4), article_words=(250, 700), train_shards=2),
    "full": Size(d_model=1024, layers=16, heads=16, ffn=4096, pieces=96_000, distinct_words=250_000,
                 corpus_sentences=400_000, rows=(64, 8, 8), article_words=(3_000, 14_000), train_shards=15),
}  # fmt: skip


# -- text --------------------------------------------------------------------------------------------------------
class SyntheticText:
    """Lowercased text over a fixed pool of made-up words, with the real data's `@xmath` / `@xcite` placeholders
    (seeded: the same on every run). Random letters give SentencePiece enough distinct substrings for 96,000 pieces."""

    def __init__(self, distinct_words: int, seed: int = 0):
        self.random = random.Random(seed)
        words: set[str] = set()
        while len(words) < distinct_words:
            words.add("".join(self.random.choices(string.ascii_lowercase, k=self.random.randint(2, 9))))
        self.words = sorted(words)

    def sentence(self) -> str:
        words = self.random.choices(self.words, k=self.random.randint(8, 24))
        if self.random.random() < 0.3:  # the real data keeps math and citations as placeholders
            words.insert(self.random.randrange(len(words)), f"@xmath{self.random.randint(0, 40)}")
        if self.random.random() < 0.2:
            words.append("@xcite")
        return " ".join(words) + " ."

    def text(self, words: int) -> str:
        """About `words` words, one sentence per line."""
        sentences, count = [], 0
        while count < words:
            sentences.append(self.sentence())
            count += sentences[-1].count(" ") + 1
        return "\n".join(sentences)


# -- tokenizer ---------------------------------------------------------------------------------------------------
def train_spiece(texts: list[str], pieces: int) -> bytes:
    """A SentencePiece unigram model with Pegasus' piece ids (pad 0, eos 1, unk 2, no bos), trained on `texts`."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=pieces, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        character_coverage=1.0, num_threads=2, input_sentence_size=2_000_000, shuffle_input_sentence=True,
        minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


def special_tokens_map() -> dict:
    return {
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask_2>",
        "additional_special_tokens": ["<mask_1>"] + [f"<unk_{i}>" for i in range(2, PEGASUS_OFFSET)],
    }


def tokenizer_config(name: str, max_length: int, added_tokens: bool) -> dict:
    """`tokenizer_config.json` as transformers 4 wrote it for Pegasus checkpoints; 4.36 (`added_tokens`) also lists
    the reserved tokens by id."""
    config = {
        **special_tokens_map(),
        "mask_token_sent": "<mask_1>",
        "model_max_length": max_length,
        "name_or_path": name,
        "offset": PEGASUS_OFFSET,
        "sp_model_kwargs": {},
        "special_tokens_map_file": None,
        "tokenizer_class": "PegasusTokenizer",
    }
    if added_tokens:
        reserved = ["<pad>", "</s>", "<mask_1>", "<mask_2>"] + [f"<unk_{i}>" for i in range(2, PEGASUS_OFFSET)]
        entries = {**dict(enumerate(reserved)), PEGASUS_OFFSET + 2: "<unk>"}
        config["added_tokens_decoder"] = {
            str(i): {"content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
            for i, token in entries.items()
        }  # fmt: skip
        config["clean_up_tokenization_spaces"] = True
    return config


def fast_tokenizer_json(spiece: bytes) -> str:
    """The `tokenizer.json` of a Pegasus tokenizer over `spiece` (pad 0, eos 1, `<mask_1>` 2, `<mask_2>` 3, ...),
    converted by transformers from `spiece.model` with nothing else in the folder (the one layout it reads right)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "spiece.model").write_bytes(spiece)
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PegasusTokenizer"}))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.convert_tokens_to_ids(["<mask_1>", "<mask_2>", "<unk>"]) == [2, 3, PEGASUS_OFFSET + 2]
    return tokenizer.backend_tokenizer.to_str()


def write_tokenizer(folder: Path, spiece: bytes, name: str, max_length: int, with_json: bool) -> None:
    (folder / "spiece.model").write_bytes(spiece)
    config = tokenizer_config(name, max_length, added_tokens=with_json)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens_map()))
    if with_json:
        (folder / "tokenizer.json").write_text(fast_tokenizer_json(spiece))


# -- checkpoints -------------------------------------------------------------------------------------------------
def pegasus_config(size: Size, vocab_size: int) -> dict:
    """google/pegasus-large's `config.json` (dimensions from `size`)."""
    return {
        "_name_or_path": PEGASUS, "activation_dropout": 0.1, "activation_function": "relu", "add_bias_logits": False,
        "add_final_layer_norm": True, "architectures": ["PegasusForConditionalGeneration"], "attention_dropout": 0.1,
        "bos_token_id": 0, "classif_dropout": 0.0, "classifier_dropout": 0.0, "d_model": size.d_model,
        "decoder_attention_heads": size.heads, "decoder_ffn_dim": size.ffn, "decoder_layerdrop": 0.0,
        "decoder_layers": size.layers, "decoder_start_token_id": 0, "dropout": 0.1,
        "encoder_attention_heads": size.heads, "encoder_ffn_dim": size.ffn, "encoder_layerdrop": 0.0,
        "encoder_layers": size.layers, "eos_token_id": 1, "extra_pos_embeddings": 1,
        "force_bos_token_to_be_generated": False, "forced_eos_token_id": 1, "gradient_checkpointing": False,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}, "init_std": 0.02, "is_encoder_decoder": True,
        "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}, "length_penalty": 0.8, "max_length": 256,
        "max_position_embeddings": 1024, "model_type": "pegasus", "normalize_before": True,
        "normalize_embedding": False, "num_beams": 8, "num_hidden_layers": size.layers, "pad_token_id": 0,
        "scale_embedding": True, "static_position_embeddings": True,
        "task_specific_params": {
            "summarization_arxiv": {"length_penalty": 0.8, "max_length": 256, "max_position_embeddings": 1024},
            "summarization_pubmed": {"length_penalty": 0.8, "max_length": 256, "max_position_embeddings": 1024},
        },
        "transformers_version": "4.11.0.dev0", "use_cache": True, "vocab_size": vocab_size,
    }  # fmt: skip


def lsg_pegasus_config(size: Size, vocab_size: int) -> dict:
    """ccdv/lsg-pegasus-large-4096's `config.json`: Pegasus-large's keys plus the LSG ones and the remote code."""
    config = pegasus_config(size, vocab_size)
    config.update({
        "_name_or_path": LSG_PEGASUS, "architectures": ["LSGPegasusForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "modeling_lsg_pegasus.LSGPegasusConfig",
            "AutoModel": "modeling_lsg_pegasus.LSGPegasusModel",
            "AutoModelForCausalLM": "modeling_lsg_pegasus.LSGPegasusForCausalLM",
            "AutoModelForSeq2SeqLM": "modeling_lsg_pegasus.LSGPegasusForConditionalGeneration",
        },
        "adaptive": True, "base_model_prefix": "lsg", "block_size": 128, "lsh_num_pre_rounds": 1,
        "mask_first_token": False, "max_position_embeddings": 4096, "num_global_tokens": 1,
        "pass_global_tokens_to_decoder": True, "pool_with_global": True, "sparse_block_size": 128,
        "sparsity_factor": 2, "sparsity_type": "norm", "transformers_version": "4.36.1",
    })  # fmt: skip
    return config


def write_weights(folder: Path, model: torch.nn.Module) -> None:
    """`pytorch_model.bin`: the pickled state dict, without the sinusoidal tables (computed at load time)."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("embed_positions.weight")}
    torch.save(state, folder / "pytorch_model.bin")


def build_checkpoint(folder: Path, config: dict, model_class, spiece: bytes, repo: str, max_length: int,
                     with_json: bool, seed: int) -> None:  # fmt: skip
    """A checkpoint folder like hub `repo`: `config.json`, random weights of `model_class` built from it, and the
    tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    write_weights(folder, model_class(model_class.config_class.from_pretrained(folder)))
    write_tokenizer(folder, spiece, repo, max_length=max_length, with_json=with_json)


def build_pegasus(folder: Path, size: Size, spiece: bytes, seed: int) -> None:
    from transformers import PegasusForConditionalGeneration

    config = pegasus_config(size, size.pieces + PEGASUS_OFFSET)
    build_checkpoint(folder, config, PegasusForConditionalGeneration, spiece, PEGASUS, 1024, False, seed)


def build_lsg_pegasus(folder: Path, size: Size, spiece: bytes, seed: int) -> None:
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    config = lsg_pegasus_config(size, size.pieces + PEGASUS_OFFSET)
    build_checkpoint(folder, config, LSGPegasusForConditionalGeneration, spiece, LSG_PEGASUS, 4096, True, seed)


# -- datasets ----------------------------------------------------------------------------------------------------
SPLITS = ("train", "validation", "test")


def shard_names(split: str, shards: int) -> list[str]:
    return [f"{split}-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]


def readme(configs: dict[str, str], default: str) -> str:
    """A dataset card whose YAML `configs:` block maps each config's splits to its parquet shards."""
    lines = ["---", "configs:"]
    for name, folder in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in SPLITS:
            lines += [f"  - split: {split}", f"    path: {folder}/{split}-*"]
        if name == default:
            lines.append("  default: true")
    return "\n".join([*lines, "---", "", "Offline stand-in written by lsgtrain's experiments/hub_standins.py.", ""])


def write_splits(folder: Path, rows: dict[str, list[dict]], features: Features, train_shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        dataset = Dataset.from_list(split_rows, features=features)
        names = shard_names(split, train_shards if split == "train" else 1)
        for index, name in enumerate(names):
            dataset.shard(len(names), index, contiguous=True).to_parquet(str(folder / name))


def build_summarization(root: Path, size: Size, text: SyntheticText) -> None:
    rows = {}
    for split, count in zip(SPLITS, size.rows, strict=True):
        rows[split] = [
            {"article": text.text(text.random.randint(*size.article_words)), "abstract": text.text(60)}
            for _ in range(count)
        ]
    features = Features({"article": Value("string"), "abstract": Value("string")})
    write_splits(root / "section", rows, features, size.train_shards)
    documents = {s: [{**r, "article": r["article"].replace("\n", " ")} for r in split] for s, split in rows.items()}
    write_splits(root / "document", documents, features, size.train_shards)
    (root / "README.md").write_text(readme({"section": "section", "document": "document"}, default="section"))


def build_arxiv_classification(root: Path, size: Size, text: SyntheticText) -> None:
    rows = {
        split: [{"text": text.text(text.random.randint(*size.article_words)), "label": i % len(ARXIV_SUBJECTS)}
                for i in range(count)]
        for split, count in zip(SPLITS, size.rows, strict=True)
    }  # fmt: skip
    features = Features({"text": Value("string"), "label": ClassLabel(names=ARXIV_SUBJECTS)})
    write_splits(root / "data", rows, features, train_shards=1)
    (root / "README.md").write_text(readme({"default": "data"}, default="default"))


def build_eurlex(root: Path, size: Size, text: SyntheticText) -> None:
    rows = {
        split: [{"text": text.text(text.random.randint(*size.article_words)),
                 "labels": sorted(text.random.sample(range(len(EUROVOC_CONCEPTS)), k=text.random.randint(1, 4)))}
                for _ in range(count)]
        for split, count in zip(SPLITS, size.rows, strict=True)
    }  # fmt: skip
    features = Features({"text": Value("string"), "labels": Sequence(ClassLabel(names=EUROVOC_CONCEPTS))})
    write_splits(root / "eurlex", rows, features, train_shards=1)
    (root / "README.md").write_text(readme({"eurlex": "eurlex"}, default="eurlex"))


def build_standins(out: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, Path]:
    """Write every stand-in under `out` (hub name -> folder); returns the folders."""
    out, spec = Path(out), SIZES[size]
    text = SyntheticText(spec.distinct_words, seed)
    folders = {name: out / name for name in (PEGASUS, LSG_PEGASUS, ARXIV_SUMMARIZATION, PUBMED_SUMMARIZATION,
                                             ARXIV_CLASSIFICATION, LEX_GLUE)}  # fmt: skip
    corpus = [text.sentence() for _ in range(spec.corpus_sentences)]
    spiece = train_spiece(corpus, spec.pieces)
    build_pegasus(folders[PEGASUS], spec, spiece, seed)
    build_lsg_pegasus(folders[LSG_PEGASUS], spec, spiece, seed + 1)
    build_summarization(folders[ARXIV_SUMMARIZATION], spec, text)
    build_summarization(folders[PUBMED_SUMMARIZATION], spec, text)
    build_arxiv_classification(folders[ARXIV_CLASSIFICATION], spec, text)
    build_eurlex(folders[LEX_GLUE], spec, text)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write the stand-ins into (one sub-folder per hub repository)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, folder in build_standins(args.out, args.size, args.seed).items():
        print(f"{name:<28} -> {folder}")


if __name__ == "__main__":
    main()
