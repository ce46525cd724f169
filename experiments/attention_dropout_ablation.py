"""Does training without attention dropout lose anything? The embedded experiment (`python train.py`) with
`attention_dropout` 0 and 0.1 over several seeds, test and validation ROUGE side by side.

    python experiments/attention_dropout_ablation.py [--seeds 0,1,2] [--dropouts 0.0,0.1] [--root /tmp/ablation]

Why: google/pegasus-large and ccdv/lsg-pegasus-large-4096 ship `attention_dropout: 0.1`, but the fast attention
kernels (CPU flash attention, CUDA flex_attention) have no dropout, so training with it takes the slower
explicit-scores (CPU) or chunked SDPA (CUDA) path. The recipes set `model.attention_dropout: 0.0` on the strength of
this measurement (docs/training.md, "Attention dropout").

Each run is `python train.py seed=S run_name=adP_sS model.attention_dropout=P logger=csv` in its own process
under `--root` (about 5 minutes each on 2 cores); a run whose `run_summary.json` exists is reused, so an interrupted
ablation resumes. Writes `benchmarks/results/attention_dropout.{json,md}`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "benchmarks" / "results"
METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def run_summary(root: Path, dropout: str, seed: str) -> dict:
    """The run's `run_summary.json`, training it first if it is not there."""
    name = f"ad{dropout}_s{seed}"
    summary = root / "outputs" / "train" / "runs" / name / "run_summary.json"
    if not summary.is_file():
        env = {**os.environ, "LSGTRAIN_ROOT": str(root), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        command = [sys.executable, str(REPO / "train.py"), f"seed={seed}", f"run_name={name}",
                   f"model.attention_dropout={dropout}", "logger=csv"]  # fmt: skip
        subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())["metrics"]


def table(results: dict[str, dict[str, dict]]) -> str:
    """Mean and standard deviation over seeds of every metric, and each seed's test ROUGE-Lsum."""
    lines = ["| attention dropout | " + " | ".join(f"{split} {m}" for split in ("test", "val") for m in METRICS)
             + " | test rougeLsum per seed |", "|---|" + "---|" * (2 * len(METRICS) + 1)]  # fmt: skip
    for dropout, by_seed in results.items():
        cells = []
        for split in ("test", "val"):
            for metric in METRICS:
                values = [run[f"{split}/{metric}"] for run in by_seed.values()]
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
        seeds = ", ".join(f"{run['test/rougeLsum']:.2f}" for run in by_seed.values())
        lines.append(f"| {dropout} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dropouts", default="0.0,0.1")
    parser.add_argument("--root", type=Path, default=Path("/tmp/attention-dropout-ablation"))
    args = parser.parse_args()
    seeds = args.seeds.split(",")
    if len(seeds) < 2:
        parser.error("--seeds needs at least two seeds: the comparison is against the spread between seeds")
    results = {
        dropout: {seed: run_summary(args.root, dropout, seed) for seed in seeds} for dropout in args.dropouts.split(",")
    }
    note = (
        "`python train.py` (the default: aclsum, the shipped pretrained tiny LSG-Pegasus) with "
        f"`model.attention_dropout` set, seeds {args.seeds}; ROUGE F1 x 100, mean ± standard deviation over the seeds."
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attention_dropout.json").write_text(json.dumps({"note": note, "runs": results}, indent=2))
    (RESULTS / "attention_dropout.md").write_text(f"{note}\n\n{table(results)}\n")
    print(f"{note}\n\n{table(results)}")


if __name__ == "__main__":
    main()
