"""The model card (`README.md`) of an export: what a person needs to use, judge and reproduce the model.

Hub metadata (license, base model, datasets, tags, validation and test results as `model-index`) goes through
`huggingface_hub.ModelCardData`; the text is rendered from `CARD_TEMPLATE` by `ModelCard.from_template`. The card
is written once the test set has run, so it holds the test metrics of the exported weights.
"""

import logging
import os
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from transformers import GenerationConfig, PretrainedConfig

from .data.sources import SplitRows
from .metrics.abstractiveness import STATISTICS
from .modeling.loading import local_folder
from .run.keys import lookup

if TYPE_CHECKING:
    from .callbacks.batch_size import StepBatch

logger = logging.getLogger(__name__)

DEFAULT_LICENSE = "apache-2.0"  # lsgtrain's own; a base checkpoint's card may name another
LSG_PAPER = "https://arxiv.org/abs/2210.15497"
LSG_CITATION = """@inproceedings{condevaux2023lsg,
  title     = {{LSG} Attention: Extrapolation of Pretrained Transformers to Long Sequences},
  author    = {Condevaux, Charles and Harispe, S{\\'e}bastien},
  booktitle = {Advances in Knowledge Discovery and Data Mining (PAKDD 2023)},
  series    = {Lecture Notes in Computer Science},
  pages     = {443--454},
  publisher = {Springer},
  year      = {2023},
  doi       = {10.1007/978-3-031-33374-3_35},
  eprint    = {2210.15497},
  archivePrefix = {arXiv}
}"""
# What the card's LSG table lists, from the exported model's config.
LSG_CARD_KEYS = (
    "max_position_embeddings", "block_size", "sparse_block_size", "sparsity_factor", "sparsity_type",
    "num_global_tokens", "adaptive", "mask_first_token", "pass_global_tokens_to_decoder", "pool_with_global",
)  # fmt: skip
METADATA_KEYS = ("_from_model_config", "transformers_version")  # not decoding settings
TASKS = {"seq2seq": ("summarization", "summarization"), "classification": ("text-classification", "classification")}

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

An LSG-Pegasus {{ task_word }} model: Pegasus whose encoder attends with **Local + Sparse + Global** attention
([LSG, Condevaux & Harispe, PAKDD 2023]({{ paper }})), so it reads documents of up to {{ max_length }} tokens.
Trained with lsgtrain on {{ data_short }}.

## Usage

The folder ships its modeling code (`modeling_lsg_pegasus.py`), hence `trust_remote_code=True`: read it first
if the model does not come from you.

```python
from transformers import {{ auto_class }}, AutoTokenizer

model_id = "{{ model_id }}"  # this repository, or the local folder
tokenizer = AutoTokenizer.from_pretrained(model_id)
model = {{ auto_class }}.from_pretrained(model_id, trust_remote_code=True)
inputs = tokenizer(document, truncation=True, max_length={{ max_length }}, return_tensors="pt")
{% if generation %}summary_ids = model.generate(**inputs)  # the run's decoding settings (generation_config.json)
summary = tokenizer.decode(summary_ids[0], skip_special_tokens=True)
{% elif multi_label %}predicted = model(**inputs).logits.sigmoid() > 0.5  # one column per label: model.config.id2label
{% else %}predicted = model(**inputs).logits.argmax(-1)  # label ids: model.config.id2label
{% endif %}```
{% if generation %}
`generate()` without arguments decodes as the run's evaluation did:

| setting | value |
|---|---|
{% for key, value in generation.items() %}| `{{ key }}` | {{ value }} |
{% endfor %}{% endif %}
## Base checkpoint

{{ base_text }}

## LSG attention

| key | value |
|---|---|
{% for key, value in lsg.items() %}| `{{ key }}` | {{ value }} |
{% endfor %}
## Data

{{ data_text }}

## Results

{{ results_note }}

| metric | validation | test |
|---|---|---|
{% for name, val, test in results %}| {{ name }} | {{ val }} | {{ test }} |
{% endfor %}{% if lead %}
Lead baseline: the first {{ lead.words }} words of each {{ lead.split }} document (the median length of their reference
summaries), scored the same way; a model below it does worse than copying the document's opening.

