"""The one table of what a run's config keys mean to the run layer: whether a resume may change a key, whether an
evaluation takes it from the run it scores, and how the model card shows it. The resume checks
(`lsgtrain.checkpointing`), `lsgtrain eval` (`lsgtrain.evaluate`) and the card (`lsgtrain.model_card`) all read it;
adding a key is one entry here.

A key is a group (`model`) or a dotted key (`trainer.precision`); the longest entry that is the key or a key above it
decides, so `data.num_workers` may change on resume although `data` may not.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Resume(Enum):
    FIXED = "fixed"  # shapes the training trajectory: a resume whose config differs from its checkpoint's is refused
    FREE = "free"  # may change on resume (where and how long it runs, how it is evaluated) and is applied


class Evaluation(Enum):
    RUN = "run"  # an evaluation takes the run's value unless the user sets it: what was trained, as it was trained
    OWN = "own"  # the evaluation's own (its folder, its length of run, its loggers; an evaluation exports nothing)


class Shown(Enum):
    """How the card's reproduce command shows a value: a local path becomes the hub id it is a copy of (a hub-cache
    folder `models--org--name`, `datasets--org--name`) or `.../<its last part>`; other values as they are."""

    MODEL = "models"  # a local path is looked up as a model (or tokenizer) copy
    DATASET = "datasets"  # ... as a dataset copy


class Folder(Enum):
    """What of a model folder (`lsgtrain eval model.pretrained=DIR`) decides a key, over the run's value: the folder
    is evaluated as it was trained and saved."""

    CONFIG = "config"  # its config.json (the LSG settings it was trained with)
    LENGTH = "length"  # its trained length (the tokenizer's model_max_length, at most its position tables)
    GENERATION = "generation"  # its generation_config.json: the config's decoding settings are dropped


NOT_IN_OLD_RUNS = object()  # `Key.before`: the default keeps the behaviour of runs written without the key


@dataclass(frozen=True)
class Key:
    """One entry of `KEYS`.

    Args:
        name: a group or dotted key ("" is the root: every key without a closer entry).
        resume: whether a resume may change it.
        evaluation: whether an evaluation takes it from the run.
        shown: how the card shows its values.
        folder: what of an evaluated model folder decides it (None: nothing).
        before: for keys added since runs were first written whose configs now set a value other than the
            behaviour of a run without the key: the value such a run trained with, which a resume compares against.
    """

    name: str
    resume: Resume
    evaluation: Evaluation
    shown: Shown = Shown.MODEL
    folder: Folder | None = None
    before: Any = NOT_IN_OLD_RUNS


FIXED, FREE, RUN, OWN = Resume.FIXED, Resume.FREE, Evaluation.RUN, Evaluation.OWN
KEYS = (
    Key("", FREE, OWN),  # paths, loggers, hydra, task/run names, ckpt_path, train/test, how long to train
    Key("model", FIXED, RUN),
    Key("model.attention_dropout", FIXED, RUN, before=None),  # null: the checkpoint's own attention dropout
    Key("model.gradient_checkpointing", FREE, RUN),
    Key("model.attn_implementation", FREE, RUN),
    Key("model.allow_tokenizer_change", FREE, RUN),
    Key("model.lsg", FIXED, RUN, folder=Folder.CONFIG),
    Key("data", FIXED, RUN, Shown.DATASET),
    Key("data.tokenizer", FIXED, RUN, Shown.MODEL),  # a tokenizer path is a model folder (or its hub id)
    Key("data.max_source_length", FIXED, RUN, Shown.DATASET, Folder.LENGTH),
    Key("data.num_workers", FREE, RUN),
    Key("data.eval_batch_size", FREE, RUN),
    Key("data.cache_dir", FREE, RUN),
    Key("data.num_proc", FREE, RUN),
    Key("data.overwrite_cache", FREE, RUN),
    Key("data.max_predict_samples", FREE, RUN),
    Key("data.allow_split_overlap", FREE, RUN),
    Key("data.allow_data_change", FREE, RUN),
    Key("module", FIXED, RUN),
    Key("module.generation", FREE, RUN, folder=Folder.GENERATION),
    Key("module.compile", FREE, RUN),
    Key("callbacks", FREE, RUN),  # ROUGE settings, predictions: the run's evaluation setup
    Key("callbacks.hf_export", FREE, OWN),  # an evaluation exports nothing
    Key("callbacks.rouge.val_generation", FREE, RUN, folder=Folder.GENERATION),
    Key("seed", FIXED, RUN),
    Key("effective_batch_size", FIXED, OWN),
    Key("trainer.accumulate_grad_batches", FIXED, OWN),
    Key("trainer.gradient_clip_val", FIXED, OWN),
    Key("trainer.gradient_clip_algorithm", FIXED, OWN),
    # the hardware and numerics the run validated with: a GPU run's evaluation must not score on CPU in fp32
    Key("trainer.precision", FIXED, RUN),
    Key("trainer.accelerator", FREE, RUN),
    Key("trainer.devices", FREE, RUN),
    Key("trainer.strategy", FREE, RUN),
)  # fmt: skip


def lookup(name: str) -> Key:
    """The entry that decides for the dotted key `name`: its own, else the closest one above it."""
    by_name = {key.name: key for key in KEYS}
    parts = name.split(".")
    above = (".".join(parts[:end]) for end in range(len(parts), -1, -1))  # ends with "", the root entry
    return next(by_name[prefix] for prefix in above if prefix in by_name)


def resume_fixed(name: str) -> bool:
    """Whether a resume must keep `name` as its checkpoint's run had it."""
    return lookup(name).resume is FIXED


def values_before_the_keys() -> dict[str, Any]:
    """`{key: value}` for the keys whose absence in an old run's config means a value other than today's default."""
    return {key.name: key.before for key in KEYS if key.before is not NOT_IN_OLD_RUNS}


def taken_from_the_run() -> list[str]:
    """The outermost keys an evaluation takes from its run (entries inside them are handled with their group)."""
    taken = [key.name for key in KEYS if key.name and key.evaluation is RUN]
    return [name for name in taken if lookup(name.rpartition(".")[0]).evaluation is not RUN]


def evaluation_own_inside(group: str) -> list[str]:
    """The keys inside an evaluation-from-the-run `group` that stay the evaluation's own (`callbacks.hf_export`)."""
    return [key.name for key in KEYS if key.name.startswith(group + ".") and key.evaluation is OWN]


def decided_by_the_folder(part: Folder) -> list[str]:
    """The keys that `part` of an evaluated model folder decides."""
    return [key.name for key in KEYS if key.folder is part]
