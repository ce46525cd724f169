"""experiments/benchmarks/length_cost.py (docs/performance.md "Cost of each length") on the tiny stand-ins: every
(model, length) in its own process, both steps timed, and a process that ran out of memory reported as such."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "benchmarks" / "length_cost.py"


def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # it imports rehearsal.py's helpers
    spec = importlib.util.spec_from_file_location("length_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_model_and_length_is_measured_in_its_own_process(hub_standins, tmp_path):
    hub = hub_standins["google/pegasus-large"].parents[1]
    command = [sys.executable, str(SCRIPT), str(hub), "--models", "lsg,pegasus", "--lengths", "256,512",
               "--target-length", "32", "--results", str(tmp_path)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    results = json.loads((tmp_path / "length_cost.json").read_text())
    rows = {(row["model"], row["length"]): row for row in results["rows"]}
    assert sorted(rows) == [("lsg", 256), ("lsg", 512), ("pegasus", 256), ("pegasus", 512)]
    for row in rows.values():
        assert row["fits"] and row["ended"] == "finished" and len(row["steps"]) == 2
        assert row["peak_rss_mb"] >= row["steps_peak_mb"] >= row["rss_loaded_mb"] > 0
        assert row["target_length"] == 32 and row["threads"] == 1
    assert len({row["pid"] for row in rows.values()}) == 4
    summary = results["summary"]
    assert summary["lsg"]["256"]["mb_per_1k_tokens"] is None and summary["pegasus"]["512"]["memory_ratio"] > 0
    table = (tmp_path / "length_cost.md").read_text()
    assert table.count("\n| lsg |") == 2 and table.count("\n| pegasus |") == 2


def test_lengths_out_of_memory_or_time_are_reported_and_left_out_of_the_ratios(monkeypatch, tmp_path):
    script = load_script(monkeypatch)
    fits = {"model": "pegasus", "length": 4096, "fits": True, "steps": [10.0, 8.0], "peak_rss_mb": 9000,
            "peak_above_loaded_mb": 3000, "ended": "finished", "load_average": 1.0}  # fmt: skip
    longer = {**fits, "length": 8192, "steps": [30.0, 24.0], "peak_above_loaded_mb": 5048}
    failed = {"model": "pegasus", "length": 16384, "fits": False, "steps": [], "peak_rss_mb": 20000,
              "error": "DefaultCPUAllocator: can't allocate memory", "ended": "finished",
              "load_average": 1.0}  # fmt: skip
    timed_out = {"model": "lsg", "length": 16384, "fits": True, "steps": [],
                 "ended": "stopped after the 900 s time limit", "load_average": 1.0}  # fmt: skip
    summary = script.summarise([fits, longer, failed, timed_out])
    assert summary == {"pegasus": {
        4096: {"step_ratio": [1.0, 1.0], "memory_ratio": 1.0, "mb_per_1k_tokens": None},
        8192: {"step_ratio": [3.0, 3.0], "memory_ratio": 1.68, "mb_per_1k_tokens": 500.0},
    }}  # fmt: skip
    results = {"machine": "m", "note": "n.", "memory_limit_gb": 20, "rows": [fits, longer, failed, timed_out],
               "summary": summary}  # fmt: skip
    script.write_results(results, tmp_path)
    table = (tmp_path / "length_cost.md").read_text()
    assert "| pegasus | 16,384 | did not fit in 20 GB (DefaultCPUAllocator: can't allocate memory) |" in table
    assert "| lsg | 16,384 | no step finished (stopped after the 900 s time limit) |" in table
    assert "| pegasus | 8,192 | 30.0, 24.0 | 3.0 | 9,000 MB | 5,048 MB | 1.68 | 500.0 | 1.0 |" in table
