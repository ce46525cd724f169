"""Predictions of a trained model folder over many documents: `lsgtrain predict` (jsonl / csv / parquet files or a
dataset split) and `lsgtrain summarize` (text files, one document each) both call `read_documents` then `predict`.

Documents are read and checked before the model loads, so a file that cannot be read is named at once. They are
sorted by token length and batched (little padding), and each row is appended to the output, with its id, as soon
as its batch is done: a crash keeps the finished rows and `resume=True` skips them. With references, ROUGE
(summaries) or accuracy / F1 (labels) are computed over every row of the output and written beside it.

Nothing here is predict's own but the rows' bookkeeping: files are read by the reader of a run's data files
(`data.sources.read_table`), the model folder by the one checkpoint reader and tokenizer loader
(`modeling.loading`), and summaries and labels come from the task's own generation (`tasks.summarization.generate_ids`
and `decode_summaries`, `tasks.classification.class_predictions`), so a model predicts here what it predicted in its
run's validation and test. Those are shared functions rather than `trainer.predict` with a writer callback: rows are
appended (or printed) and flushed batch by batch and resumed by id on one device, which wants neither a Trainer
(accelerator, precision plugin, loggers) nor a LightningModule built with an optimizer it never uses.
"""

import contextlib
import copy
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from datasets import Dataset
from datasets.exceptions import DatasetGenerationError
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .callbacks.predictions import label_values
from .data.sources import FILE_FORMATS, DataSourceError, load_hub_dataset, read_table
from .metrics.evaluation import evaluate_summaries
from .metrics.predictions import prediction_row
from .metrics.rouge import score_documents
from .modeling.convert import extend_model
from .modeling.factory import readable_weights, trained_length
from .modeling.loading import architectures, load_tokenizer, local_folder, read_config, tokenizer_overflow
from .tasks.classification import class_predictions, classification_metrics
from .tasks.summarization import decode_summaries, generate_ids

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# the classes whose position tables `--max-length` may take beyond `max_position_embeddings` (`extend_model`)
EXTENDABLE = ("LSGPegasusForConditionalGeneration", "LSGPegasusForSequenceClassification")
BEYOND = " or beyond (its position tables are then extended)"
DEVICES = ("auto", "cpu", "cuda")
TEXT_SUFFIX = ".txt"  # a text file is one document; its path is its id
# generate() settings recorded in the metrics file (the effective values: the model's generation_config + overrides)
GENERATION_KEYS = (
    "num_beams",
    "max_new_tokens",
    "max_length",
    "min_new_tokens",
    "length_penalty",
    "no_repeat_ngram_size",
    "early_stopping",
    "do_sample",
)


class PredictionError(ValueError):
    """Input or settings that cannot give the predictions asked for, with the reason and the fix."""


@dataclass
class Documents:
    """Documents to predict, in input order: a unique id each, the text, and the reference when one was given."""

    ids: list[Any]
    texts: list[str | None]
    references: list[Any] | None = None


@dataclass
class PredictionReport:
    """What `predict` did: rows written now, rows found from an earlier run (`resume`), the ids of the empty
    documents it skipped, how many documents were truncated, and the metrics (empty without references)."""

    written: int = 0
    resumed: int = 0
    empty_ids: list[Any] = field(default_factory=list)
    truncated: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def read_documents(
    inputs: Sequence[str | os.PathLike] | None = None,
    *,
    dataset: str | None = None,
    split: str = "test",
    config: str | None = None,
    text_column: str = "document",
    reference_column: str | None = None,
    id_column: str | None = None,
) -> Documents:
    """Read the documents from files or from a dataset split (`datasets.load_dataset`).

    Args:
        inputs: `.txt` files (one document each, id = the path) and `.jsonl` / `.json` / `.csv` / `.parquet` files
            (one document per row, id = the row index, or `path:index` when several files are given).
        dataset: a hub dataset name or a local dataset folder, instead of `inputs`.
        split, config: the split and config of `dataset`.
        text_column, reference_column, id_column: column names of the rows (references and ids are optional).

    Raises:
        FileNotFoundError: an input file is missing (all missing files are named).
        PredictionError: a file that cannot be read (named, with the cause), a missing column (the columns present
            are listed), ids that are null or repeated.
    """
    if bool(inputs) == bool(dataset):
        raise PredictionError(
            "give input files (--input FILE ...) or a dataset (--dataset NAME_OR_DIR), one of the two"
        )
    tables = {f"{dataset} [{split}]": _load_split(dataset, config, split)} if dataset else _read_files(inputs)
    documents = Documents([], [], [] if reference_column else None)
    for name, table in tables.items():
        if isinstance(table, str):
            if reference_column or id_column:
                raise PredictionError(
                    f"{name} is a text file (one document, its path is its id): it has no columns "
                    "for --reference-column / --id-column; give jsonl, csv or parquet rows"
                )
            documents.ids.append(name)
            documents.texts.append(table)
            continue
        wanted = {"--text-column": text_column, "--reference-column": reference_column, "--id-column": id_column}
        for option, column in wanted.items():
            if column and column not in table.column_names:
                raise PredictionError(
                    f"{option}={column!r} is not a column of {name}; columns present: {table.column_names}"
                )
        documents.texts += table[text_column]
        if reference_column:
            documents.references += table[reference_column]
        if id_column:
            documents.ids += table[id_column]
        else:
            documents.ids += [f"{name}:{i}" for i in range(len(table))] if len(tables) > 1 else list(range(len(table)))
    _check_ids(documents.ids, id_column)
    if not documents.ids:
        raise PredictionError(f"no documents in {', '.join(tables)}")
    return documents


