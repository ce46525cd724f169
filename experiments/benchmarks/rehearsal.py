"""Full-size rehearsal of the arXiv experiment (docs/performance.md), on the full-size hub stand-ins (568M
parameters, random weights, 96,103 ids; `python experiments/hub_standins.py HUB --size full`).

    python experiments/benchmarks/rehearsal.py HUB [--runs lsg_4096,converted_4096,lsg_16384] [--steps 2]
        [--batch-size 2] [--max-new-tokens N] [--activation-lengths 4096,8192] [--activation-precision bf16-mixed]

Runs (each in a fresh process, so that peak RSS is its own), all `experiment=arxiv_sum` as configured — 4,096 source
tokens and 512 target tokens, gradient checkpointing, AdamW lr 8e-5 with warm-up, bf16-mixed, beam search with 5
beams, length penalty 2, 128-512 new tokens — except for what a 2-core CPU needs:

* `effective_batch_size` = `data.batch_size` (2, or `--batch-size` where 2 does not fit in memory): one micro-batch
  per optimizer step instead of 16;
* one CPU process (`trainer.accelerator=cpu trainer.devices=1 trainer.strategy=auto`), `data.num_workers=0`, no
  checkpoint or export written (a 568M model's checkpoint with optimizer state is 6.8 GB);
* `data.max_samples=2`: `--steps` epochs of one batch (one optimizer step each), and after the last
  one the ROUGE callback generates summaries for the 2 validation documents; `--max-new-tokens` caps the generated
  length (and `min_new_tokens` with it) when the experiment's 128-512 tokens do not fit the time at hand.

`lsg_4096`: `model.pretrained=HUB/ccdv/lsg-pegasus-large-4096`; `converted_4096`: `model=pegasus_large_converted
model.convert_from=HUB/google/pegasus-large` (converted at load time to 4,096 positions); `lsg_16384`: the LSG
checkpoint extended to 16,384 tokens with `lsgtrain convert` (timed), then `data.max_source_length=16384` on a copy of
the arXiv stand-in (same files and layout) that keeps only the papers of at least 16,384 tokens, so that every
document fills the length. Each run records the real (non-padding) source tokens of every training and validation
document, and times every `generate` call of the ROUGE callback: seconds per summary and per new token.

Activation memory: forward + backward of the full model through the recipe's LightningModule (its training loss, as
`training_step` computes it: the cross-entropy of an fp32 copy of the logits), gradient checkpointing, the recipe's
attention dropout, bf16 autocast (`--activation-precision 32-true`: fp32, for CPUs without bf16 matrix units, where
bf16 matmuls run some 75x slower), 512 target tokens, at each `--activation-lengths` with batch 1 and 2, each in a
fresh process, every weight copied into the process's memory first; the difference between the peak anonymous resident
memory (`RssAnon`, sampled every 10 ms: not the mapped checkpoint's pages) of forward + backward with batch 2 and with
batch 1 is one sample's activations at that length (measured), fitted linearly in the length for the longer ones
(estimated). The GPU table adds them to 16 bytes per parameter (fp32 weights, gradients, AdamW moments), 2 bytes per
parameter of bf16 weight copies and 1.5 GB of CUDA context and workspace.

Results go to `results/rehearsal.json` and `results/rehearsal.md`.
"""

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lightning import Callback

RESULTS = Path(__file__).resolve().parent / "results"
LSG, PEGASUS, ARXIV = "ccdv/lsg-pegasus-large-4096", "google/pegasus-large", "ccdv/arxiv-summarization"
GPUS_GB = (24, 40, 80)
CUDA_OVERHEAD_GB = 1.5


class StepTimer(Callback):
    """Wall time of every training batch (= optimizer step here) and of the validation epoch (with generation), and
    the source tokens (padding excluded) of every training and validation document."""

    def __init__(self):
        self.steps: list[float] = []
        self.validation: float | None = None
        self.train_tokens: list[int] = []
        self.validation_tokens: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train_tokens += batch["attention_mask"].sum(1).tolist()
        self._step = time.perf_counter()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.validation_tokens += batch["attention_mask"].sum(1).tolist()

    def on_train_batch_end(self, *args) -> None:
        self.steps.append(time.perf_counter() - self._step)

    def on_validation_epoch_start(self, *args) -> None:
        self.validation_tokens = []  # the last validation epoch's (the one with generation)
        self._validation = time.perf_counter()

    def on_validation_epoch_end(self, *args) -> None:
        self.validation = time.perf_counter() - self._validation


