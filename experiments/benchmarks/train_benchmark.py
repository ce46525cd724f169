"""Training-level costs: Lightning's overhead over a plain PyTorch loop, and padding waste with length grouping.

    python experiments/benchmarks/train_benchmark.py     # ~3 min on 2 cores

* Framework overhead: the embedded default's model (tiny LSG-Pegasus, d_model 128) and one fixed batch (4 x 2,048
  tokens), `--steps` optimizer steps of AdamW + linear schedule + gradient clipping, with a hand-written loop and
  through `SummarizationModule` + `lightning.Trainer` (timed per step from a callback, so start-up is excluded).
  Each loop runs in a fresh process, alternating plain / Lightning / plain / Lightning; the overhead compares the
  medians of all steps of each kind.
* Padding waste: the aclsum training papers tokenised at 4,096 and 16,384 tokens, batches of 4 padded to their
  longest document rounded up to a multiple of 64 (what the DataModule does), random batches vs length grouping.
Results go to `results/train.json` and `results/train.md`.
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


def tiny_model(vocab_size: int = 8000):
    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    torch.manual_seed(0)
    config = LSGPegasusConfig(
        vocab_size=vocab_size, d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, max_position_embeddings=2048,
        block_size=64, sparse_block_size=64, sparsity_factor=4, num_global_tokens=4, scale_embedding=True,
    )  # fmt: skip
    return LSGPegasusForConditionalGeneration(config)


def fixed_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, 8000, (4, 2048), generator=generator),
        "attention_mask": torch.ones(4, 2048, dtype=torch.long),
        "labels": torch.randint(5, 8000, (4, 200), generator=generator),
        "idx": torch.arange(4),
    }


def plain_loop(steps: int) -> list[float]:
    from transformers import get_linear_schedule_with_warmup

    model = tiny_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    batch = {k: v for k, v in fixed_batch().items() if k != "idx"}
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        labels = batch["labels"]
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels), use_cache=False,
        ).logits  # fmt: skip
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def lightning_loop(steps: int) -> list[float]:
    from functools import partial

    import lightning as L

    from lsgtrain.tasks.base import warmup_schedule
    from lsgtrain.tasks.summarization import SummarizationModule

    class StepTimer(L.Callback):
        def __init__(self):
            self.times, self._start = [], 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._start)

    module = SummarizationModule(
        model=tiny_model(), optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=partial(warmup_schedule, name="linear", warmup_ratio=0.1), weight_decay=0.01,
    )  # fmt: skip
    batch = fixed_batch()
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0, callbacks=[timer],
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return timer.times


def padding_waste(max_length: int, batch_size: int = 4, block: int = 64) -> dict[str, float]:
    from lsgtrain.data.aclsum import load_aclsum_split
    from lsgtrain.data.datamodule import LengthGroupedSampler
    from lsgtrain.data.tokenizer import cached_pegasus_tokenizer

    papers = load_aclsum_split("train")
    tokenizer = cached_pegasus_tokenizer(
        [f"{p['document']}\n{p['summary']}" for p in papers], 8000, Path("cache") / "tokenizers"
    )
    lengths = [
        len(ids)
        for ids in tokenizer([p["document"] for p in papers], truncation=True, max_length=max_length)["input_ids"]
    ]

    def waste(order: list[int]) -> float:
        padded = real = 0
        for k in range(0, len(order), batch_size):
            batch = [lengths[i] for i in order[k : k + batch_size]]
            width = -(-max(batch) // block) * block
            padded += width * len(batch)
            real += sum(batch)
        return 1 - real / padded

    random_orders = [
        torch.randperm(len(lengths), generator=torch.Generator().manual_seed(s)).tolist() for s in range(20)
    ]
    grouped = []
    for seed in range(20):
        grouped.append(
            waste(list(LengthGroupedSampler(lengths, batch_size=batch_size, num_replicas=1, rank=0, seed=seed)))
        )
    return {
        "random_batches": statistics.mean(waste(o) for o in random_orders),
        "length_grouped": statistics.mean(grouped),
        "documents": len(lengths),
        "truncated_at_max": sum(n == max_length for n in lengths),
    }


def run_loop(kind: str, steps: int, threads: int) -> list[float]:
    """Step times of one loop, in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, "--loop", kind, "--steps", str(steps), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--loop", choices=["plain", "lightning"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.loop:
        times = (plain_loop if args.loop == "plain" else lightning_loop)(args.steps)
        print(json.dumps(times[3:]))  # the first steps warm up allocator and kernels
        return

    steps = {"plain": [], "lightning": []}
    for kind in ("plain", "lightning", "plain", "lightning"):
        steps[kind] += run_loop(kind, args.steps, args.threads)
    plain, framework = statistics.median(steps["plain"]), statistics.median(steps["lightning"])
    waste = {length: padding_waste(length) for length in (4096, 16384)}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, {args.threads} threads"
    result = {"machine": machine, "plain_step_s": plain, "lightning_step_s": framework, "padding": waste}
    lines = [
        f"Machine: {machine}. Medians of {len(steps['plain'])} steps per loop, measured in one run.",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| plain PyTorch step (4 x 2,048 tokens, tiny LSG-Pegasus) | {plain * 1000:.0f} ms |",
        f"| Lightning step (`SummarizationModule` + `Trainer`) | {framework * 1000:.0f} ms |",
        f"| framework overhead | {100 * (framework / plain - 1):+.1f}% |",
    ]
    for length, w in waste.items():
        lines.append(
            f"| padding at {length:,} tokens ({w['truncated_at_max']} of {w['documents']} papers truncated): "
            f"random / length-grouped batches of 4 | {100 * w['random_batches']:.1f}% / "
            f"{100 * w['length_grouped']:.1f}% of tokens |"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "train.json").write_text(json.dumps(result, indent=2))
    (args.output / "train.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
