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
        shown: how the card shows its values (None: as the closest entry above says).
        folder: what of an evaluated model folder decides it (None: nothing).
        before: for keys added since runs were first written whose configs now set a value other than the
            behaviour of a run without the key: the value such a run trained with, which a resume compares against.
    """

    name: str
    resume: Resume
    evaluation: Evaluation
    shown: Shown | None = None
    folder: Folder | None = None
    before: Any = NOT_IN_OLD_RUNS


FIXED, FREE, RUN, OWN = Resume.FIXED, Resume.FREE, Evaluation.RUN, Evaluation.OWN


def _each(resume: Resume, evaluation: Evaluation, *names: str) -> tuple[Key, ...]:
    return tuple(Key(name, resume, evaluation) for name in names)


KEYS = (
    Key("", FREE, OWN, Shown.MODEL),  # paths, loggers, hydra, task/run names, ckpt_path, train/test, how long to train
    # what was trained: a resume keeps it, an evaluation takes it from the run
    *_each(FIXED, RUN, "model", "module", "seed"),
    Key("data", FIXED, RUN, Shown.DATASET),
    Key("data.tokenizer", FIXED, RUN, Shown.MODEL),  # a tokenizer path is a model folder (or its hub id)
    Key("data.max_source_length", FIXED, RUN, folder=Folder.LENGTH),
    Key("model.lsg", FIXED, RUN, folder=Folder.CONFIG),
    Key("model.attention_dropout", FIXED, RUN, before=None),  # null: the checkpoint's own attention dropout
    # the hardware and numerics the run validated with: a GPU run's evaluation must not score on CPU in fp32
    Key("trainer.precision", FIXED, RUN),
    *_each(FREE, RUN, "trainer.accelerator", "trainer.devices", "trainer.strategy"),
    # how the run computes and evaluates, not what it learns: a resume may change them
    *_each(FREE, RUN, "model.gradient_checkpointing", "model.attn_implementation", "model.allow_tokenizer_change",
           "module.compile", "data.num_workers", "data.eval_batch_size", "data.cache_dir", "data.num_proc",
           "data.overwrite_cache", "data.max_predict_samples", "data.allow_split_overlap", "data.allow_data_change",
           "callbacks"),  # callbacks: ROUGE settings, predictions (the run's evaluation setup)
    Key("module.generation", FREE, RUN, folder=Folder.GENERATION),
    Key("callbacks.rouge.val_generation", FREE, RUN, folder=Folder.GENERATION),
    Key("callbacks.hf_export", FREE, OWN),  # an evaluation exports nothing
    # the optimisation's own: a resume keeps it; an evaluation does not optimise
    *_each(FIXED, OWN, "effective_batch_size", "allow_rounded_effective_batch", "trainer.accumulate_grad_batches",
           "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm"),
)  # fmt: skip


def lookup(name: str) -> Key:
    """What the table says of the dotted key `name`: its own entry, else the closest one above it (`shown` from
    the closest entry that gives one)."""
    by_name = {key.name: key for key in KEYS}
    parts = name.split(".")
    above = (".".join(parts[:end]) for end in range(len(parts), -1, -1))  # ends with "", the root entry
    entries = [by_name[prefix] for prefix in above if prefix in by_name]
    shown = next(entry.shown for entry in entries if entry.shown is not None)
    return Key(name, entries[0].resume, entries[0].evaluation, shown)


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
