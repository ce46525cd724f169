"""LightningDataModules for long-document summarization and classification.

Text is tokenised once with `datasets.map` into a cache keyed by the data (datasets' fingerprint of the loaded
rows: a file's path and modification time, a hub dataset's revision, plus every selection made from them), the
tokenizer and the lengths, and reused by later runs and by every DDP rank. Batches are padded to the longest
document of the batch rounded up to a multiple of `block_size`, so LSG never pads them again; training batches can
group documents of similar length.
"""

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from lightning import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from ..arguments import AUTO, ConfigError, check_number
from .sources import (
    SplitRows,
    cap_splits,
    carve_validation,
    check_columns,
    count_rows,
    data_identity,
    drop_empty_rows,
    hub_revision,
    load_splits,
    local_dataset_folder,
    local_folder_fingerprint,
    log_lengths,
    refuse_identical_files,
    warn_split_overlap,
)
from .tokenizer import cached_pegasus_tokenizer

logger = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """Shuffled, rank-sharded training order that can restart in the middle of an epoch.

    A `DistributedSampler` (Lightning leaves it in place): rank r takes positions r, r + world, ... of one
    seeded order per epoch. `resume_at(epoch, batches)` makes the next pass over that epoch skip the batches a
    checkpoint already trained on, so a resumed run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, size: int, *, batch_size: int, num_replicas: int, rank: int, seed: int):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.size = size
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None
        # True: yield `(epoch, index)` pairs, for data whose examples are drawn anew each epoch (gap sentences)
        self.yield_epoch = False

    def resume_at(self, epoch: int, batches: int) -> None:
        self._resume = (epoch, batches)

    def order(self, generator: torch.Generator) -> list[int]:
        """The whole epoch's order, before it is split between ranks."""
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(torch.Generator().manual_seed(self.seed + self.epoch))
        order += order[: self.total_size - len(order)]  # same number of samples on every rank
        mine = order[self.rank : self.total_size : self.num_replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            mine = mine[self._resume[1] * self.batch_size :]
        self._resume = None  # later epochs run whole
        return iter([(self.epoch, i) for i in mine] if self.yield_epoch else mine)


class LengthGroupedSampler(ResumableSampler):
    """Sorts documents by length inside shuffled mega-batches, so each batch holds similar lengths.

    The `batch_size * world` consecutive positions that make one step are of similar length on every rank.
    """

    def __init__(
        self, lengths: list[int], *, batch_size: int, num_replicas: int, rank: int, seed: int, mega_batches: int = 50
    ):
        super().__init__(len(lengths), batch_size=batch_size, num_replicas=num_replicas, rank=rank, seed=seed)
        self.lengths = lengths
        self.group = batch_size * num_replicas * mega_batches

    def order(self, generator: torch.Generator) -> list[int]:
        order = super().order(generator)
        grouped = []
        for start in range(0, len(order), self.group):
            grouped += sorted(order[start : start + self.group], key=lambda i: -self.lengths[i])
        return grouped


@contextlib.contextmanager
def tokenizing_in(folder: Path) -> Iterator[None]:
    """Tokenise into `folder` holding a shared lock (`.lock`); a process that finds nobody else tokenising there
    (the lock free for it alone) first removes the temporary files datasets writes before renaming (`tmp*`):
    what is left of a run killed while tokenising, which nothing else would ever remove."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another process tokenises here: its temporary files are in use
        else:
            for stale in folder.glob("tmp*"):
                logger.info("removing %s, left by a run stopped while tokenising", stale)
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def pad_labels(sequences: list[list[int]], length: int | None = None) -> torch.Tensor:
    """Token ids `[n, length]` (the longest sequence's length by default), padded with -100 (ignored by the loss)."""
    length = length or max(len(sequence) for sequence in sequences)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    for i, sequence in enumerate(sequences):
        labels[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return labels


class LongDocumentDataModule(LightningDataModule):
    """Loads a source, tokenises it (cached), and serves padded batches; subclasses say what the labels are."""

    def __init__(
        self,
        *,
        source: str = "aclsum",
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        data_files: Mapping[str, str] | None = None,
        split_names: Mapping[str, str] | None = None,
        text_column: str = "document",
        tokenizer: Mapping[str, Any] | None = None,
        max_source_length: int = 4096,
        block_size: int = 128,
        batch_size: int | str = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        group_by_length: bool = True,
        val_fraction: float | None = 0.1,
        max_samples: int | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        max_predict_samples: int | None = None,
        num_proc: int | None = None,
        overwrite_cache: bool = False,
        cache_dir: str = "cache",
        seed: int = 0,
        allow_split_overlap: bool = False,
        allow_data_change: bool = False,
    ):
        super().__init__()
        counts = {"max_source_length": (max_source_length, "4096"), "batch_size": (batch_size, "4"),
                  "eval_batch_size": (eval_batch_size, "16"), "max_samples": (max_samples, "100"),
                  "max_train_samples": (max_train_samples, "1000"), "max_eval_samples": (max_eval_samples, "100"),
                  "max_predict_samples": (max_predict_samples, "100"), "num_proc": (num_proc, "4")}  # fmt: skip
        if batch_size == AUTO:  # chosen on the device by the batch probe (`lsgtrain.callbacks.batch_size`)
            del counts["batch_size"]
        for key, (value, example) in counts.items():
            check_number(f"data.{key}", value, int, 1, example)
        check_number("data.val_fraction", val_fraction, float, 0, "0.1", exclusive=True, below=1)
        self.source = source
        self.dataset_name = dataset_name
        self.dataset_config = dataset_config
        self.data_files = dict(data_files or {})
        self.split_names = dict(split_names or {})
        self.text_column = text_column
        self.tokenizer_options = dict(tokenizer or {})
        self.max_source_length = max_source_length
        self.block_size = block_size
        self.batch_size = batch_size
        self._eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.val_fraction = val_fraction
        # a split's own cap wins over max_samples (every split)
        self.caps = {
            split: (key, cap) if cap is not None else ("max_samples", max_samples)
            for split, key, cap in (
                ("train", "max_train_samples", max_train_samples),
                ("val", "max_eval_samples", max_eval_samples),
                ("test", "max_predict_samples", max_predict_samples),
            )
        }
        self.num_proc = num_proc
        self.overwrite_cache = overwrite_cache
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.allow_split_overlap = allow_split_overlap
        self.allow_data_change = allow_data_change  # read by the training entry when it resumes
        self._raw: DatasetDict | None = None
        self.rows: dict[str, SplitRows] = {}  # per split, how the rows used came to be (set with `raw`)
        self._tokenizer = None
        self.datasets: dict[str, Dataset] = {}
        self._resume_position: tuple[int, int] | None = None
        self._train_sampler: ResumableSampler | None = None

    @property
    def eval_batch_size(self) -> int | str:
        """`data.eval_batch_size`, or the training batch (the probe's choice with `data.batch_size=auto`)."""
        return self._eval_batch_size or self.batch_size

    # -- what subclasses define -----------------------------------------------------------------------------
    def columns(self) -> dict[str, str]:
        """Config key -> column name, for the columns this task reads."""
        return {"text_column": self.text_column}

    def encode(self, rows: dict[str, list]) -> dict[str, list]:
        """Tokenise a batch of rows (`datasets.map(batched=True)`)."""
        return self.tokenizer(rows[self.text_column], max_length=self.max_source_length, truncation=True)

    def encoding_key(self) -> dict[str, Any]:
        """Everything `encode` depends on besides the data and the tokenizer (part of the cache key)."""
        return {"text": self.text_column, "max_source_length": self.max_source_length}

    def collate_labels(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return {}

    def select_splits(self, raw: DatasetDict) -> DatasetDict:
        """The loaded splits this task uses (all of them; pretraining keeps only train)."""
        return raw

    def model_kwargs(self) -> dict[str, Any]:
        """Head config keys the data decides (the classifier's labels)."""
        return {}

    # -- loading ----------------------------------------------------------------------------------------------
    @property
    def raw(self) -> DatasetDict:
        """The untokenised splits: columns checked, empty rows dropped, a validation split held out from train if
        the data has none, then capped (`rows` says how many each step left). The tokenizer trains on this
        (capped) train split."""
        if self._raw is None:
            if self.source == "files":
                refuse_identical_files(self.data_files, self.allow_split_overlap)
            raw, origins = load_splits(
                self.source,
                dataset_name=self.dataset_name,
                dataset_config=self.dataset_config,
                data_files=self.data_files,
                split_names=self.split_names,
            )
            raw = self.select_splits(raw)
            check_columns(raw, self.columns(), origins)
            loaded = {split: len(dataset) for split, dataset in raw.items()}
            kept = drop_empty_rows(raw, self.columns(), origins)
            carved = carve_validation(kept, self.val_fraction, self.seed, origins)
            self._raw = cap_splits(carved, self.caps)
            self.rows = count_rows(loaded, kept, carved, self._raw, self.caps)
            log_lengths(self._raw, self.text_column)
            warn_split_overlap(self._raw, self.text_column, origins)
        return self._raw

    def identity(self) -> dict[str, Any]:
        """What this run trains on (`sources.data_identity`; a hub dataset's revision once it is loaded), stored in
        every checkpoint so that a resume on other data is refused."""
        identity = data_identity(
            self.source, dataset_name=self.dataset_name, dataset_config=self.dataset_config, data_files=self.data_files
        )
        if self.source == "hub" and "dataset_name" in identity:
            identity["revision"] = hub_revision(self.raw)
        return identity

    def has_split(self, split: str) -> bool:
        """Whether the data has this split (`test` is optional: without it a run is not tested)."""
        return split in self.raw

    @property
    def tokenizer(self):
        """The tokenizer chosen with the model (`lsgtrain.modeling.factory.build_model`), set before any batch."""
        if self._tokenizer is None:
            raise RuntimeError(
                "the DataModule has no tokenizer yet: it is chosen with the model (build_model returns both); "
                "set datamodule.tokenizer before tokenising"
            )
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    @property
    def pretrained_tokenizer(self) -> str | None:
        """`data.tokenizer.pretrained`: a tokenizer given explicitly (checked against the model), or None."""
        return self.tokenizer_options.get("pretrained")

    def train_tokenizer(self):
        """A Pegasus-layout tokenizer of `data.tokenizer.vocab_size` pieces trained on the training split (cached);
        used only for a randomly initialised model."""
        vocab_size = self.tokenizer_options.get("vocab_size")
        if vocab_size is None:  # a data config of the user's own without the tokenizer keys of conf/data/aclsum.yaml
            raise ConfigError(
                "data.tokenizer.vocab_size is not set: a randomly initialised model trains its tokenizer on the data "
                "and needs its size, e.g. data.tokenizer.vocab_size=8000 (or give a checkpoint: model.pretrained=...)"
            )
        return cached_pegasus_tokenizer(self.tokenizer_training_texts(), vocab_size, self.cache_dir / "tokenizers")

    def tokenizer_training_texts(self) -> list[str]:
        return list(self.raw["train"][self.text_column])

    def prepare_data(self) -> None:
        """Tokenise every split into the cache (rank 0 only, under DDP); `overwrite_cache` tokenises again."""
        self._tokenize_all(overwrite=self.overwrite_cache)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:  # reads what prepare_data wrote: rewriting it here would race the other ranks
            self.datasets = self._tokenize_all(overwrite=False)

    def _tokenize_all(self, *, overwrite: bool) -> dict[str, Dataset]:
        tokenizer_id = hashlib.sha256(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()).hexdigest()[:12]
        tokenized = {}
        # datasets gives a local folder's splits the same fingerprint whatever its files hold: add theirs
        folder = local_dataset_folder(self.dataset_name) if self.source == "hub" else None
        files = local_folder_fingerprint(folder) if folder is not None else None
        with tokenizing_in(self.cache_dir / "tokenized"):
            for split, dataset in self.raw.items():
                key = json.dumps([self.source, self.dataset_name, self.dataset_config, split, dataset._fingerprint,
                                  files, tokenizer_id, self.encoding_key()], default=str)  # fmt: skip
                digest = hashlib.sha256(key.encode()).hexdigest()[:20]
                cache_file = self.cache_dir / "tokenized" / f"{digest}.arrow"
                with_index = dataset.add_column("idx", list(range(len(dataset))))
                tokenized[split] = with_index.map(
                    self._encoder().encode,
                    batched=True,
                    cache_file_name=str(cache_file),
                    load_from_cache_file=not overwrite,
                    new_fingerprint=digest,  # our key: datasets would otherwise hash the function, datamodule and all
                    num_proc=self.num_proc,
                    desc=f"Tokenising {split}",
                )
        return tokenized

    def _encoder(self) -> "LongDocumentDataModule":
        """A copy without the trainer to tokenise with: `num_proc` pickles `encode` with its datamodule to every
        process, and the trainer would take the model along."""
        encoder = copy.copy(self)
        encoder.trainer = None
        return encoder

    # -- batches ----------------------------------------------------------------------------------------------
    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Pad inputs to the batch's longest document rounded up to a multiple of `block_size`."""
        longest = max(len(row["input_ids"]) for row in rows)
        length = -(-longest // self.block_size) * self.block_size
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            attention_mask[i, : len(row["input_ids"])] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        batch["idx"] = torch.tensor([row["idx"] for row in rows])
        batch.update(self.collate_labels(rows))
        return batch

    def longest_batch(self, rows: int) -> dict[str, torch.Tensor]:
        """A batch of `rows` rows at the longest lengths this data produces (`max_source_length`, and the longest
        target), collated as training batches are: the batch probe measures a step's memory on it."""
        special = set(self.tokenizer.all_special_ids)
        token = next(i for i in range(len(self.tokenizer)) if i not in special)  # a plain piece, never padding
        return self.collate([{**self.longest_row(token), "idx": i} for i in range(rows)])

    def longest_row(self, token: int) -> dict[str, Any]:
        """One tokenised row of the longest lengths, every piece `token` (subclasses add their labels)."""
        return {"input_ids": [token] * self.max_source_length}

    def examples(self, split: str) -> Any:
        """What a split's loader indexes: the tokenised rows (a subclass may draw examples from them)."""
        return self.datasets[split].with_format(None)

    def _loader(self, split: str, batch_size: int, sampler: ResumableSampler | None = None) -> DataLoader:
        return DataLoader(
            self.examples(split),
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # worker seeds from their own generator, not the global one, so that iterating a loader does not shift
            # the dropout masks that a resumed run restores (RandomStateCheckpoint)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        options = {"batch_size": self.batch_size, "num_replicas": world, "rank": rank, "seed": self.seed}
        if self.group_by_length:
            lengths = [len(ids) for ids in self.datasets["train"]["input_ids"]]
            sampler = LengthGroupedSampler(lengths, **options)
        else:
            sampler = ResumableSampler(len(self.datasets["train"]), **options)
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
            self._resume_position = None
        self._train_sampler = sampler
        return self._loader("train", self.batch_size, sampler=sampler)

    # -- mid-epoch resume: checkpoints record how far into the epoch training got ----------------------------
    def state_dict(self) -> dict[str, int]:
        if self.trainer is None or not self.trainer.training or self._train_sampler is None:
            return {}
        # the sampler's epoch, not trainer.current_epoch: a save at the end of an epoch sees the counter moved on
        # while the batch count is still the finished epoch's
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self._train_sampler.epoch, "batches_trained": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state:
            return
        self._resume_position = (state["epoch"], state["batches_trained"])
        if self._train_sampler is not None:  # strategies that restore after building the loader (FSDP, DeepSpeed)
            self._train_sampler.resume_at(*self._resume_position)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)


class SummarizationDataModule(LongDocumentDataModule):
    """Document -> summary pairs; labels are the summary's token ids (padding = -100)."""

    def __init__(self, *, summary_column: str = "summary", max_target_length: int = 256, **kwargs):
        super().__init__(**kwargs)
        check_number("data.max_target_length", max_target_length, int, 1, "256")
        self.summary_column = summary_column
        self.max_target_length = max_target_length

    def columns(self) -> dict[str, str]:
        return {**super().columns(), "summary_column": self.summary_column}

    def tokenizer_training_texts(self) -> list[str]:
        train = self.raw["train"]
        pairs = zip(train[self.text_column], train[self.summary_column], strict=True)
        return [f"{doc}\n{summary}" for doc, summary in pairs]

    def encode(self, rows: dict[str, list]) -> dict[str, list]:
        encoded = super().encode(rows)
        targets = self.tokenizer(
            text_target=rows[self.summary_column], max_length=self.max_target_length, truncation=True
        )
        encoded["labels"] = targets["input_ids"]
        return encoded

    def encoding_key(self) -> dict[str, Any]:
        return {**super().encoding_key(), "summary": self.summary_column, "max_target_length": self.max_target_length}

    def collate_labels(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return {"labels": pad_labels([row["labels"] for row in rows])}

    def longest_row(self, token: int) -> dict[str, Any]:
        return {**super().longest_row(token), "labels": [token] * self.max_target_length}

    def references(self, split: str) -> list[str]:
        """Reference summaries of a split, by `idx`."""
        return list(self.raw[split][self.summary_column])

    def documents(self, split: str) -> list[str]:
        """Documents of a split as written (untruncated), by `idx`: the lead baseline reads them."""
        return list(self.raw[split][self.text_column])


class ClassificationDataModule(LongDocumentDataModule):
    """Document -> label(s). Single-label: one class per row; multi-label: a list of classes per row.

    Classes may be ints or strings; the label set is read from the configured `labels` list or, if absent, from
    every split, so ids stay the same across runs.
    """

    def __init__(self, *, label_column: str = "label", multi_label: bool = False, labels: list | None = None, **kwargs):
        super().__init__(**kwargs)
        self.label_column = label_column
        self.multi_label = multi_label
        self._labels = list(labels) if labels is not None else None

    def columns(self) -> dict[str, str]:
        return {**super().columns(), "label_column": self.label_column}

    @property
    def labels(self) -> list:
        """The ordered class names (or ids); a class's position is its id."""
        if self._labels is None:
            seen = set()
            for dataset in self.raw.values():
                for value in dataset[self.label_column]:
                    seen.update(value if self.multi_label else [value])
            self._labels = sorted(seen, key=lambda v: (str(type(v)), v))
        return self._labels

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def model_kwargs(self) -> dict[str, Any]:
        problem_type = "multi_label_classification" if self.multi_label else "single_label_classification"
        id2label = {i: str(label) for i, label in enumerate(self.labels)}
        return {"num_labels": self.num_labels, "problem_type": problem_type, "id2label": id2label}

    def references(self, split: str) -> list:
        """The label (a list of labels for multi-label data) of each row of a split, by `idx`."""
        return list(self.raw[split][self.label_column])

    def encode(self, rows: dict[str, list]) -> dict[str, list]:
        encoded = super().encode(rows)
        index = {label: i for i, label in enumerate(self.labels)}
        if self.multi_label:
            encoded["label_ids"] = [[index[v] for v in values] for values in rows[self.label_column]]
        else:
            encoded["label_ids"] = [index[v] for v in rows[self.label_column]]
        return encoded

    def encoding_key(self) -> dict[str, Any]:
        return {**super().encoding_key(), "label": self.label_column, "labels": self.labels, "multi": self.multi_label}

    def longest_row(self, token: int) -> dict[str, Any]:
        return {**super().longest_row(token), "label_ids": [0] if self.multi_label else 0}

    def collate_labels(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not self.multi_label:
            return {"labels": torch.tensor([row["label_ids"] for row in rows])}
        labels = torch.zeros(len(rows), self.num_labels)
        for i, row in enumerate(rows):
            labels[i, row["label_ids"]] = 1.0
        return {"labels": labels}