| metric | this model | lead baseline |
|---|---|---|
{% for name, model, baseline in lead.rows %}| {{ name }} | {{ model }} | {{ baseline }} |
{% endfor %}{% endif %}{% if by_length %}
ROUGE by source length ({{ by_length.split }} documents, tokens before truncation; the model read the first
{{ by_length.truncation }} tokens of each: the documents "cut" were read only in part):

| {{ by_length.header | join(" | ") }} |
|{% for _ in by_length.header %}---|{% endfor %}
{% for row in by_length.rows %}| {{ row | join(" | ") }} |
{% endfor %}{% endif %}{% if statistics %}
Length and abstractiveness of the {{ statistics.split }} summaries (mean, median in brackets): words, compression
(document words / summary words), extractive fragment coverage and density (Grusky et al. 2018), the share of
n-grams absent from the document, the share of repeated trigrams:

| statistic | this model | lead baseline | reference |
|---|---|---|---|
{% for row in statistics.rows %}| {{ row | join(" | ") }} |
{% endfor %}{% endif %}{% if figures %}
Figures (in the run folder, beside this export: not pushed with it): {{ figures }}.
{% endif %}
## Training

{% if command %}Reproduce the run from the lsgtrain repository:

```bash
{{ command }}
```
{% else %}The run was started from Python (`lsgtrain.train.train(cfg)`), not with `python train.py`: there is no
command line to repeat; its settings are the ones this card lists.
{% endif %}
- optimizer: {{ optimizer }}
- optimizer steps: {{ steps }}; epochs: {{ epochs }}; effective batch: {{ batch }}; precision: `{{ precision }}`
- hardware: {{ hardware }}
- wall time: {{ wall_time }}
{% if telemetry %}- telemetry (training steps of the last session): {{ telemetry }}
{% endif %}
## Citation

```bibtex
{{ citation }}
```

## License

