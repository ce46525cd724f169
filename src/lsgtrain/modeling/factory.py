"""Build the model a run asks for together with its tokenizer: one decision for both.

* `pretrained` (an LSG checkpoint) or `convert_from` (a Pegasus checkpoint, converted at load time): the checkpoint
  brings its own tokenizer.
* Neither: a randomly initialised model, sized by its tokenizer, which is trained on the data unless one is given.
* A tokenizer given explicitly (`data.tokenizer.pretrained`, or the one saved in a resumed run's folder) is checked
  against the model before any data is read: every id must have an embedding row, and the pad / eos /
  decoder-start ids must agree. A mismatch is an error naming both.

Knows nothing of Lightning or data: training a tokenizer and the head keys the data decides are callables.
"""

import contextlib
import difflib
import json
import logging
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from safetensors import SafetensorError
from transformers import PreTrainedTokenizerBase

from ..arguments import ConfigError
from .configuration_lsg_pegasus import LSGPegasusConfig
from .convert import (
    convert_checkpoint,
    expected_missing_weights,
    extend_model,
    init_global_embeddings,
    load_checked,
    trained_global_tokens,
)
from .loading import CheckpointError, load_tokenizer, read_config, tokenizer_overflow
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


class ModelAndTokenizer(NamedTuple):
    model: LSGPegasusPreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def build_model(
    *,
    task: str,
    max_source_length: int,
    lsg: dict[str, Any],
    max_target_length: int | None = None,
    pretrained: str | None = None,
    convert_from: str | None = None,
    init: dict[str, Any] | None = None,
    attention_dropout: float | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = "sdpa",
    allow_weight_mismatch: bool = False,
    allow_tokenizer_change: bool = False,
    tokenizer: str | os.PathLike | None = None,
    train_tokenizer: Callable[[], PreTrainedTokenizerBase] | None = None,
    data_head: Callable[[], dict[str, Any]] | None = None,
    **head: Any,
) -> ModelAndTokenizer:
    """Build an LSG-Pegasus model and choose its tokenizer.

    Args:
        task: `seq2seq` or `classification`.
        max_source_length: position tables are at least this long (a checkpoint's are extended as `lsgtrain
            convert` extends them, `convert.extend_model`, which also starts the global tokens that `lsg` adds).
        max_target_length: ... and at least this long, for the decoder's targets (a checkpoint pretrained on short
            inputs may be fine-tuned on longer summaries).
        lsg: LSG config keys (`block_size`, `sparsity_type`, ...); they override a checkpoint's.
        pretrained: an LSG checkpoint folder or hub name.
        convert_from: a plain Pegasus checkpoint folder or hub name, converted at load time.
        init: config keys of a randomly initialised model (used when neither checkpoint is given).
        attention_dropout: replaces the checkpoint's (or `init`'s) attention dropout in every attention layer; None
            keeps it. With 0 the encoder takes the fast attention kernels, which have no dropout.
        gradient_checkpointing: recompute layer activations in backward (less memory, slower steps).
        attn_implementation: the kernel of every attention, LSG encoder and decoder (`sdpa`, `eager`,
            `flex_attention`, `flash_attention_2`; docs/model.md "Attention kernels").
        allow_weight_mismatch: load a checkpoint even where weights are missing (left random) or unexpected
            (dropped); by default that is an error, since it means the checkpoint is not the model configured.
        allow_tokenizer_change: use an explicit `tokenizer` that is not the checkpoint's own (another vocabulary or
            special ids; warned): by default that is an error, since the embeddings belong to the own one's ids.
        tokenizer: an explicit tokenizer folder or hub name; checked against a checkpoint, sizes a random model.
        train_tokenizer: trains a tokenizer on the data; called only for a random model without `tokenizer`.
        data_head: head config keys the data decides (the classifier's labels); called after the tokenizer check,
            since it may read the data.
        **head: head config keys (`num_labels`, `problem_type`, `id2label`, `classifier_pooling`, ...).
    """
    if task not in TASK_CLASSES:
        raise ValueError(f"model.task={task!r} is unknown; choose one of {sorted(TASK_CLASSES)}")
    check_config_keys(init or {}, "model.init")
    check_config_keys(head, "model")
    if pretrained and convert_from:
        raise ValueError("set only one of model.pretrained (an LSG checkpoint) and model.convert_from (Pegasus)")
    checkpoint, key = (pretrained, "model.pretrained") if pretrained else (convert_from, "model.convert_from")
    if checkpoint:
        config = read_checkpoint_config(checkpoint, key)
        if tokenizer:
            chosen = load_tokenizer(tokenizer, "data.tokenizer.pretrained")
            check_own_tokenizer(chosen, tokenizer, checkpoint, key, allow_tokenizer_change)
        else:
            chosen = load_tokenizer(checkpoint, key)
        check_tokenizer_fits(chosen, config, tokenizer or checkpoint, f"{key}={checkpoint}")
    elif tokenizer:
        chosen = load_tokenizer(tokenizer, "data.tokenizer.pretrained")
    elif train_tokenizer is not None:
        chosen = train_tokenizer()
    else:
        raise CheckpointError("a randomly initialised model needs a tokenizer: set data.tokenizer.pretrained")
    head = {**head, **(data_head() if data_head else {})}
    if attention_dropout is not None:
        if init and "attention_dropout" in init and not (pretrained or convert_from):
            raise ValueError("set the attention dropout once: model.attention_dropout or model.init.attention_dropout")
        lsg = {**lsg, "attention_dropout": attention_dropout}  # a config key, applied wherever lsg keys are

    model_class = TASK_CLASSES[task]
    positions = max(max_source_length, max_target_length or 0)
    if pretrained:
        model = _load_pretrained(model_class, pretrained, {**lsg, **head}, attn_implementation, allow_weight_mismatch)
        # longer position tables, more global tokens: `lsgtrain convert`'s extension
        extend_model(model, chosen, max_sequence_length=positions, trained_global_tokens=trained_global_tokens(config))
    elif convert_from:
        architecture = "PegasusForConditionalGeneration" if task == "seq2seq" else "PegasusForSequenceClassification"
        with readable_weights(convert_from, "model.convert_from"):
            model, _ = convert_checkpoint(
                convert_from, None, max_sequence_length=positions, architecture=architecture,
                allow_weight_mismatch=allow_weight_mismatch, **lsg, **head,
            )  # fmt: skip
    else:
        model = _random_model(model_class, chosen, positions, lsg, init or {}, head, attn_implementation)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    logger.info(
        "%s: %.1fM parameters, LSG %s, tokenizer %s (%d ids)", type(model).__name__, model.num_parameters() / 1e6,
        {key: getattr(model.config, key) for key in sorted(lsg)}, chosen.name_or_path, len(chosen),
    )  # fmt: skip
    return ModelAndTokenizer(model, chosen)


