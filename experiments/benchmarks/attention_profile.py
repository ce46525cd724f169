"""Where the time of one LSG attention layer goes: torch.profiler over forward + backward, grouped by operator.

    python experiments/benchmarks/attention_profile.py                      # lsg_norm at 16,384 tokens, 2 threads
    python experiments/benchmarks/attention_profile.py --method lsg_norm_dropout --length 4096

Same layer as `attention_benchmark.py` (Pegasus-large width, fp32, batch 1). Profiles `--repeats` forward+backward
passes after one warm-up, of the LSG layer and of the floor (the four projections, no attention), in this process,
and writes `results/profile_<method>_<length>.md`: the self CPU time of each operator, per pass, and the groups
that explain the time above the floor (flash kernels, explicit scores, gathers, gradient scatters, copies, fills).
"""

import argparse
import time
from pathlib import Path

import torch
from attention_benchmark import METHODS, RESULTS, build_layer
from torch.profiler import ProfilerActivity, profile

# operator name -> group; the first matching prefix wins
GROUPS = (
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "flash attention backward (CPU kernel)"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "flash attention forward (CPU kernel)"),
    ("aten::addmm", "projections (linear layers)"),
    ("aten::mm", "projections (linear layers)"),
    ("aten::bmm", "explicit scores (global rows; dropout chunks)"),
    ("aten::baddbmm", "explicit scores (global rows; dropout chunks)"),
    ("aten::index_select", "gathers of keys and values"),
    ("aten::gather", "gathers of keys and values"),
    ("aten::index_add_", "gradient scatters"),
    ("aten::scatter_add_", "gradient scatters"),
    ("aten::copy_", "copies (chunk rows in and out, layouts)"),
    ("aten::clone", "copies (chunk rows in and out, layouts)"),
    ("aten::cat", "copies (chunk rows in and out, layouts)"),
    ("aten::zero_", "zero fills (gradient buffers)"),
    ("aten::fill_", "zero fills (gradient buffers)"),
)


def group_of(name: str) -> str:
    return next((group for prefix, group in GROUPS if name == prefix), "other")


def profile_pass(method: str, length: int, repeats: int) -> tuple[float, dict[str, float]]:
    """Wall seconds per forward+backward and self CPU seconds per operator per pass, under the profiler."""
    torch.manual_seed(0)
    layer, make_inputs = build_layer(method, length)

    def run(inputs):
        out = layer(*inputs)
        (out[0] if isinstance(out, tuple) else out).sum().backward()

    run(make_inputs())  # warm-up
    inputs = [make_inputs() for _ in range(repeats)]  # drawn outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for pass_inputs in inputs:
            run(pass_inputs)
        wall = (time.perf_counter() - start) / repeats
    ops = {event.key: event.self_cpu_time_total / 1e6 / repeats for event in prof.key_averages()}
    return wall, ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="lsg_norm", choices=[m for m in METHODS if m.startswith("lsg_")])
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    floor_wall, floor_ops = profile_pass("floor", args.length, args.repeats)
    wall, ops = profile_pass(args.method, args.length, args.repeats)
    groups: dict[str, float] = {}
    for name, seconds in ops.items():
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + seconds
    floor_projections = sum(s for name, s in floor_ops.items() if group_of(name) == "projections (linear layers)")
    lines = [
        f"`{args.method}`, {args.length:,} tokens, {args.threads} threads, fp32, forward + backward, "
        f"{args.repeats} profiled passes after a warm-up (profiler on: times are a little above the benchmark's).",
        "",
        f"Wall time per pass: **{wall:.2f} s**, floor (projections only, same run) {floor_wall:.2f} s: "
        f"**{wall / floor_wall:.2f}x** the floor.",
        "",
        "| group | self CPU s / pass | share of the pass | / floor's wall time |",
        "|---|---|---|---|",
    ]
    total = sum(groups.values())
    for group, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        lines.append(f"| {group} | {seconds:.3f} | {seconds / total:.0%} | {seconds / floor_wall:.2f}x |")
    lines += [
        "",
        f"The floor's own projections: {floor_projections:.3f} s of self CPU time per pass.",
        "",
        "| operator | self CPU s / pass |",
        "|---|---|",
    ]
    for name, seconds in sorted(ops.items(), key=lambda item: -item[1])[:15]:
        lines.append(f"| `{name}` | {seconds:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (Path(RESULTS) / f"profile_{args.method}_{args.length}.md").write_text(text)


if __name__ == "__main__":
    main()