def _read_files(inputs: Sequence[str | os.PathLike]) -> dict[str, str | Dataset]:
    paths = [Path(path) for path in inputs]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    formats = {TEXT_SUFFIX, *FILE_FORMATS}
    unsupported = [str(path) for path in paths if path.suffix not in formats]
    if unsupported:
        raise PredictionError(f"unsupported file type: {', '.join(unsupported)}; use {sorted(formats)} (by extension)")
    return {str(path): _read_file(path) for path in paths}


def _read_file(path: Path) -> str | Dataset:
    if path.suffix == TEXT_SUFFIX:
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise PredictionError(
                f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); convert it, e.g. "
                f"`iconv -f latin1 -t utf-8 {path} > fixed.txt`, and pass the converted file"
            ) from error
    try:
        return read_table(path, "--input")  # the reader of a run's data files: the same formats, checks and errors
    except DataSourceError as error:
        raise PredictionError(str(error)) from error


def _load_split(name: str, config: str | None, split: str) -> Dataset:
    try:
        return load_hub_dataset(name, config, split=split)
    except (OSError, ConnectionError, ValueError, DatasetGenerationError) as error:
        raise PredictionError(
            f"could not load the {split!r} split of dataset {name}{f' (config {config})' if config else ''}: "
            f"{error}. A hub name needs internet (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}): "
            f"download it with `hf download {name} --repo-type dataset --local-dir DIR` and pass --dataset DIR"
        ) from error


def _check_ids(ids: list[Any], id_column: str | None) -> None:
    """Ids name the output rows and let `resume` skip them: each must be present and unique (only an --id-column
    can break that: numbered rows and file paths are unique, a file given twice is read once)."""
    nulls = sum(value is None for value in ids)
    if nulls:
        raise PredictionError(
            f"--id-column={id_column!r}: {nulls} rows have no id; choose a column filled in every row"
        )
    seen: set[str] = set()
    for value in ids:
        key = json.dumps(value)
        if key in seen:
            raise PredictionError(
                f"--id-column={id_column!r}: the id {value!r} appears more than once; ids must be unique (leave "
                "--id-column out to number the rows)"
            )
        seen.add(key)


def load_model(model_dir: Path, *, trust_remote_code: bool) -> PreTrainedModel:
    """Our LSG exports load with lsgtrain's own classes and other folders with transformers' own (seq2seq, or
    sequence classification when the folder says so); the folder's `.py` files run only with `trust_remote_code`
    (a folder's code can do anything a Python program can)."""
    from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    from .modeling import LSGPegasusForConditionalGeneration, LSGPegasusForSequenceClassification

    names = architectures(_read_config(model_dir))
    auto = AutoModelForSequenceClassification if _is_classifier(names) else AutoModelForSeq2SeqLM
    if trust_remote_code:
        return auto.from_pretrained(model_dir, trust_remote_code=True)
    for own in (LSGPegasusForConditionalGeneration, LSGPegasusForSequenceClassification):
        if own.__name__ in names:
            return own.from_pretrained(model_dir)
    if any(name.startswith("LSG") for name in names):
        raise PredictionError(
            f"{model_dir} holds a {names[0]}, which lsgtrain has no class for: it would "
            "need the folder's own code (--trust-remote-code, only for folders you trust)"
        )
    return auto.from_pretrained(model_dir, trust_remote_code=False)