{{ license_text }}
"""


def build_model_card(
    *,
    run_config: dict[str, Any],
    model_config: PretrainedConfig,
    validation: dict[str, float],
    test: dict[str, float],
    generation: GenerationConfig | None,
    trainer: L.Trainer,
    batch: "StepBatch",
    seconds: float,
    resumed: bool,
    license: str | None,
    repo_id: str | None,
    rows: dict[str, SplitRows] | None = None,
    untested: str | None = None,
    hub_ids: dict[str, str | None] | None = None,
    telemetry: dict[str, float] | None = None,
) -> ModelCard:
    """The card of an export.

    Args:
        run_config: the run's resolved config (`OmegaConf.to_container(cfg, resolve=True)`).
        model_config: the exported model's config (LSG keys, length).
        validation: `val/*` metrics of the exported checkpoint; test: `test/*` metrics (empty: not tested).
        generation: the export's generation config (None for a classifier).
        trainer: the run's trainer (steps, epochs, devices, precision).
        batch: the rows of its optimizer steps (`RunReport.batch`): the batch trained, and the one asked for.
        seconds: wall time of this process; resumed: whether it continued an earlier process's checkpoint.
        license: a hub license id; None: the base checkpoint's, else apache-2.0.
        repo_id: where it will be pushed (the usage example's model id).
        rows: per split, the rows the run used and how (the datamodule's `rows`); None: not known.
        untested: why the test set did not run (None: it ran, or the test metrics say it did).
        hub_ids: `{"base_model", "dataset"}`: the hub ids of a local base checkpoint / dataset copy
            (`callbacks.hf_export.base_model` / `.dataset`), where the folder cannot tell.
        telemetry: the fit's throughput, padding and peaks (`TrainingTelemetry.summary`); None or empty: not measured.
    """
    model_cfg, data_cfg, module_cfg = run_config["model"], run_config["data"], run_config["module"]
    lead = _lead_baseline(validation, test)  # its own table, not the model's results
    validation, test = _without_lead(validation), _without_lead(test)
    pipeline_tag, task_word = TASKS[model_cfg["task"]]
    pretraining = "objective" in data_cfg  # gap sentences: its ROUGE is of generated gap sentences, not summaries
    if pretraining:
        task_word = "gap-sentence pretrained"
    base = model_cfg["convert_from"] or model_cfg["pretrained"]
    hub_ids = hub_ids or {}
    base_id = hub_id_of(base, "models", hub_ids.get("base_model"))
    data = describe_data(data_cfg, rows or {}, hub_ids.get("dataset"))
    license_id, license_text = _license(license, base, base_id)
    results_index = None if pretraining else _eval_results(pipeline_tag, data, data_cfg, rows or {}, validation, test)
    card_data = ModelCardData(
        language="en",
        license=license_id,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        base_model=base_id,
        datasets=[data.hub_id] if data.hub_id else None,
        tags=["lsg", "pegasus", "long-document", pipeline_tag, "lsgtrain"],
        model_name=repo_id or f"lsg-pegasus-{run_config['task_name']}",
        eval_results=results_index or None,
    )
    optimizer = module_cfg["optimizer"]
    wall_time = _duration(seconds) + (" (the last session: the run resumed from a checkpoint)" if resumed else "")
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        title=f"LSG-Pegasus {task_word}: {data.name}",
        task_word=task_word,
        paper=LSG_PAPER,
        max_length=model_config.max_position_embeddings,
        data_short=data.name,
        auto_class="AutoModelForSequenceClassification" if generation is None else "AutoModelForSeq2SeqLM",
        model_id=repo_id or "path/to/hf_model",
        generation=_generation_settings(generation),
        multi_label=model_config.problem_type == "multi_label_classification",
        base_text=_describe_base(base, base_id, converted=bool(model_cfg["convert_from"])),
        lsg={key: getattr(model_config, key) for key in LSG_CARD_KEYS},
        data_text=data.text,
        results=_results_rows(validation, test),
        results_note=_results_note(validation, test, untested, pretraining=pretraining),
        lead=lead,
        by_length=_length_rows(validation, test, data_cfg),
        statistics=_statistics_rows(validation, test),
        figures=_figure_links(run_config),
        command=reproduce_command(),
        optimizer=f"{optimizer['_target_'].rsplit('.', 1)[-1]}, lr {optimizer['lr']}, weight decay "
        f"{module_cfg['weight_decay']}",
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        batch=batch.describe(),
        precision=trainer.precision,
        hardware=describe_hardware(trainer),
        wall_time=wall_time,
        telemetry=describe_telemetry(telemetry or {}),
        citation=LSG_CITATION,
        license_text=license_text,
    )


def describe_telemetry(telemetry: dict[str, float]) -> str:
    """One line of a fit's telemetry (`TrainingTelemetry.summary`) for the model card and the run's last log lines,
    e.g. `1520 source + 210 target tokens/s (padding 12% / 30%), 3.1 samples/s, 0.52 s per optimizer step, ...`;
    empty when it was not measured."""
    if not telemetry:
        return ""
    tokens = f"{telemetry['source_tokens_per_s']:.0f} source"
    padding = f"{telemetry['source_padding']:.0%}"
    if "target_tokens_per_s" in telemetry:
        tokens += f" + {telemetry['target_tokens_per_s']:.0f} target"
        padding += f" / {telemetry['target_padding']:.0%}"
    parts = [
        f"{tokens} tokens/s (padding {padding}, not counted)",
        f"{telemetry['samples_per_s']:.2f} samples/s",
        f"{telemetry['seconds_per_step']:.3g} s per optimizer step",
    ]
    if "peak_cuda_gib" in telemetry:
        parts.append(f"peak CUDA memory {telemetry['peak_cuda_gib']:.2f} GiB")
    parts.append(f"peak RSS {telemetry['peak_rss_gib']:.2f} GiB")
    if "grad_norm_last" in telemetry:
        parts.append(
            f"gradient norm before clipping {telemetry['grad_norm_last']:.3g} (max {telemetry['grad_norm_max']:.3g})"
        )
    return ", ".join(parts)


def write_model_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Save `card` as `folder/README.md`, through a temporary file and a rename (never a half-written card)."""
    path = Path(folder) / "README.md"
    staging = path.with_name(f".{path.name}.tmp")
    card.save(staging)
    os.replace(staging, path)
    return path


def reproduce_command() -> str | None:
    """`python train.py` with this run's command-line overrides (Hydra's task overrides), local paths made
    portable (`portable_override`); None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    return shlex.join(["python", "train.py", *map(portable_override, HydraConfig.get().overrides.task)])


def portable_override(override: str) -> str:
    """`key=value` with a local path value (or, in a dict value such as `data.data_files={train: PATH, ...}`, each
    path in it) replaced by the hub id it is a copy of (a hub-cache folder) or by `.../<its last part>`: the card is
    shared, the paths of the machine that trained are not. Whether a path is looked up as a model or a dataset copy
    is the key's `shown` in `lsgtrain.run.keys`."""
    key, sep, value = override.partition("=")
    if not sep:
        return override
    name = key.lstrip("+~")
    if value.startswith("{"):
        parsed = OverridesParser.create().parse_override(override).value()
        if isinstance(parsed, dict):
            entries = (f"{entry}: {_portable_value(f'{name}.{entry}', str(v))}" for entry, v in parsed.items())
            return f"{key}={{{', '.join(entries)}}}"
    return f"{key}={_portable_value(name, value)}"


def _portable_value(key: str, value: str) -> str:
    """A path (absolute, home, `./` or `../`, or with more than one `/`, which no hub id has) as the card shows it;
    other values as they are."""
    if not value.startswith(("/", "~", "./", "../")) and value.count("/") < 2:
        return value
    return hub_id_of(value, lookup(key).shown.value) or ".../" + Path(value).name


def describe_hardware(trainer: L.Trainer) -> str:
    """Devices, their count and nodes, e.g. `8 x NVIDIA H100 80GB HBM3 (1 node x 8 devices)`."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type.upper()} ({platform.machine()}, {os.cpu_count()} cores)"
    nodes = f"{trainer.num_nodes} node{'s' * (trainer.num_nodes > 1)}"
    return f"{trainer.world_size} x {name} ({nodes} x {trainer.num_devices} device{'s' * (trainer.num_devices > 1)})"


@dataclass(frozen=True)
class DataDescription:
    """The training data as the card names it: a hub dataset id (None for local data of unknown origin or
    embedded data), a short name, and a paragraph."""

    hub_id: str | None
    name: str
    text: str


# How the card names our splits, and the key that caps each.
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def describe_data(
    data_cfg: dict[str, Any], rows: dict[str, SplitRows] | None = None, hub_id: str | None = None
) -> DataDescription:
    """Source, columns, lengths and the rows of each split of `data` (the run's resolved data config); `rows`: the
    datamodule's per-split `SplitRows`; `hub_id`: the hub id of a local dataset copy when it was given."""
    source, dataset = data_cfg["source"], data_cfg["dataset_name"]
    if source == "aclsum":
        name = "aclsum (ACL papers)"
        text = "The ACL papers shipped by the [`aclsum`](https://pypi.org/project/aclsum/) package (its splits)."
    elif source == "hub":
        hub_id = hub_id_of(dataset, "datasets", hub_id)
        name = hub_id or Path(dataset).name
        if hub_id and _is_local(dataset):
            text = f"A local copy of [`{hub_id}`](https://huggingface.co/datasets/{hub_id})."
        elif hub_id:
            text = f"[`{hub_id}`](https://huggingface.co/datasets/{hub_id})."
        else:
            text = f"A local copy of a hub dataset (folder `{name}`; its hub id: `callbacks.hf_export.dataset`)."
    else:
        name = "local data files"
        files = data_cfg["data_files"].items()
        text = "Local files: " + ", ".join(f"{split} `{Path(path).name}`" for split, path in files) + "."
    if data_cfg["dataset_config"]:
        text += f" Config `{data_cfg['dataset_config']}`."
    if "objective" in data_cfg:  # gap-sentence pretraining: the text column only
        text += f" `{data_cfg['text_column']}`, gap-sentence pretraining ({_describe_objective(data_cfg)}); windows of"
        text += f" {data_cfg['max_source_length']} tokens, gap sentences truncated to {data_cfg['max_target_length']}"
    else:
        target = data_cfg["summary_column" if "summary_column" in data_cfg else "label_column"]  # or classification
        text += f" `{data_cfg['text_column']}` -> `{target}`; documents truncated to {data_cfg['max_source_length']}"
        text += " tokens"
        if "max_target_length" in data_cfg:
            text += f", summaries to {data_cfg['max_target_length']}"
    text += "."
    if rows:
        used = [f"- {name}: {_describe_rows(split, rows[split], data_cfg)}" for split, name in SPLIT_NAMES.items()
                if split in rows]  # fmt: skip
        text += "\n\nRows used:\n\n" + "\n".join(used)
        if "test" not in rows:
            text += "\n- test: none (the data has no test split)"
    return DataDescription(hub_id, name, text)


def _describe_rows(split: str, rows: SplitRows, data_cfg: dict[str, Any]) -> str:
    """`8 rows (the first 8 of 90: data.max_train_samples=8; 10 held out as validation)`."""
    notes = []
    if rows.cap_key is not None:
        notes.append(f"the first {rows.used} of {rows.available}: data.{rows.cap_key}={rows.cap}")
    if split == "val" and rows.held_out and not rows.loaded:
        notes.append(f"held out from train: data.val_fraction={data_cfg['val_fraction']}, seed {data_cfg['seed']}")
    elif rows.held_out:
        notes.append(f"{rows.held_out} held out as validation")
    if rows.dropped:
        notes.append(f"{rows.dropped} of {rows.loaded} dropped: an empty or null column")
    return f"{rows.used} rows" + (f" ({'; '.join(notes)})" if notes else "")


def hub_id_of(source: str | None, kind: str, given: str | None = None) -> str | None:
    """The hub id of a model (`kind="models"`) or dataset (`"datasets"`): `given` (a config key), a hub name as it
    is, or the one a hub-cache folder's path spells (`.../models--org--name/snapshots/<sha>`); None for a local
    folder of unknown origin, whose path never goes into the card."""
    if given:
        return given
    if not source:
        return None
    try:
        folder = local_folder(source, kind)
    except FileNotFoundError:  # a path that is not there, or a file: never a hub id
        return None
    if folder is None:  # a hub name
        return source
    for part in reversed(folder.resolve().parts):
        if part.startswith(f"{kind}--"):
            return part.removeprefix(f"{kind}--").replace("--", "/", 1)
    return None


def _describe_objective(data_cfg: dict[str, Any]) -> str:
    objective = data_cfg["objective"]
    ratio = f"gap ratio {objective['gap_ratio_range'] if objective['stochastic'] else objective['gap_ratio']}"
    mlm = f", MLM {objective['mlm_probability']}" if objective["mlm_probability"] else ""
    intact = objective["intact_probability"] if "intact_probability" in objective else None  # older runs: none
    kept = f", {intact:.0%} of them left in the input" if intact else ""
    return f"{objective['strategy']} sentences, {ratio}{kept}{mlm}"


def _describe_base(base: str | None, base_id: str | None, *, converted: bool) -> str:
    if base is None:
        return "None: trained from random initialisation (dimensions in `config.json`)."
    if base_id is None:
        where = f"A local checkpoint (folder `{Path(base).name}`; its hub id: `callbacks.hf_export.base_model`)"
    elif _is_local(base):
        where = f"A local copy of [`{base_id}`](https://huggingface.co/{base_id})"
    else:
        where = f"[`{base_id}`](https://huggingface.co/{base_id})"
    return f"{where}, plain Pegasus converted to LSG-Pegasus at load time." if converted else f"{where}."


def _eval_results(
    task: str,
    data: DataDescription,
    data_cfg: dict[str, Any],
    rows: dict[str, SplitRows],
    validation: dict[str, float],
    test: dict[str, float],
) -> list[EvalResult]:
    """`model-index` entries, one per metric and split (the loss is in the card's table only); `dataset_args`
    carry the rows scored and the cap that chose them, so a capped score is never read as the split's."""
    results = []
    for split, card_split, metrics in (("val", "validation", validation), ("test", "test", test)):
        arguments = None
        if split in rows:
            arguments = {"rows": rows[split].used}
            if rows[split].cap_key is not None:
                arguments[rows[split].cap_key] = rows[split].cap
            if split == "val" and rows[split].held_out and not rows[split].loaded:
                arguments["held_out_from_train"] = data_cfg["val_fraction"]
        for key, value in sorted(metrics.items()):
            name = key.split("/", 1)[1]
            if name == "loss" or not _headline(name):
                continue
            results.append(EvalResult(
                task_type=task, dataset_type=data.hub_id or data.name, dataset_name=data.name,
                dataset_config=data_cfg["dataset_config"], dataset_split=card_split, dataset_args=arguments,
                metric_type=name, metric_name=f"{name} ({card_split})", metric_value=round(value, 4),
            ))  # fmt: skip
    return results


def _results_rows(validation: dict[str, float], test: dict[str, float]) -> list[tuple[str, str, str]]:
    """One row per headline metric, its 95% bootstrap interval beside it where one was logged."""
    names = sorted(name for name in {key.split("/", 1)[1] for key in (*validation, *test)} if _headline(name))
    return [(name, _with_interval(validation, f"val/{name}"), _with_interval(test, f"test/{name}")) for name in names]


def _headline(name: str) -> bool:
    """A metric of the results table: not an interval bound (beside its metric), a length bucket or a statistic."""
    return "/" not in name and not name.endswith(("_low", "_high"))


def _with_interval(metrics: dict[str, float], key: str) -> str:
    """`32.78 [31.02, 34.51]`: the value and its `_low` / `_high` bounds; `-` when not logged."""
    if f"{key}_low" not in metrics or key not in metrics:
        return _number(metrics.get(key))
    return f"{_number(metrics[key])} [{_number(metrics[f'{key}_low'])}, {_number(metrics[f'{key}_high'])}]"


def _tested_split(validation: dict[str, float], test: dict[str, float]) -> tuple[str, str, dict[str, float]]:
    """The split the card's evaluation tables describe: the test split, else the validation one."""
    return ("test", "test", test) if test else ("validation", "val", validation)


def _length_rows(validation: dict[str, float], test: dict[str, float], data_cfg: dict[str, Any]) -> dict | None:
    """The ROUGE-by-source-length table (`stage/len_{bucket}/...`), shortest bucket first; None without buckets."""
    split, stage, metrics = _tested_split(validation, test)
    buckets = sorted({key.split("/")[1] for key in metrics if key.startswith(f"{stage}/len_")}, key=_bucket_start)
    if not buckets:
        return None
    names = ("rouge1", "rouge2", "rougeLsum")
    rows = []
    for bucket in buckets:
        prefix = f"{stage}/{bucket}/"
        row = [
            bucket.removeprefix("len_"),
            *(str(round(metrics[prefix + count])) for count in ("documents", "truncated")),
        ]
        row += [_with_interval(metrics, f"{prefix}{name}") for name in names]
        row += [_number(metrics.get(f"{prefix}lead_{name}")) for name in names]
        rows.append(row)
    header = ["source tokens", "documents", "cut", *names, *(f"lead {name}" for name in names)]
    return {"split": split, "truncation": data_cfg["max_source_length"], "header": header, "rows": rows}


def _bucket_start(bucket: str) -> int:
    """`len_2k-4k` -> 2048 (`len_0-1k` -> 0): the buckets' order."""
    start = bucket.removeprefix("len_").split("-")[0].rstrip("+")
    return 0 if start == "0" else int(start.removesuffix("k")) * 1024


STATISTIC_ROWS = (STATISTICS[0], "tokens", *STATISTICS[1:])  # words, tokens, then the text statistics


def _statistics_rows(validation: dict[str, float], test: dict[str, float]) -> dict | None:
    """Mean (median) of each statistic (`stage/stats/{source}/{name}`) for the model, the lead and the references."""
    split, stage, metrics = _tested_split(validation, test)
    rows = []
    for name in STATISTIC_ROWS:
        cells = []
        for source in ("gen", "lead", "ref"):
            key = f"{stage}/stats/{source}/{name}"
            cells.append(f"{_number(metrics[key])} ({_number(metrics[f'{key}_median'])})" if key in metrics else "-")
        if any(cell != "-" for cell in cells):
            rows.append([name, *cells])
    return {"split": split, "rows": rows} if rows else None


def _figure_links(run_config: dict[str, Any]) -> str:
    """Markdown links (relative to the export folder) to the evaluation figures already drawn; empty: none."""
    callbacks = run_config["callbacks"]
    if not (callbacks.get("figures") and callbacks.get("hf_export")):  # entries a config can drop (`=null`) or lack
        return ""
    folder, export = Path(callbacks["figures"]["figures_dir"]), callbacks["hf_export"]["dirpath"]
    return ", ".join(f"[{path.name}]({os.path.relpath(path, export)})" for path in sorted(folder.glob("*.png")))


def _lead_baseline(validation: dict[str, float], test: dict[str, float]) -> dict[str, Any] | None:
    """The lead baseline logged by the ROUGE evaluation (`stage/lead_*`) beside the model's ROUGE, for the test split
    (the validation split when untested); None when neither has one."""
    for split, stage, metrics in (("test", "test", test), ("validation", "val", validation)):
        if f"{stage}/lead_words" not in metrics:
            continue
        names = sorted(key.split("/lead_", 1)[1] for key in metrics if key.startswith(f"{stage}/lead_rouge"))
        rows = [(name, _with_interval(metrics, f"{stage}/{name}"), _with_interval(metrics, f"{stage}/lead_{name}"))
                for name in names if _headline(name)]  # fmt: skip
        return {"split": split, "words": round(metrics[f"{stage}/lead_words"]), "rows": rows}
    return None


def _without_lead(metrics: dict[str, float]) -> dict[str, float]:
    """Without `stage/lead_*` (the lead baseline's own table); a length bucket keeps its lead column."""
    return {key: value for key, value in metrics.items() if not key.split("/", 1)[1].startswith("lead_")}


def _results_note(
    validation: dict[str, float], test: dict[str, float], untested: str | None, *, pretraining: bool = False
) -> str:
    notes = ["Metrics of the exported weights (ROUGE: F1 x 100, rouge-score with stemming; F1 and accuracy in 0-1),"
             " over the rows listed under Data."]  # fmt: skip
    if pretraining:
        notes.append("ROUGE here scores the generated gap sentences against the removed ones (the pretraining task),"
                     " not summaries: the card's metadata lists no results.")  # fmt: skip
    if not validation:
        notes.append("Its checkpoint recorded no validation metrics.")
    if not test:
        notes.append(f"The test set was not run: {untested or 'no test metrics were recorded'}.")
    return " ".join(notes)


def _generation_settings(generation: GenerationConfig | None) -> dict[str, Any] | None:
    if generation is None:
        return None
    return {key: value for key, value in sorted(generation.to_diff_dict().items()) if key not in METADATA_KEYS}


def _license(license: str | None, base: str | None, base_id: str | None) -> tuple[str, str]:
    """(hub license id, the card's sentence): the one given, else the base checkpoint's card's, else ours."""
    if license:
        return license, f"`{license}` (set by `callbacks.hf_export.license`)."
    if base is None:
        return DEFAULT_LICENSE, f"`{DEFAULT_LICENSE}`, lsgtrain's license (trained from scratch)."
    inherited = _base_license(base)
    if inherited:
        return inherited, f"`{inherited}`, the license of the base checkpoint {_shown(base, base_id)}."
    return DEFAULT_LICENSE, (
        f"`{DEFAULT_LICENSE}` (lsgtrain's default): the base checkpoint {_shown(base, base_id)} names no license in "
        "a model card that could be read here; check its terms, and set `callbacks.hf_export.license` if they differ."
    )


def _shown(base: str, base_id: str | None) -> str:
    """How the card names a base checkpoint: its hub id, else its folder's name (never a local path)."""
    return f"`{base_id}`" if base_id else f"(folder `{Path(base).name}`)"


def _base_license(base: str) -> str | None:
    """The `license` of the base checkpoint's model card (a local folder's `README.md`, or the hub's)."""
    readme = Path(base).expanduser() / "README.md" if _is_local(base) else base
    if isinstance(readme, Path) and not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception as error:  # offline, no network, no card: the caller says the license could not be read
        logger.warning("could not read the model card of %s (%s)", base, error)
        return None


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 1 else f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


__all__ = [
    "DataDescription",
    "build_model_card",
    "describe_data",
    "describe_hardware",
    "describe_telemetry",
    "hub_id_of",
    "portable_override",
    "reproduce_command",
    "write_model_card",
]