def time_generation(calls: list[dict]) -> None:
    """Record the seconds, documents and new tokens of every `SummarizationModule.generate` call (the ROUGE
    callback's beam search) in `calls`."""
    from lsgtrain.tasks.summarization import SummarizationModule

    generate = SummarizationModule.generate

    def timed(module, batch, **overrides):
        started = time.perf_counter()
        output = generate(module, batch, **overrides)
        seconds = time.perf_counter() - started
        # the output starts with the decoder-start token
        calls.append({"seconds": seconds, "documents": output.shape[0], "new_tokens": output.shape[1] - 1})
        return output

    SummarizationModule.generate = timed


def long_document_copy(source: Path, target: Path, tokenizer_folder: Path, min_tokens: int) -> Path:
    """A copy of a summarization stand-in (parquet shards per config, README) keeping only the articles of at
    least `min_tokens` tokens."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.parquet"), dirs_exist_ok=True)
    for shard in sorted(source.rglob("*.parquet")):
        table = pq.read_table(shard)
        lengths = [len(ids) for ids in tokenizer(table.column("article").to_pylist()).input_ids]
        keep = [i for i, length in enumerate(lengths) if length >= min_tokens]
        pq.write_table(table.take(keep), target / shard.relative_to(source))
    return target


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def anonymous_mb() -> float:
    """The process's own resident allocations (`RssAnon`): not the pages of a mapped checkpoint file, which the
    kernel drops and maps back at will, so that RSS and its high-water mark move with the machine's memory pressure."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("RssAnon:")).split()[1]) / 1024


class AnonymousPeak:
    """The peak of `anonymous_mb` inside a `with` block, sampled every 10 ms by a thread (a peak held for less than
    that can be missed: a training step's activations and gradients are held for seconds)."""

    def __enter__(self) -> "AnonymousPeak":
        self.mb = anonymous_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.mb = max(self.mb, anonymous_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, anonymous_mb())


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- one training run ----------------------------------------------------------------------------------------------
def train_worker(hub: Path, run: str, steps: int, batch_size: int, max_new_tokens: int | None, work: Path) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from lsgtrain.modeling.convert import convert_checkpoint
    from lsgtrain.train import CONFIG_DIR, train

    result: dict = {"run": run}
    overrides = ["experiment=arxiv_sum", f"data.dataset_name={hub / ARXIV}"]
    if run == "lsg_4096":
        overrides.append(f"model.pretrained={hub / LSG}")
    elif run == "converted_4096":
        overrides += ["model=pegasus_large_converted", f"model.convert_from={hub / PEGASUS}"]
    elif run == "lsg_16384":
        started = time.perf_counter()
        convert_checkpoint(hub / LSG, work / "lsg-16384", max_sequence_length=16384, overwrite=True)
        result["convert_seconds"] = round(time.perf_counter() - started, 1)
        papers = long_document_copy(hub / ARXIV, work / "arxiv-16384", hub / LSG, 16384)
        overrides += [f"model.pretrained={work / 'lsg-16384'}", "data.max_source_length=16384",
                      f"data.dataset_name={papers}"]  # fmt: skip
    else:
        raise ValueError(f"unknown run {run!r}")
    overrides += [
        "trainer.accelerator=cpu", "trainer.devices=1", "++trainer.strategy=auto", "trainer.num_sanity_val_steps=0",
        f"effective_batch_size={batch_size}", f"data.batch_size={batch_size}", "data.num_workers=0",
        "data.max_samples=2", f"data.eval_batch_size={batch_size}", f"trainer.max_epochs={steps}",
        "++trainer.limit_train_batches=1", f"callbacks.rouge.every_n_epochs={steps}",
        "test=false", "logger=none", "callbacks.hf_export=null", "callbacks.model_checkpoint=null",
        "callbacks.step_checkpoint=null", "+callbacks.timer._target_=__main__.StepTimer",
    ]  # fmt: skip
    if max_new_tokens:
        overrides += [f"module.generation.max_new_tokens={max_new_tokens}",
                      f"module.generation.min_new_tokens={min(128, max_new_tokens)}"]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        for key in ("root_dir", "log_dir", "output_dir", "cache_dir"):
            cfg.paths[key] = str(work / run / key)
    generate_calls: list[dict] = []
    time_generation(generate_calls)
    started = time.perf_counter()
    metrics, objects = train(cfg)
    timer = next(c for c in objects["trainer"].callbacks if isinstance(c, StepTimer))
    generation = cfg.module.generation
    result.update({
        "overrides": overrides, "seconds_total": round(time.perf_counter() - started, 1),
        "parameters_m": round(objects["model"].num_parameters() / 1e6, 1),
        "source_tokens": cfg.data.max_source_length, "optimizer_steps": objects["trainer"].global_step,
        "batch_size": batch_size,
        "seconds_per_step": [round(s, 1) for s in timer.steps],
        "train_source_tokens": timer.train_tokens, "validation_source_tokens": timer.validation_tokens,
        "validation_seconds": round(timer.validation, 1) if timer.validation else None,
        "generate_calls": [{k: round(v, 1) for k, v in call.items()} for call in generate_calls],
        "seconds_per_summary": round(sum(c["seconds"] for c in generate_calls)
                                     / sum(c["documents"] for c in generate_calls), 1),
        "seconds_per_new_token": round(sum(c["seconds"] for c in generate_calls)
                                       / sum(c["documents"] * c["new_tokens"] for c in generate_calls), 2),
        "generation": {k: generation[k] for k in ("num_beams", "length_penalty", "min_new_tokens", "max_new_tokens")},
        "peak_rss_mb": round(peak_rss_mb()), "train_loss": metrics.get("train/loss"),
    })  # fmt: skip
    return result


