"""A Pegasus-layout tokenizer trained locally, for runs that cannot download `google/pegasus-large`'s.

Unigram model (as Pegasus' SentencePiece) trained with `tokenizers`; ids 0-4 follow Pegasus: `<pad>` 0, `</s>` 1,
`<mask_1>` 2, `<mask_2>` 3 (the mask token), `<unk>` 4. Every encoded sequence ends with `</s>`. The trained
tokenizer is saved once per (corpus, vocab size) and reloaded on later runs. Which tokenizer a run uses (a
checkpoint's, an explicit one, or one trained here) is decided with the model, in `lsgtrain.modeling.factory`.
"""

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "</s>", "<mask_1>", "<mask_2>", "<unk>"]


def train_pegasus_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a Unigram tokenizer on `texts` with Pegasus' special-token ids."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.model = _in_reproducible_order(tokenizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask_2>",
        additional_special_tokens=["<mask_1>"],
    )


def _in_reproducible_order(tokenizer: Tokenizer) -> models.Unigram:
    """The trained Unigram model with its pieces in an order that depends on the texts only.

    Two trainings on the same texts (in one process too) give other ids otherwise: the trainer's scores differ in
    their last bits and it orders equal scores as they come, and it appends the characters it must keep (rare ones)
    in hash-set order with scores stepping down by 1e-4. Two DDP ranks, or a rerun, would then disagree on what an id
    means. The special tokens keep ids 0-4; the other pieces are ordered by their score rounded to 1e-9, then by the
    piece; the appended characters are ordered by character and take the same stepped scores.
    """
    trained = json.loads(tokenizer.to_str())["model"]
    special, pieces = trained["vocab"][: len(SPECIAL_TOKENS)], trained["vocab"][len(SPECIAL_TOKENS) :]
    if [piece for piece, _ in special] != SPECIAL_TOKENS:
        raise RuntimeError(f"the Unigram trainer put {special} first, not the special tokens {SPECIAL_TOKENS}")
    ordered = sorted(((piece, round(score, 9)) for piece, score in pieces), key=lambda item: (-item[1], item[0]))
    # the appended characters: the single characters at the end whose scores step down by 1e-4 (or not) to a floor
    start = len(ordered)
    while start > 0 and len(ordered[start - 1][0]) == 1:
        if start < len(ordered) and not _is_step(ordered[start - 1][1] - ordered[start][1]):
            break
        start -= 1
    scores = [score for _, score in ordered[start:]]  # the same steps whichever character got which
    ordered[start:] = list(zip(sorted(piece for piece, _ in ordered[start:]), scores, strict=True))
    return models.Unigram([(piece, score) for piece, score in special] + ordered, unk_id=trained["unk_id"])


def _is_step(gap: float) -> bool:
    return abs(gap) < 1e-7 or abs(gap - 1e-4) < 1e-7


def cached_pegasus_tokenizer(
    texts: list[str], vocab_size: int, cache_dir: str | os.PathLike
) -> PreTrainedTokenizerFast:
    """Load the tokenizer trained on exactly `texts` at `vocab_size` from `cache_dir`, training it if absent."""
    digest = hashlib.sha256(f"{vocab_size}\0".encode() + "\0".join(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"pegasus-unigram-{vocab_size}-{digest}"
    if not (path / "tokenizer.json").is_file():
        logger.info("training a %d-piece tokenizer on %d texts -> %s", vocab_size, len(texts), path)
        save_tokenizer_once(train_pegasus_tokenizer(texts, vocab_size), path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if len(tokenizer) < vocab_size:  # Unigram keeps only the pieces the texts support
        logger.warning(
            "the tokenizer trained on %d texts has %s pieces, not the %s asked (data.tokenizer.vocab_size=%d): the "
            "texts hold too few distinct pieces; the model is sized by the %s. Train on more data "
            "(data.max_train_samples, data.max_samples), or set data.tokenizer.vocab_size=%d to ask for what they give",
            len(texts), f"{len(tokenizer):,}", f"{vocab_size:,}", vocab_size, f"{len(tokenizer):,}", len(tokenizer),
        )  # fmt: skip
    return tokenizer


def save_tokenizer_once(tokenizer, path: str | os.PathLike) -> None:
    """`save_pretrained` into a staging folder renamed to `path`: the folder is complete or absent, and when
    another process (a DDP rank, a concurrent run) got there first, its copy is kept."""
    path = Path(path)
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(path)
    except OSError:  # another process got there first: keep its copy, drop ours
        shutil.rmtree(staging, ignore_errors=True)