def _read_config(model_dir: Path) -> dict[str, Any]:
    """The model folder's `config.json` (`lsgtrain.modeling.loading.read_config`); a hub id is refused: the
    default length and the weights' checks read the folder's files."""
    if local_folder(model_dir, "model") is None:
        raise FileNotFoundError(
            f"model={model_dir}: no such folder; pass a run's hf_model folder, or download a hub model first "
            f"(`hf download {model_dir} --local-dir DIR`) and pass DIR"
        )
    return read_config(model_dir, "model")


def _is_classifier(architectures: list[str]) -> bool:
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def predict(
    model_dir: str | os.PathLike,
    documents: Documents,
    *,
    output: str | os.PathLike | None = None,
    resume: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "fp32",
    max_length: int | None = None,
    generation: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    bootstrap: tuple[int, int] = (1000, 0),
) -> PredictionReport:
    """Summarize (seq2seq model) or classify (sequence-classification model) every non-empty document.

    Each row written is `{"id", "prediction", "reference", <the row's metrics>, "input_tokens", "document_tokens",
    "truncated", "max_length", "trained_length"}`, the format of a training run's predictions
    (`lsgtrain.metrics.predictions`): `prediction` is a summary, a label or a list of labels; `reference` is null
    without `--reference-column`; the row's metrics are its ROUGE (`rouge1` .. `rougeLsum`, F1 x 100) or `correct`
    (labels), only with a reference; `input_tokens`: what the model read, `document_tokens`: the whole document,
    `max_length`: the most it read, `trained_length`: the length it was trained at (both also in the metrics file).
    With references, the metrics over every row also go to
    `<output>.metrics.json` (`out.jsonl` -> `out.metrics.json`).

    Args:
        model_dir: an exported `hf_model` folder, or any (LSG-)Pegasus / seq2seq checkpoint folder.
        documents: from `read_documents`.
        output: JSON lines file, appended row by row (None: stdout). An existing one is refused unless `resume`.
        resume: skip the ids already in `output` and append the others.
        batch_size: documents per batch, batched by token length.
        device: `auto` (cuda if there is one), `cpu` or `cuda`.
        dtype: the weights' dtype, `bf16` or `fp32`.
        max_length: source tokens read per document (default: the length the model was trained at, its tokenizer's
            `model_max_length`). Above it, one warning names the trained length; above the model's
            `max_position_embeddings`, an LSG-Pegasus model is extended as `lsgtrain convert` extends a checkpoint.
        generation: `generate` settings overriding the model's `generation_config` (num_beams, max_new_tokens, ...).
        trust_remote_code: run the model folder's own `.py` files (only for folders you trust).
        bootstrap: `(resamples, seed)` of the 95% bootstrap interval beside each ROUGE (`rouge1_low` / `_high`).
    """
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    classify, multi_label = _is_classifier(architectures(config)), _multi_label(config)
    if batch_size < 1:
        raise PredictionError(f"--batch-size={batch_size} must be >= 1")
    if dtype not in DTYPES:
        raise PredictionError(f"--dtype={dtype!r} is unknown; choose one of {sorted(DTYPES)}")
    torch_device = _device(device)
    model_max = config.get("max_position_embeddings")
    extendable = not trust_remote_code and bool(set(architectures(config)) & set(EXTENDABLE))
    max_length = _max_length(max_length, model_max, model_dir, extendable)
    trained = trained_length(model_dir, model_max) if model_max else max_length
    if max_length > trained:
        logger.warning(
            "%s was trained at %d tokens and reads up to %d here (--max-length): beyond its trained length%s",
            model_dir, trained, max_length,
            f"; its position tables are extended from {model_max} as `lsgtrain convert --max-sequence-length` "
            "extends them" if max_length > model_max else "",
        )  # fmt: skip
    if classify and generation:
        raise PredictionError(f"{model_dir} is a classifier: generation settings {sorted(generation)} do not apply")
    labels = _labels(config) if classify else None
    if labels is not None and documents.references is not None:
        _check_references(documents.references, labels, multi_label=multi_label)

    output = Path(output) if output is not None else None
    done = _finished_rows(output, resume)
    todo, empty_ids = _pending(documents, done)
    report = PredictionReport(resumed=len(done), empty_ids=empty_ids)
    if done:
        logger.info("resuming %s: %d rows already there, %d documents to go", output, len(done), len(todo))
    tokenizer = load_tokenizer(model_dir, "model")
    overflow = "vocab_size" in config and tokenizer_overflow(tokenizer, config["vocab_size"])
    if overflow:
        raise PredictionError(
            f"{model_dir}: its tokenizer does not fit its model ({overflow}): the tokenizer is not the one the model "
            "was trained with; copy that one's files into the folder (a run's <run>/tokenizer/)"
        )
    texts = [str(documents.texts[i]) for i in todo]
    lengths = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]] if texts else []
    report.truncated = sum(length > max_length for length in lengths)
    if report.truncated:
        logger.warning(
            "%d of %d documents are longer than %d tokens and were truncated to it (longest: %d tokens)%s",
            report.truncated, len(todo), max_length, max(lengths),
            f"; raise --max-length, up to the model's {model_max}{BEYOND if extendable else ''}"
            if model_max and max_length < model_max else "",
        )  # fmt: skip

    rows = list(done.values())
    generation_config = None
    if todo:
        model = _ready_model(model_dir, trust_remote_code, torch_device, DTYPES[dtype])
        if extendable:  # beyond its tables: extended as `lsgtrain convert` extends a checkpoint (no new globals)
            extend_model(model, tokenizer, max_sequence_length=max_length,
                         trained_global_tokens=model.config.num_global_tokens)  # fmt: skip
        generation_config = None if classify else _generation_config(model, generation or {})  # checked, recorded
        if generation_config is not None:
            _check_generation_fits(generation_config, model.config.max_position_embeddings)
        order = sorted(range(len(todo)), key=lambda k: -lengths[k])  # longest first: memory runs out at once or never
        with _open_output(output) as sink, tqdm(total=len(todo), unit="doc", desc="predict") as progress:
            for batch in _batches(order, batch_size):
                encoded = tokenizer(
                    [texts[k] for k in batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
                ).to(torch_device)
                if classify:
                    predictions = _classify(model, encoded, labels, multi_label=multi_label)
                else:
                    predictions = _summarize(model, tokenizer, encoded, generation or {})
                for k, prediction in zip(batch, predictions, strict=True):
                    reference = documents.references[todo[k]] if documents.references is not None else None
                    row = prediction_row(
                        documents.ids[todo[k]], prediction, reference, _row_metrics(prediction, reference, classify)
                    )
                    row.update(input_tokens=min(lengths[k], max_length), document_tokens=lengths[k],
                               truncated=lengths[k] > max_length, max_length=max_length,
                               trained_length=trained)  # fmt: skip
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    rows.append(row)
                sink.flush()  # finished rows survive a crash
                report.written += len(batch)
                progress.update(len(batch))

    if documents.references is not None:
        wanted = {json.dumps(doc_id) for doc_id in documents.ids}
        rows = [row for row in rows if json.dumps(row["id"]) in wanted]
        report.metrics = _metrics(rows, labels, multi_label=multi_label, bootstrap=bootstrap)
        if output is not None and report.metrics:
            record = {"model": str(model_dir), "max_length": max_length, "trained_length": trained, "rows": len(rows),
                      "metrics": report.metrics}  # fmt: skip
            if generation_config is not None:
                record["generation"] = {key: getattr(generation_config, key, None) for key in GENERATION_KEYS}
            metrics_path(output).write_text(json.dumps(record, indent=2))
    return report


def _max_length(max_length: int | None, model_max: int | None, model_dir: Path, extendable: bool) -> int:
    """`max_length`, by default the length the model was trained at; beyond its `max_position_embeddings` only for
    lsgtrain's own LSG classes, whose tables `extend_model` extends."""
    if model_max is None and max_length is None:
        raise PredictionError(f"{model_dir}/config.json gives no max_position_embeddings: pass --max-length")
    max_length = max_length or trained_length(model_dir, model_max)
    if max_length < 1 or (not extendable and max_length > (model_max or max_length)):
        beyond = " (only lsgtrain's LSG-Pegasus classes, without --trust-remote-code, are extended beyond it)"
        raise PredictionError(
            f"--max-length={max_length} must be between 1 and the model's max_position_embeddings ({model_max})"
            f"{beyond if max_length > 1 else ''}"
        )
    return max_length


def _pending(documents: Documents, done: dict[str, dict[str, Any]]) -> tuple[list[int], list[Any]]:
    """Positions of the documents to predict (not empty, not in `done`) and the ids of the empty ones (warned)."""
    todo, empty_ids = [], []
    for i, (doc_id, text) in enumerate(zip(documents.ids, documents.texts, strict=True)):
        if text is None or not str(text).strip():
            empty_ids.append(doc_id)
        elif json.dumps(doc_id) not in done:
            todo.append(i)
    if len(empty_ids) == len(documents.ids):
        raise PredictionError("every document is empty: nothing to predict")
    if empty_ids:
        logger.warning(
            "%d of %d documents are empty and were skipped (no prediction written): ids %s%s",
            len(empty_ids), len(documents.ids), empty_ids[:10], " ..." if len(empty_ids) > 10 else "",
        )  # fmt: skip
    return todo, empty_ids


def metrics_path(output: str | os.PathLike) -> Path:
    """Where `predict` writes the metrics of `output`: `out.jsonl` -> `out.metrics.json`."""
    output = Path(output)
    return output.with_name(f"{output.stem}.metrics.json")


def _device(device: str) -> torch.device:
    if device not in DEVICES:
        raise PredictionError(f"--device={device!r} is unknown; choose one of {list(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PredictionError("--device=cuda, but torch sees no CUDA GPU here; use --device cpu (or auto)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _labels(config: dict[str, Any]) -> list[str]:
    """Class names in id order (`id2label` of the exported config)."""
    if "id2label" not in config:
        raise PredictionError("the classifier's config.json has no id2label: its class names are unknown; add them")
    id2label = {int(i): name for i, name in config["id2label"].items()}
    return [id2label[i] for i in range(len(id2label))]


def _multi_label(config: dict[str, Any]) -> bool:
    return config.get("problem_type") == "multi_label_classification"


def _check_references(references: list[Any], labels: list[str], *, multi_label: bool) -> None:
    """References are label names (`id2label` values) or the values the training data held, compared as text;
    one the model does not know is an error before any prediction."""
    known = set(labels)
    given = (value for reference in references if reference is not None for value in _as_list(reference, multi_label))
    unknown = sorted({str(value) for value in given} - known)
    if unknown:
        raise PredictionError(
            f"--reference-column holds labels the model does not know: {unknown[:10]}; the "
            f"model's labels (id2label) are {labels}"
        )


def _as_list(value: Any, multi_label: bool) -> list[Any]:
    return list(value) if multi_label else [value]


def _finished_rows(output: Path | None, resume: bool) -> dict[str, dict[str, Any]]:
    """The rows an earlier run wrote to `output` (by id), for `resume`; a row cut short by a crash is removed."""
    if output is None:
        if resume:
            raise PredictionError("--resume needs --output (the file whose rows to skip)")
        return {}
    if not output.is_file() or output.stat().st_size == 0:
        return {}
    if not resume:
        raise PredictionError(
            f"{output} exists: pass --resume to skip the documents it holds and add the others, "
            "or choose another --output"
        )
    text = output.read_text(encoding="utf-8")
    if not text.endswith("\n"):  # the last row was being written when the run stopped
        logger.warning("%s: its last line is incomplete (the run stopped while writing it); removing it", output)
        text = text[: text.rfind("\n") + 1]
        output.write_text(text, encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    if any("prediction" not in row for row in rows):
        raise PredictionError(
            f"{output} holds rows without a `prediction` (an older lsgtrain wrote `summary` / `label`): --resume "
            "cannot add to it; choose another --output"
        )
    return {json.dumps(row["id"]): row for row in rows}


@contextlib.contextmanager
def _open_output(output: Path | None) -> Iterator[TextIO]:
    """The output file opened for appending (stdout when there is none)."""
    if output is None:
        yield sys.stdout
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as file:
        yield file


def _batches(order: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _ready_model(model_dir: Path, trust_remote_code: bool, device: torch.device, dtype: torch.dtype):
    with readable_weights(str(model_dir), "model"):  # a truncated or code-running weight file, named
        model = load_model(model_dir, trust_remote_code=trust_remote_code).eval()
    broken = [name for name, value in model.state_dict().items() if not torch.isfinite(value).all()]
    if broken:
        raise PredictionError(
            f"{model_dir} has non-finite weights ({len(broken)} tensors, e.g. {broken[0]}): its "
            "training diverged; it would only produce empty predictions"
        )
    logger.info("%s: %.1fM parameters on %s, %s", type(model).__name__, model.num_parameters() / 1e6, device, dtype)
    return model.to(device=device, dtype=dtype)


def _generation_config(model: PreTrainedModel, overrides: dict[str, Any]):
    """The model's `generation_config` (an lsgtrain export carries its run's settings) with `overrides` applied:
    what `generate` will use, checked before any document and recorded beside the metrics."""
    config = copy.deepcopy(model.generation_config)
    unknown = config.update(**overrides)
    if unknown:
        raise PredictionError(f"unknown generation settings {sorted(unknown)}")
    config.validate()
    logger.info("generation: %s", {key: getattr(config, key, None) for key in GENERATION_KEYS})
    return config


def _check_generation_fits(config, positions: int | None) -> None:
    """The decoder reads one position per generated token: more new tokens than its position table would fail
    with an IndexError at the first batch, after the output file was opened."""
    if positions is not None and config.max_new_tokens is not None and config.max_new_tokens > positions:
        raise PredictionError(
            f"max_new_tokens={config.max_new_tokens} (--max-new-tokens, or the model's generation_config.json) is "
            f"beyond the decoder's position table (max_position_embeddings={positions}); pass --max-new-tokens "
            f"{positions} or less"
        )


def _summarize(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded, overrides: dict[str, Any]
) -> list[str]:
    """A batch's summaries, by the task's own generation (`tasks.summarization.generate_ids`): the same call and
    decoding as validation and test, with `overrides` over the model's `generation_config`."""
    return decode_summaries(tokenizer, generate_ids(model, encoded, overrides))


@torch.no_grad()
def _classify(model: PreTrainedModel, encoded, labels: list[str], *, multi_label: bool) -> list[str | list[str]]:
    logits = model(**encoded).logits.float()  # [n, num_labels]
    return label_values(class_predictions(logits, multi_label=multi_label), labels)


def _row_metrics(prediction: str | list[str], reference: Any, classify: bool) -> dict[str, Any]:
    """A row's own score: its summary's ROUGE, or whether its label(s) are right; none without a reference."""
    if reference is None or not str(reference).strip():
        return {}
    if not classify:
        return score_documents([prediction], [str(reference)])[0]
    if isinstance(prediction, list):
        return {"correct": set(prediction) == {str(value) for value in reference}}
    return {"correct": prediction == str(reference)}


def _metrics(
    rows: list[dict[str, Any]], labels: list[str] | None, *, multi_label: bool, bootstrap: tuple[int, int]
) -> dict[str, float]:
    """ROUGE with 95% bootstrap intervals (summaries) or accuracy / F1 (labels) over the rows that have a reference."""
    scored = [row for row in rows if row.get("reference") is not None and str(row["reference"]).strip()]
    if len(scored) < len(rows):
        logger.warning("%d of %d rows have no reference and are not scored", len(rows) - len(scored), len(rows))
    if not scored:
        return {}
    if labels is None:
        predictions, references = [row["prediction"] for row in scored], [str(row["reference"]) for row in scored]
        resamples, seed = bootstrap
        return evaluate_summaries(predictions, references, resamples=resamples, seed=seed).metrics(None)
    index = {label: i for i, label in enumerate(labels)}
    metrics = classification_metrics(num_labels=len(labels), multi_label=multi_label)
    if multi_label:
        predicted = torch.zeros(len(scored), len(labels))
        target = torch.zeros(len(scored), len(labels), dtype=torch.long)
        for i, row in enumerate(scored):
            predicted[i, [index[label] for label in row["prediction"]]] = 1.0
            target[i, [index[str(value)] for value in row["reference"]]] = 1
    else:
        predicted = torch.tensor([index[row["prediction"]] for row in scored])
        target = torch.tensor([index[str(row["reference"])] for row in scored])
    return {name: float(value) for name, value in metrics(predicted, target).items()}