# -- activation memory ------------------------------------------------------------------------------------------
def activation_worker(hub: Path, length: int, batch: int, work: Path, precision: str) -> dict:
    import contextlib

    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lsgtrain.modeling.convert import convert_checkpoint
    from lsgtrain.modeling.factory import build_model
    from lsgtrain.train import CONFIG_DIR

    checkpoint = hub / LSG
    if length > 4096:
        checkpoint = work / f"lsg-{length}"
        if not checkpoint.is_dir():
            convert_checkpoint(hub / LSG, checkpoint, max_sequence_length=length, overwrite=True)
    recipe = OmegaConf.load(Path(CONFIG_DIR) / "model" / "lsg_pegasus_large.yaml")  # the experiment's model keys
    model, tokenizer = build_model(task="seq2seq", max_source_length=length, lsg={}, pretrained=str(checkpoint),
                                   gradient_checkpointing=True, attention_dropout=recipe.attention_dropout)  # fmt: skip
    for tensor in [*model.parameters(), *model.buffers()]:  # resident now: a mapped checkpoint's pages would be
        tensor.data = tensor.data.clone()  # faulted in (and dropped) during the step, blurring the batch difference
    gc.collect()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        experiment = compose(config_name="train", overrides=["experiment=arxiv_sum"])
    module = instantiate(experiment.module, _convert_="all", model=model)  # the recipe's LightningModule and loss
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(200, len(tokenizer), (batch, length), generator=generator)
    labels = torch.randint(200, len(tokenizer), (batch, 512), generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    before = anonymous_mb()
    started = time.perf_counter()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    with AnonymousPeak() as peak:
        with autocast:
            loss = module.training_loss(inputs)  # training_step's loss: cross-entropy of an fp32 copy of the logits
        loss.backward()
    return {"length": length, "batch": batch, "anonymous_before_mb": round(before), "peak_anonymous_mb": round(peak.mb),
            "seconds": round(time.perf_counter() - started, 1), "parameters": model.num_parameters(),
            "through": "LightningModule.training_loss", "precision": precision}  # fmt: skip


def gpu_table(activations: list[dict]) -> dict:
    """Per-sample activation MB at each length (batch 2 - batch 1), a linear fit, and the largest batch per GPU."""
    by_length = {}
    for row in activations:
        by_length.setdefault(row["length"], {})[row["batch"]] = row["peak_anonymous_mb"]
    per_sample = {length: peaks[2] - peaks[1] for length, peaks in sorted(by_length.items()) if {1, 2} <= peaks.keys()}
    (l1, m1), (l2, m2) = list(per_sample.items())[:2]
    slope = (m2 - m1) / (l2 - l1)
    intercept = m1 - slope * l1
    parameters = activations[0]["parameters"]
    static_gb = parameters * 18 / 1e9 + CUDA_OVERHEAD_GB
    table = {}
    for length in sorted({*per_sample, 16384}):
        measured = length in per_sample  # else extrapolated linearly from the measured lengths
        sample_gb = (per_sample[length] if measured else intercept + slope * length) / 1024
        table[length] = {"sample_gb": round(sample_gb, 2), "measured": measured,
                         **{f"{gpu}GB": max(0, int((gpu - static_gb) // sample_gb)) for gpu in GPUS_GB}}  # fmt: skip
    return {"per_sample_mb": per_sample, "mb_per_token": round(slope, 4), "mb_intercept": round(intercept, 1),
            "static_gb": round(static_gb, 2), "max_batch": table}  # fmt: skip


# -- orchestration ------------------------------------------------------------------------------------------------
def in_fresh_process(args: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_results(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rehearsal.json").write_text(json.dumps(results, indent=2))
    lines = [f"Machine: {results['machine']}. {results['note']}", "",
             "| run | source tokens per document | s / optimizer step (batch) | s / summary (beams, new tokens) "
             "| s / new token | peak RSS |", "|---|---|---|---|---|---|"]  # fmt: skip
    for run in results["runs"]:
        steps = ", ".join(f"{s:.1f}" for s in run["seconds_per_step"])
        gen = run["generation"]
        summary = f"{run['seconds_per_summary']} ({gen['num_beams']}, {gen['min_new_tokens']}-{gen['max_new_tokens']})"
        steps += f" ({run['batch_size']})"
        documents = "train " + ", ".join(f"{n:,}" for n in dict.fromkeys(run["train_source_tokens"]))
        documents += "; validation " + ", ".join(f"{n:,}" for n in run["validation_source_tokens"])
        lines.append(f"| `{run['run']}` | {documents} | {steps} | {summary} | {run['seconds_per_new_token']} "
                     f"| {run['peak_rss_mb']:,} MB |")  # fmt: skip
    if results.get("activation"):
        table = results["activation"]
        header = " | ".join(f"max batch {gpu} GB" for gpu in GPUS_GB)
        precision = results["activation_rows"][0].get("precision", "bf16-mixed")
        lines += ["", f"Activation memory per sample (gradient checkpointing, {precision}, 512 target tokens): "
                  f"{table['mb_per_token']} MB per source token + {table['mb_intercept']} MB; static "
                  f"{table['static_gb']} GB.", "", f"| source tokens | GB per sample | {header} |",
                  "|---|---|" + "---|" * len(GPUS_GB)]  # fmt: skip
        for length, row in table["max_batch"].items():
            batches = " | ".join(str(row[f"{gpu}GB"]) for gpu in GPUS_GB)
            how = "measured" if row.get("measured") else "linear estimate"
            lines.append(f"| {int(length):,} | {row['sample_gb']} ({how}) | {batches} |")
    (RESULTS / "rehearsal.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hub", type=Path, help="folder written by experiments/hub_standins.py --size full")
    parser.add_argument("--runs", default="lsg_4096,converted_4096,lsg_16384")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="per optimizer step (the experiment's is 2)")
    parser.add_argument("--max-new-tokens", type=int, help="cap on generated tokens (default: the experiment's 512)")
    parser.add_argument("--activation-lengths", default="4096,8192", help="'' to skip the activation measurement")
    parser.add_argument("--activation-precision", choices=["bf16-mixed", "32-true"], default="bf16-mixed")
    parser.add_argument("--worker", choices=["train", "activation"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "train":
        run = train_worker(args.hub, args.runs, args.steps, args.batch_size, args.max_new_tokens, args.work)
        print(json.dumps(run))
        return
    if args.worker == "activation":
        print(json.dumps(activation_worker(args.hub, args.length, args.batch, args.work, args.activation_precision)))
        return

    work = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    try:
        measure(args, work)
    finally:  # converted checkpoints are 2.3 GB each
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    """Every run of `args.runs` in a fresh process, then the activation memory; results written after each."""
    note = (
        "experiment=arxiv_sum as configured, except effective_batch_size = the per-device batch (one micro-batch per "
        "optimizer step; the experiment's batch is 2), one CPU process, num_workers=0; each row gives its batch and "
        "its generation settings (beams, new tokens)"
    )
    # runs measured before (another invocation, other --steps) are kept unless measured again
    previous = json.loads((RESULTS / "rehearsal.json").read_text()) if (RESULTS / "rehearsal.json").is_file() else {}
    results = {**previous, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "note": note + "."}
    # runs of an older version of this script lack the per-document tokens and the generation timings
    results["runs"] = [run for run in results.get("runs", []) if "generate_calls" in run]
    for run in filter(None, args.runs.split(",")):
        options = ["--runs", run, "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--work", str(work)]
        if args.max_new_tokens:
            options += ["--max-new-tokens", str(args.max_new_tokens)]
        measured = in_fresh_process([str(args.hub), "--worker", "train", *options])
        results["runs"] = [r for r in results["runs"] if r["run"] != run] + [measured]
        write_results(results)
    lengths = [int(x) for x in args.activation_lengths.split(",") if x]
    if lengths:
        rows = [
            in_fresh_process([str(args.hub), "--worker", "activation", "--length", str(length), "--batch", str(batch),
                              "--work", str(work), "--activation-precision", args.activation_precision])
            for length in lengths
            for batch in (1, 2)
        ]  # fmt: skip
        results["activation_rows"] = rows
        results["activation"] = gpu_table(rows)
        write_results(results)


if __name__ == "__main__":
    main()
