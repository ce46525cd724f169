"""One encoder self-attention layer at Pegasus-large size, forward + backward: LSG vs floor, full SDPA, BigBird, LED.

    python experiments/benchmarks/attention_benchmark.py            # all methods, 1k-16k tokens (~20 min on 2 cores)
    python experiments/benchmarks/attention_benchmark.py --quick    # 1k and 4k only

The plot needs matplotlib, the `bench` extra (`pip install -e '.[bench]'`).

Every (method, length) runs in a fresh process (fp32, `--threads` threads, batch 1) that reports the median
forward+backward time over a few repetitions and its peak RSS (the whole process, as `ru_maxrss`). The "floor" is
the layer's four projections without any attention: what no attention method can avoid. Results go to
`results/attention.json`, `results/attention.md` (the table in docs/performance.md) and
`results/attention.png`. Methods that cannot fit in memory are reported as skipped.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
D_MODEL, HEADS = 1024, 16
LSG_TYPES = ("norm", "none", "pooling", "lsh", "stride", "block_stride", "bos_pooling")
# `*_dropout`: attention dropout 0.1, as google/pegasus-large and ccdv/lsg-pegasus-large-4096 train with.
METHODS = ("floor", "sdpa", "sdpa_dropout", *(f"lsg_{t}" for t in LSG_TYPES), "lsg_norm_dropout", "bigbird", "led")
LENGTHS = (1024, 4096, 8192, 16384)
MEMORY_LIMIT_GB = 20  # a child asking for more is reported as out of memory


def build_layer(method: str, length: int):
    """Return `(module, make_inputs)` for one method; `make_inputs()` gives the forward's args with grad."""
    import torch
    from torch import nn

    hidden = lambda n: torch.randn(1, n, D_MODEL, requires_grad=True)  # noqa: E731
    if method in ("floor", "sdpa", "sdpa_dropout"):

        class Projections(nn.Module):
            def __init__(self):
                super().__init__()
                self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(D_MODEL, D_MODEL) for _ in range(4))

            def forward(self, x):
                shape = (1, x.shape[1], HEADS, D_MODEL // HEADS)
                q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
                if method.startswith("sdpa"):
                    dropout = 0.1 if method == "sdpa_dropout" else 0.0
                    context = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
                else:  # no attention: the projections alone
                    context = q + k + v
                return self.out_proj(context.transpose(1, 2).reshape(x.shape))

        return Projections(), lambda: (hidden(length),)
    if method.startswith("lsg_"):
        from lsgtrain.modeling import LSGPegasusConfig
        from lsgtrain.modeling.lsg_attention import LSGPegasusEncoderSelfAttention

        config = LSGPegasusConfig(
            d_model=D_MODEL, encoder_attention_heads=HEADS, block_size=128, sparse_block_size=128,
            sparsity_factor=2, sparsity_type=method[4:].removesuffix("_dropout"), num_global_tokens=1,
            attention_dropout=0.1 if method.endswith("_dropout") else 0.0,
        )  # fmt: skip
        keep = torch.ones(1, length + 1, dtype=torch.bool)
        return LSGPegasusEncoderSelfAttention(config), lambda: (hidden(length + 1), keep)
    if method == "bigbird":
        from transformers import BigBirdPegasusConfig
        from transformers.models.bigbird_pegasus.modeling_bigbird_pegasus import (
            BigBirdPegasusEncoder,
            BigBirdPegasusEncoderAttention,
        )

        config = BigBirdPegasusConfig(
            d_model=D_MODEL, encoder_attention_heads=HEADS, attention_type="block_sparse", block_size=64,
            num_random_blocks=3, max_position_embeddings=length,
        )  # fmt: skip
        layer = BigBirdPegasusEncoderAttention(config, seed=0)
        mask = torch.ones(1, length)
        blocked, band, from_mask, to_mask = BigBirdPegasusEncoder.create_masks_for_block_sparse_attn(mask, 64)
        return layer, lambda: (hidden(length), None, band, from_mask, to_mask, blocked, blocked)
    if method == "led":
        from transformers import LEDConfig
        from transformers.models.led.modeling_led import LEDEncoderAttention

        config = LEDConfig(d_model=D_MODEL, encoder_attention_heads=HEADS, attention_window=[1024])
        layer = LEDEncoderAttention(config, layer_id=0)
        zeros = torch.zeros(1, length)
        flags = torch.zeros(1, length, dtype=torch.bool)
        return layer, lambda: (hidden(length), zeros, flags, flags, False)
    raise ValueError(method)


def measure(method: str, length: int, repeats: int) -> dict:
    """Run in the child: time forward+backward, report peak RSS."""
    # Same imports in every child, so that peak RSS compares the layers and not the libraries loaded.
    import torch
    import transformers.models.bigbird_pegasus.modeling_bigbird_pegasus
    import transformers.models.led.modeling_led  # noqa: F401

    import lsgtrain.modeling  # noqa: F401

    torch.manual_seed(0)
    layer, make_inputs = build_layer(method, length)
    times = []
    for i in range(repeats + 1):  # the first run warms up
        inputs = make_inputs()
        start = time.perf_counter()
        out = layer(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
        if i:
            times.append(time.perf_counter() - start)
        del out, inputs
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(method: str, length: int, repeats: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--child", method, str(length), str(repeats), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        reason = "out of memory" if "memory" in tail[0].lower() or result.returncode in (-9, 137) else tail[0]
        return {"skipped": reason[:160]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def child_main(method: str, length: int, repeats: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    limit = MEMORY_LIMIT_GB * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        print(json.dumps(measure(method, length, repeats)))
    except (MemoryError, RuntimeError) as error:
        if "memory" in str(error).lower() or isinstance(error, MemoryError):
            print(f"out of memory: {str(error)[:120]}", file=sys.stderr)
            sys.exit(3)
        raise


def markdown(results: dict, lengths: list[int]) -> str:
    header = "| layer | " + " | ".join(f"{n:,} tokens: time / floor, / SDPA, peak RSS" for n in lengths) + " |"
    lines = [header, "|---|" + "---|" * len(lengths)]
    for method, row in results.items():
        cells = []
        for n in lengths:
            r = row.get(str(n), {})
            if "seconds" not in r:
                cells.append(f"skipped ({r.get('skipped', 'not run')})")
                continue
            floor = results["floor"][str(n)].get("seconds")
            sdpa = results["sdpa"][str(n)].get("seconds")
            ratio_sdpa = f"{r['seconds'] / sdpa:.2f}x" if sdpa else "-"
            cells.append(
                f"{r['seconds'] / floor:.2f}x, {ratio_sdpa}, {r['peak_rss_mb']:,.0f} MB ({r['seconds']:.2f} s)"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    for color, (method, row) in zip(colors, results.items(), strict=False):
        points = [(n, row[str(n)]) for n in lengths if "seconds" in row.get(str(n), {})]
        if not points:
            continue
        style = "-" if method.startswith("lsg_") else "--"
        xs = [n for n, _ in points]
        ax_time.plot(xs, [r["seconds"] for _, r in points], style, marker="o", label=method, color=color)
        ax_mem.plot(xs, [r["peak_rss_mb"] for _, r in points], style, marker="o", label=method, color=color)
    for ax, label in ((ax_time, "forward + backward (s)"), (ax_mem, "peak RSS (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=7)
    fig.suptitle(f"One encoder self-attention layer, d_model {D_MODEL}, {HEADS} heads, fp32, batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,024 and 4,096 tokens only")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true", help="redraw table and plot from the saved JSON")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, length, repeats, threads = args.child
        return child_main(method, int(length), int(repeats), int(threads))
    if importlib.util.find_spec("matplotlib") is None:  # the plot is drawn last: refuse before measuring
        sys.exit("attention_benchmark.py draws results/attention.png with matplotlib: pip install -e '.[bench]'")
    if args.replot:
        saved = json.loads((args.output / "attention.json").read_text())
        return write_outputs(saved["results"], saved["lengths"], saved["machine"], args.output)

    lengths = [1024, 4096] if args.quick else list(LENGTHS)
    methods = sorted(set(args.methods) | {"floor", "sdpa"}, key=METHODS.index)
    results: dict[str, dict] = {}
    for method in methods:
        results[method] = {}
        for n in lengths:
            repeats = args.repeats if n <= 4096 else max(1, args.repeats - 1)
            results[method][str(n)] = run_child(method, n, repeats, args.threads)
            print(f"{method:>18} {n:>6}: {results[method][str(n)]}", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, {args.threads} threads"
    write_outputs(results, lengths, machine, args.output)


def write_outputs(results: dict, lengths: list[int], machine: str, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "d_model": D_MODEL, "heads": HEADS, "lengths": lengths, "results": results}
    (output / "attention.json").write_text(json.dumps(payload, indent=2))
    table = markdown(results, lengths)
    (output / "attention.md").write_text(f"Machine: {machine}. Ratios from one run.\n\n{table}\n")
    plot(results, lengths, output / "attention.png")
    print(table)


if __name__ == "__main__":
    main()
