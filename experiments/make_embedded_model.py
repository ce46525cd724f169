"""Make the embedded pretrained model again: gap-sentence pretraining of the tiny LSG-Pegasus (experiment
`aclsum_pretrain`, the bodies of the aclsum training papers), then its export copied into the package.

    python experiments/make_embedded_model.py [--root /tmp/embedded] [override ...]

Runs `python train.py experiment=aclsum_pretrain run_name=aclsum_tiny logger=csv [override ...]` under `--root`
(a run that finished is reused), copies the exported weights, config, generation settings, tokenizer and model
card to `src/lsgtrain/pretrained/aclsum_tiny/` (not the modeling `.py` files: lsgtrain loads the folder with its own
classes), and writes `pretraining.json` there: the run's wall time, steps, validation metrics and the training loss
curve (mean train/loss per 50 steps), the figures docs/training.md reports.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "src" / "lsgtrain" / "pretrained" / "aclsum_tiny"
RUN = "aclsum_tiny"
SHIPPED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "README.md")  # fmt: skip


def loss_curve(metrics_csv: Path, every: int = 50) -> list[dict[str, float]]:
    """Mean logged `train/loss` per `every` optimizer steps, and each validation's loss and ROUGE."""
    rows = list(csv.DictReader(metrics_csv.open()))
    curve: dict[int, list[float]] = {}
    for row in rows:
        if row.get("train/loss"):
            curve.setdefault(int(row["step"]) // every, []).append(float(row["train/loss"]))
    points = [{"steps": (k + 1) * every, "train_loss": round(sum(v) / len(v), 3)} for k, v in sorted(curve.items())]
    validations = [
        {"step": int(row["step"]), **{k: round(float(v), 3) for k, v in row.items() if k.startswith("val/") and v}}
        for row in rows
        if row.get("val/loss")
    ]
    return points + validations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO / "outputs_embedded", help="where the run is written")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pretraining run")
    args = parser.parse_args()
    run_dir = args.root / "outputs" / "aclsum_pretrain" / "runs" / RUN
    if not (run_dir / "run_summary.json").is_file():
        env = {**os.environ, "LSGTRAIN_ROOT": str(args.root), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        command = [sys.executable, str(REPO / "train.py"), "experiment=aclsum_pretrain", f"run_name={RUN}",
                   "logger=csv", *args.overrides]  # fmt: skip
        subprocess.run(command, cwd=REPO, env=env, check=True)
    summary = json.loads((run_dir / "run_summary.json").read_text())
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        if (run_dir / "hf_model" / name).is_file():
            shutil.copy2(run_dir / "hf_model" / name, TARGET / name)
    record = {
        "command": " ".join(["python experiments/make_embedded_model.py", *args.overrides]),
        "seconds": summary["seconds"],
        "optimizer_steps": summary["global_step"],
        "epochs": summary["epochs"],
        "metrics": summary["metrics"],
        "curve": loss_curve(next(run_dir.glob("csv/*/metrics.csv"))),
    }
    (TARGET / "pretraining.json").write_text(json.dumps(record, indent=1) + "\n")
    size = sum(path.stat().st_size for path in TARGET.iterdir())
    minutes, steps = summary["seconds"] / 60, summary["global_step"]
    print(f"{TARGET}: {size / 1e6:.1f} MB, pretrained in {minutes:.1f} min, {steps} optimizer steps")


if __name__ == "__main__":
    main()
