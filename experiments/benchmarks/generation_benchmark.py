"""Generation cost on CPU: LSG-Pegasus against plain Pegasus with the same weights and the same decoder.

    python experiments/benchmarks/generation_benchmark.py            # 4,096 input tokens, 4+4 layers (~10 min)
    python experiments/benchmarks/generation_benchmark.py --layers 16 --tokens 1024

Both models get identical weights (plain Pegasus = LSG-Pegasus without its global embeddings) at Pegasus-large width
(d_model 1024, 16 heads, FFN 4096, vocabulary 96,103), in fp32 and in bf16 weights. For greedy search and beam
search (4 beams) it reports the encoder's time and the decoding speed: new tokens per second of `generate` once the
encoder has run (`generate` time minus the encoder's, over `--new-tokens` forced new tokens). LSG changes only the
encoder and adds one position (the global token) to what cross-attention reads, so decoding speed should match.
Results go to `results/generation.json` and `results/generation.md`.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def build_models(layers: int, max_length: int):
    from transformers import PegasusConfig, PegasusForConditionalGeneration

    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    shape = dict(
        vocab_size=96103, d_model=1024, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=max_length,
        scale_embedding=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    lsg = LSGPegasusForConditionalGeneration(LSGPegasusConfig(**shape)).eval()
    plain = PegasusForConditionalGeneration(PegasusConfig(**shape)).eval()
    weights = {k: v for k, v in lsg.state_dict().items() if "global_embeddings" not in k}
    plain.load_state_dict(weights, strict=True)
    return {"lsg": lsg, "pegasus": plain}


def measure_pair(models: dict, input_ids, new_tokens: int, num_beams: int, repeats: int) -> dict:
    """Encoder time and decoding speed of each model, alternating the models on every repeat (after one warm-up
    run each), so that a busy machine slows both alike; medians."""
    attention_mask = torch.ones_like(input_ids)
    search = dict(num_beams=num_beams, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    times = {name: {"encoder": [], "generate": []} for name in models}
    with torch.no_grad():
        for repeat in range(repeats + 1):
            for name, model in models.items():
                start = time.perf_counter()
                model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
                middle = time.perf_counter()
                model.generate(input_ids, attention_mask=attention_mask, **search)
                end = time.perf_counter()
                if repeat:
                    times[name]["encoder"].append(middle - start)
                    times[name]["generate"].append(end - middle)
    results = {}
    for name, measured in times.items():
        encoder, total = statistics.median(measured["encoder"]), statistics.median(measured["generate"])
        results[name] = {"encoder_s": encoder, "generate_s": total, "new_tokens_per_s": new_tokens / (total - encoder)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096, help="input tokens (a multiple of 128)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4, help="encoder and decoder layers (Pegasus-large: 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = build_models(args.layers, args.tokens)
    input_ids = torch.randint(5, 96103, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for model in models.values():
            model.to(dtype)
        for beams in (1, 4):
            setting = f"{str(dtype)[6:]} {'greedy' if beams == 1 else f'beam {beams}'}"
            for name, result in measure_pair(models, input_ids, args.new_tokens, beams, args.repeats).items():
                results[f"{name} {setting}"] = result
                print(name, setting, result, flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, {args.threads} threads"
    lines = [
        f"Machine: {machine}. {args.tokens:,} input tokens, {args.new_tokens} new tokens, {args.layers}+{args.layers} "
        "layers at Pegasus-large width, batch 1, ratios from one run.",
        "",
        "| weights, search | LSG encoder | Pegasus encoder | LSG new tokens/s | Pegasus new tokens/s | LSG / Pegasus |",
        "|---|---|---|---|---|---|",
    ]
    for key in results:
        if not key.startswith("lsg"):
            continue
        lsg, plain = results[key], results[key.replace("lsg", "pegasus", 1)]
        lines.append(
            f"| {key[4:]} | {lsg['encoder_s']:.2f} s | {plain['encoder_s']:.2f} s | {lsg['new_tokens_per_s']:.1f} | "
            f"{plain['new_tokens_per_s']:.1f} | {lsg['new_tokens_per_s'] / plain['new_tokens_per_s']:.2f}x |"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, **vars(args), "output": str(args.output), "results": results}
    (args.output / "generation.json").write_text(json.dumps(payload, indent=2))
    (args.output / "generation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