# `num_labels` sizes `id2label` (a `PretrainedConfig` argument, not a field of its own)
CONFIG_KEYS = frozenset(
    {name for name in LSGPegasusConfig.__dataclass_fields__ if not name.startswith("_")}
    | set(LSGPegasusConfig.attribute_map)
    | set(LSGPegasusConfig().to_dict())
    | {"num_labels"}
)


def check_config_keys(keys: Mapping[str, Any], prefix: str) -> None:
    """Raise for a key LSGPegasusConfig does not know: the config would keep it as a stray attribute (and write it
    into the exported config.json) while the model is built with the default it was meant to replace."""
    for key in keys:
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), sorted(CONFIG_KEYS), n=1)
            hint = f"did you mean {prefix}.{close[0]}? " if close else ""
            raise ConfigError(
                f"{prefix}.{key} is not a setting of the model's config (LSGPegasusConfig); {hint}remove it or fix "
                "its name"
            )


def read_checkpoint_config(name: str, key: str) -> dict[str, Any]:
    """The raw `config.json` of a checkpoint folder or hub name (`loading.read_config`), refusing anything but
    (LSG-)Pegasus."""
    config = read_config(name, key)
    if config.get("model_type") != "pegasus":
        raise CheckpointError(
            f"{key}={name} is a '{config.get('model_type')}' checkpoint: lsgtrain fine-tunes Pegasus and LSG-Pegasus "
            "checkpoints only (model_type 'pegasus'), e.g. ccdv/lsg-pegasus-large-4096 or, with "
            "model.convert_from, google/pegasus-large"
        )
    return config


SPECIAL_IDS = ("pad_token_id", "eos_token_id", "unk_token_id", "mask_token_id")


