"""Two CPU processes (DDP over gloo) score the validation set exactly like one process: ROUGE, its intervals, the
statistics and the length buckets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lsgtrain.train import train

from .conftest import FAST, TINY_INIT

ROOT = Path(__file__).resolve().parents[2]
DATA = ["data.max_samples=5", "data.eval_batch_size=1"]  # 5 documents: the 2-rank sampler repeats one


def evaluate_checkpoint(tmp_path: Path, name: str, checkpoint: Path, cache_dir: Path, *overrides: str) -> dict:
    """`python -m lsgtrain.evaluate` on `checkpoint` in a fresh process; returns its metrics."""
    run_dir = tmp_path / name
    command = [
        sys.executable, "-m", "lsgtrain.evaluate", *FAST, *TINY_INIT, *DATA, f"ckpt_path={checkpoint}",
        f"hydra.run.dir={run_dir}", f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache_dir}",
        "++module.generation.max_new_tokens=8", "++module.generation.num_beams=1", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_two_process_ddp_rouge_equals_one_process(make_cfg, tmp_path, cache_dir):
    train(make_cfg(*DATA, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    single = evaluate_checkpoint(tmp_path, "single", checkpoint, cache_dir, "trainer=cpu")
    double = evaluate_checkpoint(tmp_path, "ddp", checkpoint, cache_dir, "trainer=ddp_cpu", "trainer.devices=2")
    for stage in ("val", "test"):
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert double[f"{stage}/{name}"] == pytest.approx(single[f"{stage}/{name}"], abs=1e-9), (stage, name)
    # the 95% intervals, the lead's, the statistics and the length buckets too: all from the gathered documents
    assert {"test/rouge1_low", "test/lead_rouge2_high", "test/stats/gen/density"} <= single.keys()
    assert any(key.startswith("test/len_") for key in single)
    scored = {key: value for key, value in single.items() if not key.endswith("/loss")}  # the loss: a synced mean
    assert {key: double[key] for key in scored} == pytest.approx(scored, abs=1e-9)
    rows = {
        name: [json.loads(line) for line in (tmp_path / name / "predictions" / "val.jsonl").open()]
        for name in ("single", "ddp")
    }
    assert [row["id"] for row in rows["ddp"]] == list(range(5))  # each document exactly once
    assert rows["ddp"] == rows["single"]
