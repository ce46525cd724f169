"""`module.compile=true` on CPU: optimizer-step time compiled vs eager, and the compile time.

    python experiments/benchmarks/compile_benchmark.py            # ~30-60 min on 2 busy cores
    python experiments/benchmarks/compile_benchmark.py --only default --steps 2

Two models, random weights, one fixed batch, a training step each time (forward, backward, AdamW step, as
`module.compile` runs them: `torch.compile(model, fullgraph=True, dynamic=False)`, the optimizer eager):
* `default`: the embedded default's model (`python train.py`: tiny LSG-Pegasus, d_model 128, 2+2 layers),
  batch 4 x 2,048 source tokens, 128 target tokens;
* `large_2+2`: pegasus-large's width (d_model 1024, 16 heads, FFN 4096, vocabulary 96,103) with 2 encoder and
  2 decoder layers, the LSG-4096 recipe's attention (block 128, sparse 128, factor 2, norm, 1 global), batch 1 x
  4,096 source tokens, 256 target tokens.
On CUDA (`gpu_benchmark.py --compile`, the same `measure`) the steps run under bf16 autocast, as `trainer=gpu` does.
Each (model, mode) runs in a fresh process, one run each: the first compiled step (compile + one step) is the
compile time; step times are the median of `--steps` steps after it (eager: after one warm-up step). The CPU is
whatever this machine has (shared with other jobs when measured: see the machine line). Writes
`results/compile_cpu.json` and prints the markdown table of docs/performance.md.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
LARGE_2_2 = dict(
    vocab_size=96103, d_model=1024, encoder_layers=2, decoder_layers=2, encoder_attention_heads=16,
    decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=4096,
    scale_embedding=True, block_size=128, sparse_block_size=128, sparsity_factor=2, sparsity_type="norm",
    num_global_tokens=1, attention_dropout=0.0,
)  # fmt: skip
SETUPS = {"default": (4, 2048, 128), "large_2+2": (1, 4096, 256)}  # batch, source tokens, target tokens


def build(name: str, device: str = "cpu"):
    """The model, its AdamW and one batch of `SETUPS[name]`."""
    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    torch.manual_seed(0)
    if name == "default":
        from train_benchmark import tiny_model  # the embedded default's dimensions, as train_benchmark.py builds it

        model = tiny_model()
    else:
        model = LSGPegasusForConditionalGeneration(LSGPegasusConfig(**LARGE_2_2))
    model = model.to(device).train()
    batch, source, target = SETUPS[name]
    vocab = model.config.vocab_size
    inputs = {
        "input_ids": torch.randint(5, vocab, (batch, source), device=device),
        "attention_mask": torch.ones(batch, source, dtype=torch.long, device=device),
        "labels": torch.randint(5, vocab, (batch, target), device=device),
    }
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5), inputs


def measure(name: str, compiled: bool, steps: int, device: str = "cpu") -> dict:
    """Seconds of the first step (compiled: compile + step), the median step after it, the losses."""
    model, optimizer, inputs = build(name, device)
    forward = torch.compile(model, fullgraph=True, dynamic=False) if compiled else model

    def step() -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):  # as trainer=gpu (bf16-mixed)
            loss = forward(**inputs, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def timed() -> tuple[float, float]:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, loss

    first, loss = timed()
    results = [timed() for _ in range(steps)]
    return {
        "first_step_s": first,
        "step_s": statistics.median(seconds for seconds, _ in results),
        "losses": [loss] + [value for _, value in results],
    }


def table(results: dict, machine: str) -> str:
    """Markdown: per model, eager and compiled step times, their ratio, and the compile time."""
    lines = [
        f"Machine: {machine}. One run each, median of the steps after the first.",
        "",
        "| model | eager step | compiled step | compiled / eager | compile time (first compiled step - eager step) |",
        "|---|---|---|---|---|",
    ]
    for name, row in results.items():
        eager, compiled = row["eager"], row["compiled"]
        compile_s = compiled["first_step_s"] - eager["step_s"]
        lines.append(f"| {name} | {eager['step_s']:.2f} s | {compiled['step_s']:.2f} s | "
                     f"{compiled['step_s'] / eager['step_s']:.2f}x | {compile_s:.0f} s |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SETUPS), help="one model only")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1] == "compiled", args.steps)))
        return
    results = {}
    for name in [args.only] if args.only else list(SETUPS):
        results[name] = {}
        for mode in ("eager", "compiled"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, mode, "--steps", str(args.steps)],
                capture_output=True, text=True, check=True, cwd=Path(__file__).parent,
            )  # fmt: skip
            results[name][mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(name, mode, results[name][mode], flush=True)
    load = os.getloadavg()[0]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at "
               f"the end (other jobs share the cores), torch {torch.__version__}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compile_cpu.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(table(results, machine))


if __name__ == "__main__":
    main()
