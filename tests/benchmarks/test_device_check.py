"""experiments/benchmarks/device_check.sh, the GPU check of issue 27, rehearsed on CPU (`tiny`: the tiny stand-ins, 2
gloo processes): both strategies train 20 steps with telemetry and the batch probe chooses a batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "benchmarks" / "device_check.sh"


@pytest.mark.slow
def test_the_device_check_rehearsal_trains_both_strategies_and_probes_a_batch(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DEVICE_CHECK_RESULTS": str(results),
           "DEVICE_CHECK_WORK": str(tmp_path / "work")}  # fmt: skip
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(SCRIPT), "tiny"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + (results / "steps.log").read_text()
    table = (results / "summary.md").read_text().splitlines()
    for strategy in ("ddp_cpu", "fsdp_cpu"):
        row = next(line for line in table if line.startswith(f"| `trainer={strategy}` |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "20", row  # optimizer steps
        assert all(float(cell) > 0 for cell in cells[2:6]), row  # s/step, source and target tokens/s, samples/s
        assert (results / f"{strategy}_metrics.csv").read_text().splitlines()[0].count("train/grad_norm") == 1
    assert any(line.startswith("Batch probe: chose ") for line in table)
    assert any(line.startswith("| 1 | yes |") for line in table)
