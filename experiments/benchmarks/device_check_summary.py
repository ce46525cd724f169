"""The table of `device_check.sh`: each training run's telemetry and the batch probe's tries, from the runs'
`run_summary.json` files, as markdown for docs/performance.md.

    python experiments/benchmarks/device_check_summary.py RESULTS ddp_bf16 fsdp
"""

import argparse
import json
from pathlib import Path

COLUMNS = {  # telemetry key (TrainingTelemetry.summary) -> column
    "optimizer_steps": "steps",
    "seconds_per_step": "s / step",
    "source_tokens_per_s": "source tokens/s",
    "target_tokens_per_s": "target tokens/s",
    "samples_per_s": "samples/s",
    "peak_cuda_gib": "peak CUDA GiB",
    "peak_rss_gib": "peak RSS GiB",
    "grad_norm_max": "max grad norm",
}


def summary(results: Path, run: str) -> dict | None:
    path = results / f"{run}_run_summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def telemetry_table(results: Path, runs: list[str]) -> list[str]:
    lines = ["| run | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    for run in runs:
        report = summary(results, run)
        if report is None:
            lines.append(f"| `trainer={run}` | failed (see train_{run}.log) |" + " |" * (len(COLUMNS) - 1))
            continue
        telemetry = report["telemetry"]
        cells = [f"{telemetry[key]:.3g}" if key in telemetry else "-" for key in COLUMNS]
        lines.append(f"| `trainer={run}` | " + " | ".join(cells) + " |")
    return lines


def probe_table(results: Path) -> list[str]:
    report = summary(results, "probe")
    if report is None or not (report.get("batch") or {}).get("probe"):
        return ["The batch probe did not finish (see train_probe.log)."]
    batch = report["batch"]
    lines = [f"Batch probe: chose {batch['per_device']} per device.", "", "| batch | fits | peak MB | seconds |",
             "|---|---|---|---|"]  # fmt: skip
    for row in batch["probe"]:
        fits = "yes" if row["fits"] else "no"
        lines.append(f"| {row['batch']} | {fits} | {row['peak_memory_mb']} | {row['seconds']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("runs", nargs="+", help="the training runs' names (their trainer config)")
    args = parser.parse_args()
    print("\n".join([*telemetry_table(args.results, args.runs), "", *probe_table(args.results)]))


if __name__ == "__main__":
    main()
