"""LSG attention on a CUDA GPU: flex_attention vs the chunked path vs full attention, and whole-model training.

    python experiments/benchmarks/gpu_benchmark.py              # checks, attention, model: 4k-32k
    python experiments/benchmarks/gpu_benchmark.py --quick      # 4k and 16k only

1. Checks (fp32, then bf16): flex_attention's outputs and gradients (queries, keys, values) equal the chunked path's,
   for every sparsity type, with padding and 3 globals. Any mismatch stops the run.
2. One LSG attention call at Pegasus-large size (16 heads, head dim 64, block 128, sparse block 128, factor 2, norm,
   1 global), bf16, forward + backward, batch 1: the flex path, the chunked SDPA path, full attention (SDPA, flash
   backend), and FlashAttention-2 (`flash_attn`, where installed) over the same number of attended (query, key) pairs:
   a sliding window as wide as an LSG query's keys (g + 3 * 128 + 2 * 128 = 641). Median time of 10 runs, peak
   memory (`max_memory_allocated`).
3. Whole model: LSG-Pegasus-large (568M parameters, random weights) against plain Pegasus-large with full SDPA
   attention at the same length, bf16 autocast, AdamW, batch 1, summaries of 256 tokens, gradient checkpointing
   on, attention dropout 0 (flex) and 0.1 (the real checkpoints' value: chunked SDPA, which has dropout); training
   tokens/s (input tokens per second) over 5 steps after 2 warm-up steps.

4. With `--compile`: `module.compile=true`'s optimizer-step time compiled vs eager and the compile time, for the
   embedded default's model and a pegasus-large-width 2+2-layer model at 4,096 tokens (`compile_benchmark.py`'s
   `measure`, on CUDA under bf16 autocast): `results/gpu_compile.md`.
       python experiments/benchmarks/gpu_benchmark.py --compile --skip-attention --skip-model   # compile only

Results go to `results/gpu.json` and `results/gpu.md` (the GPU table of docs/performance.md), with the card's name.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
HEADS, HEAD_DIM = 16, 64
LENGTHS = (4096, 8192, 16384, 32768)


def lsg_config(**overrides):
    from lsgtrain.modeling import LSGPegasusConfig

    values = dict(
        d_model=HEADS * HEAD_DIM, encoder_attention_heads=HEADS, block_size=128, sparse_block_size=128,
        sparsity_factor=2, sparsity_type="norm", num_global_tokens=1,
    )  # fmt: skip
    return LSGPegasusConfig(**{**values, **overrides})


def with_path(path: str):
    """Context manager forcing the LSG attention onto `path` ("flex" or "chunked")."""
    from contextlib import contextmanager

    from lsgtrain.modeling import lsg_kernels

    @contextmanager
    def forced():  # the `sdpa` kernel takes flex on CUDA wherever `flex_applies`; "chunked" says it never does
        original = lsg_kernels.flex_applies
        if path == "chunked":
            lsg_kernels.flex_applies = lambda geometry, device: False
        try:
            yield
        finally:
            lsg_kernels.flex_applies = original

    return forced()


def check_gradients() -> list[str]:
    """flex vs chunked on CUDA: outputs and gradients, every sparsity type, fp32 and bf16."""
    from lsgtrain.modeling.configuration_lsg_pegasus import SPARSITY_TYPES
    from lsgtrain.modeling.lsg_attention import LSGBlockAttention

    report = []
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        for sparsity_type in SPARSITY_TYPES:
            attention = LSGBlockAttention(lsg_config(sparsity_type=sparsity_type, num_global_tokens=3)).cuda().eval()
            generator = torch.Generator(device="cuda").manual_seed(0)
            length = 3 + 16 * 128
            inputs = [torch.randn(2, HEADS, length, HEAD_DIM, device="cuda", generator=generator) for _ in range(3)]
            keep = torch.ones(2, length, dtype=torch.bool, device="cuda")
            keep[1, length - 300 :] = False
            results = {}
            for path in ("flex", "chunked"):
                leaves = [x.to(dtype).requires_grad_() for x in inputs]
                torch.manual_seed(1)
                with with_path(path):
                    out, _ = attention(*leaves, keep)
                out.float().square().mean().backward()
                results[path] = [out.detach().float()] + [x.grad.float() for x in leaves]
            worst = max((a - b).abs().max().item() for a, b in zip(results["flex"], results["chunked"], strict=True))
            line = f"{str(dtype)[6:]:>8} {sparsity_type:>12}: max |flex - chunked| over output and grads = {worst:.2e}"
            print(line, flush=True)
            report.append(line)
            if not worst <= tolerance:  # bf16 differences are reported; fp32 ones stop the run
                if dtype == torch.float32:
                    sys.exit(f"flex and chunked paths disagree: {line}")
                report[-1] += f" (above {tolerance})"
    return report


def timed(function, repeats: int = 10) -> tuple[float, float]:
    """Median seconds of `function()` and peak memory (GB) over `repeats` runs after 2 warm-ups."""
    for _ in range(2):
        function()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 1e9


def attention_row(length: int) -> dict:
    """fwd+bwd of one attention call per method at `length` tokens (bf16, batch 1)."""
    import torch.nn.functional as F

    from lsgtrain.modeling.lsg_attention import LSGBlockAttention

    attention = LSGBlockAttention(lsg_config()).cuda().eval()
    keys_per_query = 1 + 3 * 128 + 2 * 128

    def qkv(n):
        return [torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3)]  # fmt: skip

    keep = torch.ones(1, 1 + length, dtype=torch.bool, device="cuda")
    row = {}
    for path in ("flex", "chunked"):

        def lsg(path=path):
            with with_path(path):
                attention(*qkv(1 + length), keep)[0].sum().backward()

        row[f"lsg_{path}"] = timed(lsg)

    def full():
        F.scaled_dot_product_attention(*qkv(length)).sum().backward()

    try:
        row["sdpa_full"] = timed(full, repeats=3)
    except torch.OutOfMemoryError:
        row["sdpa_full"] = None
    try:
        from flash_attn import flash_attn_func

        half = keys_per_query // 2

        def window():
            q, k, v = (x.transpose(1, 2) for x in qkv(length))  # flash_attn takes [n, t, h, d]
            flash_attn_func(q, k, v, window_size=(half, half)).sum().backward()

        row["flash_window"] = timed(window)
    except ImportError:
        row["flash_window"] = None
    row["pairs"] = {"lsg": length * keys_per_query, "flash_window": length * (2 * (keys_per_query // 2) + 1)}
    return row


def model_row(length: int, steps: int = 5) -> dict:
    """Training tokens/s of LSG-Pegasus-large (attention dropout 0 and 0.1) and plain Pegasus-large at `length`."""
    from transformers import PegasusConfig, PegasusForConditionalGeneration

    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    large = dict(
        vocab_size=96103, d_model=1024, encoder_layers=16, decoder_layers=16, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=length,
        scale_embedding=True, dropout=0.1,
    )  # fmt: skip
    builds = {
        "lsg_dropout0": lambda: LSGPegasusForConditionalGeneration(lsg_config(**large, attention_dropout=0.0)),
        "lsg_dropout0.1": lambda: LSGPegasusForConditionalGeneration(lsg_config(**large, attention_dropout=0.1)),
        "pegasus_full_sdpa": lambda: PegasusForConditionalGeneration(
            PegasusConfig(**large, attention_dropout=0.1)
        ),  # transformers' default attention: SDPA
    }
    row = {}
    for name, build in builds.items():
        torch.manual_seed(0)
        model = build().cuda().train()
        model.gradient_checkpointing_enable()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        input_ids = torch.randint(5, 96103, (1, length), device="cuda")
        labels = torch.randint(5, 96103, (1, 256), device="cuda")

        def step(model=model, optimizer=optimizer, input_ids=input_ids, labels=labels):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        try:
            seconds, peak = timed(step, repeats=steps)
            row[name] = {"tokens_per_s": length / seconds, "peak_gb": peak}
        except torch.OutOfMemoryError:
            row[name] = None
        del model, optimizer
        torch.cuda.empty_cache()
    return row


def markdown(card: str, attention: dict, model: dict) -> str:
    lines = [f"GPU: {card}. bf16, batch 1, ratios from one run.", "",
             "| tokens | LSG flex fwd+bwd | LSG chunked | full SDPA (flash) | FlashAttention window, same pairs | "
             "flex per pair / FlashAttention per pair | flex peak memory |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip

    def cell(result):
        return "OOM" if result is None else f"{1e3 * result[0]:.1f} ms, {result[1]:.2f} GB"

    for length, row in attention.items():
        flex, flash = row["lsg_flex"], row["flash_window"]
        per_pair = (
            f"{(flex[0] / row['pairs']['lsg']) / (flash[0] / row['pairs']['flash_window']):.2f}x"
            if flash
            else "flash_attn not installed"
        )
        flash_cell = cell(flash) if flash else "not installed"
        lines.append(f"| {int(length):,} | {cell(flex)} | {cell(row['lsg_chunked'])} | {cell(row['sdpa_full'])} | "
                     f"{flash_cell} | {per_pair} | {flex[1]:.2f} GB |")  # fmt: skip
    lines += ["", "| tokens | LSG, attention dropout 0 (flex) | LSG, attention dropout 0.1 (chunked SDPA) | "
              "Pegasus full SDPA | LSG / full |", "|---|---|---|---|---|"]  # fmt: skip
    for length, row in model.items():

        def tps(result):
            return "OOM" if result is None else f"{result['tokens_per_s']:,.0f} tok/s ({result['peak_gb']:.1f} GB)"

        full = row["pegasus_full_sdpa"]
        ratio = (
            f"{row['lsg_dropout0']['tokens_per_s'] / full['tokens_per_s']:.2f}x"
            if full and row["lsg_dropout0"]
            else "full attention OOM"
        )
        lines.append(f"| {int(length):,} | {tps(row['lsg_dropout0'])} | {tps(row['lsg_dropout0.1'])} | "
                     f"{tps(full)} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def compile_table(card: str, steps: int, output: Path) -> None:
    """`module.compile` on this GPU: each model eager then compiled, in this process (dynamo keeps one cache per
    compiled object); writes `gpu_compile.json` / `gpu_compile.md`."""
    from compile_benchmark import SETUPS, measure, table  # this folder is on sys.path when run as a script

    results = {}
    for name in SETUPS:
        results[name] = {}
        for mode in ("eager", "compiled"):
            torch.cuda.reset_peak_memory_stats()
            results[name][mode] = measure(name, mode == "compiled", steps, device="cuda")
            results[name][mode]["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            print(name, mode, results[name][mode], flush=True)
            torch.cuda.empty_cache()
    machine = f"{card}, torch {torch.__version__}, bf16 autocast"
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu_compile.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    markdown_table = table(results, machine)
    (output / "gpu_compile.md").write_text(markdown_table + "\n")
    print(markdown_table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,096 and 16,384 tokens only")
    parser.add_argument("--skip-model", action="store_true", help="attention only (no whole-model training)")
    parser.add_argument("--skip-attention", action="store_true", help="no gradient checks and attention rows")
    parser.add_argument("--compile", action="store_true", help="also module.compile's compiled vs eager steps")
    parser.add_argument("--compile-steps", type=int, default=10, help="timed steps after the first (--compile)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_benchmark.py needs a CUDA GPU; on CPU use attention_benchmark.py and model_benchmark.py")
    card = torch.cuda.get_device_name()
    lengths = [4096, 16384] if args.quick else list(LENGTHS)
    if args.compile:
        compile_table(card, args.compile_steps, args.output)
        if args.skip_attention and args.skip_model:
            return  # nothing else measured: gpu.json / gpu.md keep their last full run
    checks = [] if args.skip_attention else check_gradients()
    attention = {}
    for length in [] if args.skip_attention else lengths:
        attention[length] = attention_row(length)
        print(length, attention[length], flush=True)
    model = {}
    if not args.skip_model:
        for length in (4096, 16384):
            model[length] = model_row(length)
            print(length, model[length], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {"card": card, "torch": torch.__version__, "checks": checks, "attention": attention, "model": model}
    (args.output / "gpu.json").write_text(json.dumps(payload, indent=2, default=str))
    table = markdown(card, attention, model)
    (args.output / "gpu.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
