"""Beam search at full size and 16,384 source tokens: lsgtrain's cache reorder against transformers' default.

    python experiments/benchmarks/beam_reorder_check.py HUB [--new-tokens 24]   # HUB: hub_standins.py --size full

The full-size LSG stand-in converted to 16,384 positions decodes one random 16,384-token document with 5 beams,
length penalty 2 and bf16 autocast (the arXiv recipe's search), once with `_reorder_cache` (only the decoder's
self-attention cache is reordered) and once with it removed (transformers also reorders the cross-attention cache),
each in a fresh process. Prints seconds per new token (generate minus the encoder) and peak RSS.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def measure(checkpoint: Path, mode: str, new_tokens: int) -> dict:
    from lsgtrain.modeling import LSGPegasusForConditionalGeneration

    torch.set_num_threads(2)
    model = LSGPegasusForConditionalGeneration.from_pretrained(checkpoint, attention_dropout=0.0).eval()
    if mode == "full":
        del LSGPegasusForConditionalGeneration._reorder_cache  # generate falls back to cache.reorder_cache
    ids = torch.randint(200, model.config.vocab_size, (1, 16384), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        started = time.perf_counter()
        model.get_encoder()(input_ids=ids)
        encoder = time.perf_counter() - started
        started = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=5, length_penalty=2.0,
                       min_new_tokens=new_tokens, max_new_tokens=new_tokens)  # fmt: skip
        total = time.perf_counter() - started
    return {"mode": mode, "encoder_s": round(encoder, 1), "generate_s": round(total, 1),
            "s_per_new_token": round((total - encoder) / new_tokens, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hub", type=Path)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # checkpoint, mode
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(Path(args.worker[0]), args.worker[1], args.new_tokens)))
        return
    from lsgtrain.modeling.convert import convert_checkpoint

    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(work) / "lsg-16384"
        convert_checkpoint(args.hub / "ccdv/lsg-pegasus-large-4096", checkpoint, max_sequence_length=16384)
        for mode in ("lsgtrain", "full"):
            command = [sys.executable, __file__, str(args.hub), "--new-tokens", str(args.new_tokens),
                       "--worker", str(checkpoint), mode]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
