"""A sweep's bookkeeping: each trial's overrides, metric or error, one file per trial and a `trials.md` table, in a
multirun folder of its own."""

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

# What a sweep leaves in its multirun folder (`hydra.sweep.dir`): the marks of an earlier sweep there.
SWEEP_RECORDS = ("multirun.yaml", "trials", "trials.md", "optimization_results.yaml")


class RefuseUsedSweepDir(Callback):
    """Refuses a sweep into a multirun folder that holds another sweep's records (`hydra.callbacks`), before any
    trial runs: trial numbers start at 0 in every sweep, so the second's `trials/0.json`, `trials.md` and Hydra's
    `multirun.yaml` would replace the first's. Numbering on instead would mix two searches (other spaces, other
    samplers) in one table and one Optuna result. Hydra turns a callback's exceptions into warnings, so this exits."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        found = [name for name in SWEEP_RECORDS if (sweep_dir / name).exists()]
        if found:
            raise SystemExit(
                f"hydra.sweep.dir={sweep_dir} holds an earlier sweep ({', '.join(found)}): this sweep's trials "
                "would overwrite its records. Give this sweep another hydra.sweep.dir (or leave it out: each sweep "
                "gets a new timestamped folder), or move the earlier sweep away"
            )


def record_trial(sweep_dir: Path, number: int, overrides: list[str], metric: float | None, error: str | None) -> None:
    """Write one sweep trial to `sweep_dir/trials/<number>.json` and rebuild `sweep_dir/trials.md` from all of them.

    One file per trial, so that concurrent jobs (SLURM) never write the same file; the summary is rewritten whole.
    """
    trials_dir = sweep_dir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    record = {"trial": number, "overrides": overrides, "metric": metric, "status": "failed" if error else "ok"}
    if error:
        record["error"] = error
    tmp = trials_dir / f".{number}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, trials_dir / f"{number}.json")
    rows = sorted((json.loads(p.read_text()) for p in trials_dir.glob("*.json")), key=lambda r: r["trial"])
    lines = ["| trial | status | metric | parameters |", "|---|---|---|---|"]
    for row in rows:
        value = "-" if row["metric"] is None else f"{row['metric']:.4f}"
        detail = " ".join(row["overrides"]) + (f" ({row['error']})" if "error" in row else "")
        lines.append(f"| {row['trial']} | {row['status']} | {value} | {detail} |")
    summary = sweep_dir / "trials.md"
    tmp = sweep_dir / f".trials.md.{os.getpid()}.tmp"  # per process: trials of a SLURM array end at once
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, summary)


def run_trial(run: Callable[[], float | None]) -> float | None:
    """`run()` (a Hydra job: a training returning its swept metric), recorded as a trial when Hydra sweeps."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return run()
    sweep_dir, number, overrides = Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, list(hydra_cfg.overrides.task)
    try:
        metric = run()
    except Exception as error:
        record_trial(sweep_dir, number, overrides, None, str(error).strip().splitlines()[-1][:300])
        # The submitit launcher returns a failed trial's exception to the sweeper by pickle: one that cannot be
        # unpickled would crash the whole sweep, so such errors travel as a RuntimeError with the same message.
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            raise RuntimeError(f"{type(error).__name__}: {error}") from None
        raise
    record_trial(sweep_dir, number, overrides, metric, None)
    return metric
