"""Build the model a run asks for: an LSG checkpoint, a Pegasus checkpoint converted on the fly, or a random one.

Knows nothing of Lightning or data: the tokenizer is passed in (its vocabulary and special ids size a random model).
"""

import logging
import os
from typing import Any

from .configuration_lsg_pegasus import LSGPegasusConfig
from .convert import ConversionError, convert_checkpoint, init_global_embeddings
from .modeling_lsg_pegasus import (
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
    LSGPegasusPreTrainedModel,
)

logger = logging.getLogger(__name__)

TASK_CLASSES = {
    "seq2seq": LSGPegasusForConditionalGeneration,
    "classification": LSGPegasusForSequenceClassification,
}


def build_model(
    *,
    task: str,
    tokenizer,
    max_source_length: int,
    lsg: dict[str, Any],
    pretrained: str | None = None,
    convert_from: str | None = None,
    init: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = "sdpa",
    **head: Any,
) -> LSGPegasusPreTrainedModel:
    """Build an LSG-Pegasus model.

    Args:
        task: `seq2seq` or `classification`.
        tokenizer: sizes a random model (vocabulary, pad/eos/mask ids).
        max_source_length: position tables are at least this long (extended if a checkpoint is shorter).
        lsg: LSG config keys (`block_size`, `sparsity_type`, ...); they override a checkpoint's.
        pretrained: an LSG checkpoint folder or hub name.
        convert_from: a plain Pegasus checkpoint folder or hub name, converted at load time.
        init: config keys of a randomly initialised model (used when neither checkpoint is given).
        gradient_checkpointing: recompute layer activations in backward (less memory, slower steps).
        attn_implementation: the decoder's attention backend (`sdpa`, `eager`, `flash_attention_2`).
        **head: head config keys (`num_labels`, `problem_type`, `id2label`, `classifier_pooling`, ...).
    """
    if task not in TASK_CLASSES:
        raise ValueError(f"model.task={task!r} is unknown; choose one of {sorted(TASK_CLASSES)}")
    if pretrained and convert_from:
        raise ValueError("set only one of model.pretrained (an LSG checkpoint) and model.convert_from (Pegasus)")
    model_class = TASK_CLASSES[task]
    if pretrained:
        model = _load_pretrained(model_class, pretrained, {**lsg, **head}, attn_implementation)
        if model.config.max_position_embeddings < max_source_length:
            logger.info("extending position tables to %d tokens", max_source_length)
            model.resize_position_embeddings(max_source_length)
    elif convert_from:
        architecture = "PegasusForConditionalGeneration" if task == "seq2seq" else "PegasusForSequenceClassification"
        model, _ = convert_checkpoint(
            convert_from, None, max_sequence_length=max_source_length, architecture=architecture, **lsg, **head
        )
    else:
        model = _random_model(model_class, tokenizer, max_source_length, lsg, init or {}, head, attn_implementation)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    logger.info(
        "%s: %.1fM parameters, LSG %s", type(model).__name__, model.num_parameters() / 1e6,
        {key: getattr(model.config, key) for key in sorted(lsg)},
    )  # fmt: skip
    return model


def _load_pretrained(model_class, name: str, overrides: dict, attn_implementation: str | None):
    try:
        return model_class.from_pretrained(name, attn_implementation=attn_implementation, **overrides)
    except OSError as error:
        if os.path.isdir(name):
            raise
        raise ConversionError(
            f"could not fetch model '{name}' from the Hugging Face hub (offline? HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it where there is internet "
            f"(`hf download {name} --local-dir DIR`) and set model.pretrained=DIR "
            f"(and data.tokenizer.pretrained=DIR). Cause: {error}"
        ) from error


def _random_model(model_class, tokenizer, max_length, lsg, init, head, attn_implementation):
    config = LSGPegasusConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=max_length,
        **init,
        **lsg,
        **head,
    )
    config._attn_implementation = attn_implementation
    model = model_class(config)
    # Start the globals as a converted checkpoint would: spread positions + the mask token's embedding.
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    init_global_embeddings(model, bos_id=config.decoder_start_token_id, mask_id=mask_id, stride=64)
    return model
