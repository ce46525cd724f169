"""Cost of each source length (docs/performance.md "Cost of each length"): training steps of the full-size
stand-ins (random weights; `python experiments/hub_standins.py HUB --size full`) at 4,096, 8,192 and 16,384 source
tokens, LSG-Pegasus-large against plain Pegasus with full attention.

    python experiments/benchmarks/length_cost.py HUB [--models lsg,pegasus] [--lengths 4096,8192,16384]
        [--target-length 256] [--steps 2] [--memory-limit-gb 20] [--timeout 900]

Each (model, length) runs in a fresh process, so that its peaks are its own: batch 1 of random ids filling the length
and `--target-length` random target ids, gradient checkpointing, attention dropout 0 (the recipe's
`conf/model/lsg_pegasus_large.yaml`), fp32 (`trainer=cpu`'s precision), sdpa, and the project's Adafactor
(`conf/module/optimizer/adafactor.yaml`, as `module/optimizer=adafactor` builds it); `--steps` optimizer steps,
each timed, wall and CPU seconds (the first allocates Adafactor's state and gradients). Memory: the peak RSS of the
whole process (loading included) and the peak of the steps above the memory after loading (anonymous resident
memory, `RssAnon`, sampled every 10 ms). transformers maps the checkpoint file (`torch.load(mmap=True)`), whose pages
the kernel drops and maps back with the machine's memory pressure: every weight is copied into the process's own
memory before "loaded" is read, and only anonymous memory is counted. The steps' peak above loading is gradients +
Adafactor's state and temporaries + activations, and its growth with the length is activation memory (per extra 1,000
tokens).

`lsg`: `HUB/ccdv/lsg-pegasus-large-4096`, its position tables extended to the length by `build_model` (as
`data.max_source_length` does). `pegasus`: `HUB/google/pegasus-large` (full attention in every layer) with
`max_position_embeddings` = the length (its tables are sinusoidal: computed, not trained, hence frozen as lsgtrain
freezes them). A process that runs out of `--memory-limit-gb` of address space (`RLIMIT_AS`) is reported as not
fitting; one that runs past `--timeout` keeps the steps it finished.

Results are merged into `results/length_cost.json` (rows measured again replace the old ones; `--results` another
folder) and `results/length_cost.md`.
"""

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from rehearsal import LSG, PEGASUS, RESULTS, AnonymousPeak, anonymous_mb, peak_rss_mb


def load_model(hub: Path, model: str, length: int, target_length: int):
    """The model of `model` (`lsg` or `pegasus`) with position tables for `length` source tokens, gradient
    checkpointing and the recipe's attention dropout; returns it and its vocabulary size."""
    from omegaconf import OmegaConf

    from lsgtrain.train import CONFIG_DIR

    recipe = OmegaConf.load(Path(CONFIG_DIR) / "model" / "lsg_pegasus_large.yaml")
    if model == "lsg":
        from lsgtrain.modeling.factory import build_model

        network, tokenizer = build_model(task="seq2seq", max_source_length=length, max_target_length=target_length,
                                         lsg={}, pretrained=str(hub / LSG), gradient_checkpointing=True,
                                         attention_dropout=recipe.attention_dropout)  # fmt: skip
        return network, len(tokenizer)
    if model == "pegasus":
        from transformers import PegasusForConditionalGeneration

        network = PegasusForConditionalGeneration.from_pretrained(
            hub / PEGASUS, max_position_embeddings=max(length, target_length),
            attention_dropout=recipe.attention_dropout, attn_implementation="sdpa",
        )  # fmt: skip
        for name, parameter in network.named_parameters():
            if name.endswith("embed_positions.weight"):
                parameter.requires_grad_(False)
        network.gradient_checkpointing_enable()
        return network, network.config.vocab_size
    raise ValueError(f"--models: unknown model {model!r}; choose lsg or pegasus")