def check_own_tokenizer(
    tokenizer: PreTrainedTokenizerBase, tokenizer_name: Any, checkpoint: str, key: str, allow: bool
) -> None:
    """Raise unless an explicit tokenizer is the checkpoint's own (same pieces at the same ids, same special ids),
    when the checkpoint has one: the id range alone lets an unrelated, smaller vocabulary through, and the model
    then reads every id as another piece. `allow` (model.allow_tokenizer_change) turns the error into a warning."""
    try:
        own = load_tokenizer(checkpoint, key, optional=True)
    except CheckpointError as error:  # a hub checkpoint offline: only the id range is checked
        logger.warning("%s=%s: its own tokenizer could not be loaded to compare (%s)", key, checkpoint, error)
        return
    if own is None:
        return  # no own tokenizer to compare with: check_tokenizer_fits still checks ids against the embeddings
    problems = []
    vocab, own_vocab = tokenizer.get_vocab(), own.get_vocab()
    if vocab != own_vocab:
        moved = sorted(piece for piece in set(vocab) | set(own_vocab) if vocab.get(piece) != own_vocab.get(piece))
        problems.append(f"{len(vocab)} ids against the model's {len(own_vocab)}, {len(moved)} pieces differ "
                        f"(e.g. {moved[0]!r}: id {vocab.get(moved[0])} against {own_vocab.get(moved[0])})")  # fmt: skip
    problems += [
        f"{name} {getattr(tokenizer, name)} against {getattr(own, name)}"
        for name in SPECIAL_IDS
        if getattr(tokenizer, name) != getattr(own, name)
    ]
    if not problems:
        return
    message = f"the tokenizer {tokenizer_name} is not the model's own ({checkpoint}): {'; '.join(problems)}"
    if allow:
        logger.warning("%s. model.allow_tokenizer_change=true: training with it anyway", message)
        return
    raise CheckpointError(
        f"{message}. The model's embeddings belong to its own tokenizer's ids; use it (data.tokenizer.pretrained="
        "null), or, for a deliberate change (a vocabulary extended for your domain), add "
        "model.allow_tokenizer_change=true"
    )


def check_tokenizer_fits(
    tokenizer: PreTrainedTokenizerBase, config: Mapping[str, Any], tokenizer_name: Any, model_name: str
) -> None:
    """Raise unless every id of `tokenizer` has an embedding row in the model of `config` and the pad, eos and
    decoder-start ids agree (Pegasus' decoder starts from the pad token)."""
    overflow = tokenizer_overflow(tokenizer, config["vocab_size"])
    problems = [overflow] if overflow else []
    expected = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    for config_key, tokenizer_id in expected.items():
        if config.get(config_key) is not None and config[config_key] != tokenizer_id:
            problems.append(f"the model's {config_key} is {config[config_key]}, the tokenizer's is {tokenizer_id}")
    if problems:
        raise CheckpointError(
            f"the tokenizer {tokenizer_name} does not fit the model {model_name}: {'; '.join(problems)}. Use the "
            "checkpoint's own tokenizer (data.tokenizer.pretrained=null) or the one the model was trained with"
        )


# Weight files of a Hugging Face checkpoint folder (whole or sharded).
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


@contextlib.contextmanager
def readable_weights(source: str, key: str) -> Iterator[None]:
    """Name the weight file and the fix when a checkpoint's weights cannot be read: a truncated or corrupt file
    (safetensors' and torch's errors name no file), or a pickle holding more than tensors. The error chain is cut:
    torch's message for the latter advises `weights_only=False`, which would run the file's code."""
    folder = Path(source).expanduser()
    files = sorted(path for pattern in WEIGHT_FILES for path in folder.glob(pattern)) if folder.is_dir() else []
    where = f"{files[0]}" if len(files) == 1 else f"the weight files of {source}"
    try:
        yield
    except pickle.UnpicklingError as error:
        refused = re.search(r"WeightsUnpickler error: ([^.]*)", str(error))
        raise CheckpointError(
            f"{key}={source}: {where} holds objects other than tensors ({refused.group(1) if refused else error}); "
            "lsgtrain reads weights so that no code in a file can run. Get the model's safetensors weights "
            "(model.safetensors) from where it came, or re-save the weights as plain tensors where you trust them"
        ) from None
    except (SafetensorError, EOFError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "PytorchStreamReader" not in str(error):
            raise
        raise CheckpointError(
            f"{key}={source}: {where} is not a readable weight file (truncated or corrupt: {error}). Download or "
            "export it again (an interrupted copy or download leaves such files), e.g. `hf download REPO "
            "--local-dir DIR`"
        ) from None


def _load_pretrained(model_class, name: str, overrides: dict, attn_implementation: str | None, allow_mismatch: bool):
    expected_missing = expected_missing_weights(
        new_global_embeddings=False, new_classifier_head=model_class is LSGPegasusForSequenceClassification
    )
    with readable_weights(name, "model.pretrained"):
        return load_checked(
            model_class, name, expected_missing, allow_mismatch, name=f"model.pretrained={name}",
            hint="a plain Pegasus checkpoint goes to model.convert_from, which initialises the LSG weights",
            attn_implementation=attn_implementation, **overrides,
        )  # fmt: skip


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


def trained_length(folder: str | os.PathLike, positions: int) -> int:
    """The length a model folder was trained at: its tokenizer's `model_max_length` (an lsgtrain export sets it to
    the run's `data.max_source_length`), at most `positions`, its position tables' `max_position_embeddings`."""
    tokenizer_config = Path(folder) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        length = json.loads(tokenizer_config.read_text()).get("model_max_length")
        if isinstance(length, int) and 0 < length <= positions:
            return length
    return positions
