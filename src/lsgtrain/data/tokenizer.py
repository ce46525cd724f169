"""A Pegasus-layout tokenizer trained locally, for runs that cannot download `google/pegasus-large`'s.

Unigram model (as Pegasus' SentencePiece) trained with `tokenizers`; ids 0-4 follow Pegasus: `<pad>` 0, `</s>` 1,
`<mask_1>` 2, `<mask_2>` 3 (the mask token), `<unk>` 4. Every encoded sequence ends with `</s>`. The trained
tokenizer is saved once per (corpus, vocab size) and reloaded on later runs.
"""

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
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


def cached_pegasus_tokenizer(
    texts: list[str], vocab_size: int, cache_dir: str | os.PathLike
) -> PreTrainedTokenizerFast:
    """Load the tokenizer trained on exactly `texts` at `vocab_size` from `cache_dir`, training it if absent."""
    digest = hashlib.sha256(f"{vocab_size}\0".encode() + "\0".join(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"pegasus-unigram-{vocab_size}-{digest}"
    if (path / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(path)
    logger.info("training a %d-piece tokenizer on %d texts -> %s", vocab_size, len(texts), path)
    tokenizer = train_pegasus_tokenizer(texts, vocab_size)
    staging = path.with_name(path.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(path)
    except OSError:  # another process got there first: keep its copy, drop ours
        shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(path)


def load_tokenizer(
    *,
    pretrained: str | None = None,
    vocab_size: int = 8000,
    training_texts: Callable[[], list[str]],
    cache_dir: str | os.PathLike,
):
    """A pretrained tokenizer (folder or hub name), or else one trained on `training_texts()` and cached."""
    if pretrained is None:
        return cached_pegasus_tokenizer(training_texts(), vocab_size, cache_dir)
    try:
        return AutoTokenizer.from_pretrained(pretrained)
    except OSError as error:
        raise OSError(
            f"could not load the tokenizer '{pretrained}' (a hub name needs internet; HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it where there is internet and set "
            "data.tokenizer.pretrained to the local folder, or null to train one on the training split. "
            f"Cause: {error}"
        ) from error
