"""Whole-model figures at Pegasus-large dimensions: encoder forward+backward throughput and memory, generation time.

    python experiments/benchmarks/model_benchmark.py                 # ~10 min on 2 cores
    python experiments/benchmarks/model_benchmark.py --encoder-layers 16   # the full encoder depth (slow on CPU)

Each measurement runs in a fresh process (fp32, `--threads` threads, batch 1) and reports its peak RSS.
* encoder: LSG-Pegasus (block 128, sparse 128, factor 2, norm, 1 global) against plain Pegasus (full attention,
  SDPA) with d_model 1024, 16 heads, FFN 4096 and `--encoder-layers` layers, forward + backward at 4,096 and 16,384
  tokens: tokens per second and peak RSS.
* generation: the full-size LSG-Pegasus-large (16 + 16 layers, random weights) summarising a 4,096-token input,
  greedy and 4-beam, 64 new tokens.
Results go to `results/model.json` and `results/model.md`.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LARGE = dict(
    vocab_size=96103, d_model=1024, encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
    decoder_ffn_dim=4096, scale_embedding=True, dropout=0.0,
)  # fmt: skip
LSG = dict(block_size=128, sparse_block_size=128, sparsity_factor=2, sparsity_type="norm", num_global_tokens=1)


def encoder_step(kind: str, length: int, layers: int) -> dict:
    import torch
    from transformers import PegasusConfig
    from transformers.models.pegasus.modeling_pegasus import PegasusEncoder

    from lsgtrain.modeling import LSGPegasusConfig
    from lsgtrain.modeling.modeling_lsg_pegasus import LSGPegasusEncoder

    torch.manual_seed(0)
    dims = dict(LARGE, encoder_layers=layers, decoder_layers=1, max_position_embeddings=length)
    if kind == "lsg":
        encoder = LSGPegasusEncoder(LSGPegasusConfig(**dims, **LSG))
    else:
        encoder = PegasusEncoder(PegasusConfig(**dims, attn_implementation="sdpa"))
    encoder.train()
    input_ids = torch.randint(5, LARGE["vocab_size"], (1, length))
    times = []
    for i in range(2 if length > 4096 else 3):  # the first run warms up
        start = time.perf_counter()
        encoder(input_ids=input_ids).last_hidden_state.sum().backward()
        if i:
            times.append(time.perf_counter() - start)
    seconds = min(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "tokens_per_s": length / seconds, "peak_rss_mb": peak}


def generation(length: int, beams: int) -> dict:
    import torch

    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    torch.manual_seed(0)
    config = LSGPegasusConfig(**LARGE, **LSG, encoder_layers=16, decoder_layers=16, max_position_embeddings=length)
    model = LSGPegasusForConditionalGeneration(config).eval()
    input_ids = torch.randint(5, LARGE["vocab_size"], (1, length))
    with torch.no_grad():
        start = time.perf_counter()
        out = model.generate(input_ids, max_new_tokens=64, min_new_tokens=64, num_beams=beams, do_sample=False)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "new_tokens": out.shape[1] - 1, "peak_rss_mb": peak}


def run_child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"skipped": (result.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder-layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        what, *rest = args.child
        if what == "encoder":
            result = encoder_step(rest[0], int(rest[1]), int(rest[2]))
        else:
            result = generation(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    rows = {}
    for length in (4096, 16384):
        for kind in ("lsg", "pegasus"):
            rows[f"encoder {kind} {length}"] = run_child(
                ["encoder", kind, str(length), str(args.encoder_layers)], args.threads
            )
            print(f"encoder {kind} {length}: {rows[f'encoder {kind} {length}']}", flush=True)
    for beams in (1, 4):
        rows[f"generate 4096 beams={beams}"] = run_child(["generate", "4096", str(beams)], args.threads)
        print(f"generate beams={beams}: {rows[f'generate 4096 beams={beams}']}", flush=True)

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, {args.threads} threads"
    lines = [
        f"Machine: {machine}. Encoder: Pegasus-large dims (d_model 1024, 16 heads, FFN 4096), {args.encoder_layers} "
        "layers, forward + backward, batch 1. Generation: full 16+16-layer LSG-Pegasus-large, 64 new tokens.",
        "",
        "| measurement | time | throughput | peak RSS |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "seconds" not in r:
            lines.append(f"| {name} | skipped ({r.get('skipped')}) | | |")
        elif name.startswith("encoder"):
            lines.append(
                f"| {name} | {r['seconds']:.2f} s | {r['tokens_per_s']:,.0f} tokens/s | {r['peak_rss_mb']:,.0f} MB |"
            )
        else:
            lines.append(
                f"| {name} | {r['seconds']:.1f} s | {r['new_tokens'] / r['seconds']:.2f} new tokens/s "
                f"| {r['peak_rss_mb']:,.0f} MB |"
            )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "model.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (args.output / "model.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