def adafactor(parameters: list):
    """The project's Adafactor, built from its YAML as `module/optimizer=adafactor` does."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lsgtrain.train import CONFIG_DIR

    return instantiate(OmegaConf.load(Path(CONFIG_DIR) / "module" / "optimizer" / "adafactor.yaml"))(parameters)


def step_worker(hub: Path, model: str, length: int, target_length: int, steps: int, memory_limit_gb: float) -> None:
    """Print one JSON line after loading and after every step (the parent keeps the last one, also on a timeout)."""
    limit = int(memory_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    row: dict = {"model": model, "length": length, "target_length": target_length, "fits": True, "steps": [],
                 "pid": os.getpid()}  # fmt: skip
    try:
        import torch

        started = time.perf_counter()
        network, vocabulary = load_model(hub, model, length, target_length)
        for tensor in [*network.parameters(), *network.buffers()]:  # resident now: the mapped file's pages go
            tensor.data = tensor.data.clone()
        gc.collect()
        network.train()
        optimizer = adafactor([p for p in network.parameters() if p.requires_grad])
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(200, vocabulary, (1, length), generator=generator)
        labels = torch.randint(200, vocabulary, (1, target_length), generator=generator)
        row.update(load_seconds=round(time.perf_counter() - started, 1), parameters=network.num_parameters(),
                   rss_loaded_mb=round(anonymous_mb()), threads=torch.get_num_threads())  # fmt: skip
        print(json.dumps(row), flush=True)
        for _ in range(steps):
            started, cpu = time.perf_counter(), time.process_time()
            with AnonymousPeak() as peak:
                loss = network(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            row["steps"].append(round(time.perf_counter() - started, 2))
            row.setdefault("cpu_seconds", []).append(round(time.process_time() - cpu, 1))  # all threads: contention
            row["steps_peak_mb"] = max(row.get("steps_peak_mb", 0), round(peak.mb))
            row["peak_above_loaded_mb"] = row["steps_peak_mb"] - row["rss_loaded_mb"]
            row["peak_rss_mb"] = round(peak_rss_mb())
            print(json.dumps(row), flush=True)
    except (MemoryError, RuntimeError) as error:  # RLIMIT_AS: "DefaultCPUAllocator: can't allocate memory"
        if not isinstance(error, MemoryError) and "allocate" not in str(error):
            raise
        row.update(fits=False, error=str(error).splitlines()[0][:300], peak_rss_mb=round(peak_rss_mb()))
        print(json.dumps(row), flush=True)


def measure_one(args: argparse.Namespace, model: str, length: int) -> dict:
    """One (model, length) in a fresh process; the last row it printed, with how it ended."""
    command = [sys.executable, __file__, str(args.hub), "--worker", "--models", model, "--lengths", str(length),
               "--target-length", str(args.target_length), "--steps", str(args.steps),
               "--memory-limit-gb", str(args.memory_limit_gb)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
        stdout, ended = done.stdout, "finished" if done.returncode == 0 else f"exit {done.returncode}"
        stderr = done.stderr
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        stderr, ended = "", f"stopped after the {args.timeout} s time limit"
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{model} at {length} tokens printed no result ({ended}):\n{stderr[-3000:]}")
    row = json.loads(lines[-1])
    row.update(ended=ended, process_seconds=round(time.perf_counter() - started, 1))
    return row


def summarise(rows: list[dict]) -> dict:
    """Ratios to the shortest length of each model, and the activation memory per extra 1,000 tokens (the growth of
    the steps' peak above loading between the shortest and each longer length)."""
    summary = {}
    for model in dict.fromkeys(row["model"] for row in rows):
        measured = sorted(
            (r for r in rows if r["model"] == model and r["fits"] and r["steps"]), key=lambda r: r["length"]
        )
        if not measured:
            continue
        base = measured[0]
        summary[model] = {
            row["length"]: {
                "step_ratio": [round(t / b, 2) if b else None
                               for t, b in zip(row["steps"], base["steps"], strict=False)],
                "memory_ratio": round(row["peak_above_loaded_mb"] / base["peak_above_loaded_mb"], 2),
                "mb_per_1k_tokens": round((row["peak_above_loaded_mb"] - base["peak_above_loaded_mb"])
                                          / (row["length"] - base["length"]) * 1000, 1)
                if row["length"] > base["length"] else None,
            }
            for row in measured
        }  # fmt: skip
    return summary


def write_results(results: dict, folder: Path) -> None:
    """`length_cost.json` and the table `length_cost.md` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "length_cost.json").write_text(json.dumps(results, indent=2))
    lines = [f"Machine: {results['machine']}. {results['note']}", "",
             "| model | source tokens | s / step (1st, 2nd) | x shortest (last step) | peak RSS "
             "| steps' peak above loaded | x shortest | activation MB per extra 1k tokens | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in sorted(results["rows"], key=lambda r: (r["model"] != "lsg", r["length"])):
        ratios = results["summary"].get(row["model"], {}).get(row["length"])
        if not row["fits"]:
            lines.append(f"| {row['model']} | {row['length']:,} | did not fit in {results['memory_limit_gb']} GB "
                         f"({row['error']}) | | {row['peak_rss_mb']:,} MB | | | | {row['load_average']} |")  # fmt: skip
            continue
        steps = ", ".join(f"{s:.1f}" for s in row["steps"])
        if row["ended"] != "finished":
            steps += f" ({row['ended']})"
        if not row["steps"]:
            lines.append(f"| {row['model']} | {row['length']:,} | no step finished{steps} | | | | | "
                         f"| {row['load_average']} |")  # fmt: skip
            continue
        per_1k = ratios["mb_per_1k_tokens"] if ratios else None
        lines.append(
            f"| {row['model']} | {row['length']:,} | {steps} | {ratios['step_ratio'][-1] if ratios else ''} "
            f"| {row['peak_rss_mb']:,} MB | {row['peak_above_loaded_mb']:,} MB "
            f"| {ratios['memory_ratio'] if ratios else ''} | {per_1k if per_1k is not None else ''} "
            f"| {row['load_average']} |"
        )
    (folder / "length_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hub", type=Path, help="folder written by experiments/hub_standins.py --size full")
    parser.add_argument("--models", default="lsg,pegasus")
    parser.add_argument("--lengths", default="4096,8192,16384")
    parser.add_argument("--target-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--memory-limit-gb", type=float, default=20, help="address space of each process")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per process")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of length_cost.json and .md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    lengths = [int(x) for x in args.lengths.split(",") if x]
    unknown = set(models) - {"lsg", "pegasus"}
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; choose from lsg, pegasus")
    if args.worker:
        step_worker(args.hub, models[0], lengths[0], args.target_length, args.steps, args.memory_limit_gb)
        return
    saved = args.results / "length_cost.json"
    previous = json.loads(saved.read_text()) if saved.is_file() else {"rows": []}
    note = (f"Batch 1, {args.target_length} target tokens, gradient checkpointing, fp32, sdpa, attention dropout 0, "
            f"Adafactor (conf/module/optimizer/adafactor.yaml), random weights; OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; one run each, on a shared machine (load average: the "
            "1-minute average when the row started)")  # fmt: skip
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "note": note + ".",
               "memory_limit_gb": args.memory_limit_gb, "rows": previous["rows"]}  # fmt: skip
    for model in models:
        for length in lengths:
            load_average = round(os.getloadavg()[0], 2)
            row = {**measure_one(args, model, length), "load_average": load_average}
            results["rows"] = [r for r in results["rows"] if (r["model"], r["length"]) != (model, length)] + [row]
            results["summary"] = summarise(results["rows"])
            write_results(results, args.results)


if __name__ == "__main__":
    main()
