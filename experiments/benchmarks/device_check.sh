#!/bin/bash
# The GPU check of issue 27, one script for one lent GPU (under 10 minutes on an H100; never run there yet):
#   bash experiments/benchmarks/device_check.sh               # full size, on a CUDA machine
#   bash experiments/benchmarks/device_check.sh tiny          # its rehearsal on CPU: tiny stand-ins, 2 gloo processes
# 1. `gpu_benchmark.py --quick` (flex_attention checks, attention and whole-model tokens/s at 4k and 16k);
# 2. 20 optimizer steps of `experiment=arxiv_sum` on random-weight LSG-Pegasus-large (the full-size hub stand-ins,
#    `experiments/hub_standins.py --size full`) at 4,096 tokens, with `trainer=ddp_bf16` and with `trainer=fsdp`,
#    batch 2 per step, telemetry on (tokens/s, padding, peak memory, gradient norm: metrics.csv);
# 3. the batch probe, `data.batch_size=auto`, one step.
# Results under experiments/benchmarks/results/device_check/ (and, with $OUT set, a copy there): each run's
# metrics.csv, run_summary.json and log, and summary.md (the table for docs/performance.md).
# On the device machine, lsgtrain's dependencies that its image lacks travel as wheels in .whl
# (`experiments/benchmarks/device_wheels.sh` downloads them here; `DEVICE_WHEELS=.whl` has this script install them):
#   run(command="DEVICE_WHEELS=.whl bash experiments/benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
SIZE=${1:-full}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RESULTS=${DEVICE_CHECK_RESULTS:-$ROOT/experiments/benchmarks/results/device_check_$SIZE}
WORK=${DEVICE_CHECK_WORK:-/tmp/lsgtrain_device_check}
rm -rf "$RESULTS" "$WORK" && mkdir -p "$RESULTS" "$WORK"
PY=${PYTHON:-python3}
if [ -n "${DEVICE_WHEELS:-}" ]; then  # the device image: the carried wheels into /tmp/site, lsgtrain from src/
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$DEVICE_WHEELS"/*.whl || exit 1
    export PYTHONPATH=$ROOT/src:/tmp/site
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1 LSGTRAIN_ROOT=$WORK LSGTRAIN_CACHE=$WORK/cache
FAILED=0  # steps that failed; the script goes on to the next and exits with this count
log() { echo "[device_check $(date +%T)] $*" | tee -a "$RESULTS/steps.log"; }

log "stand-ins ($SIZE)"
$PY experiments/hub_standins.py "$WORK/hub" --size "$SIZE" > "$RESULTS/standins.log" 2>&1 || { log "stand-ins failed"; exit 1; }
HUB=$WORK/hub
if [ "$SIZE" = full ]; then
    COMMON=(trainer.devices=1)
    BATCH=(data.batch_size=2 effective_batch_size=2)
    STRATEGIES=(ddp_bf16 fsdp)
    log "gpu_benchmark.py --quick"
    timeout 240 $PY experiments/benchmarks/gpu_benchmark.py --quick > "$RESULTS/gpu_benchmark.log" 2>&1
    rc=$?; log "gpu_benchmark rc=$rc"; [ $rc = 0 ] || FAILED=$((FAILED + 1))
    cp experiments/benchmarks/results/gpu.md experiments/benchmarks/results/gpu.json "$RESULTS/" 2>/dev/null
else  # CPU rehearsal: the same commands on the tiny stand-ins, 2 gloo processes
    COMMON=(data.max_source_length=256 data.max_target_length=128 trainer.max_epochs=100)
    BATCH=(data.batch_size=2 effective_batch_size=4)
    STRATEGIES=(ddp_cpu fsdp_cpu)
fi
RUN=(train.py experiment=arxiv_sum "model.pretrained=$HUB/ccdv/lsg-pegasus-large-4096"
     "data.dataset_name=$HUB/ccdv/arxiv-summarization" logger=csv test=false trainer.limit_val_batches=0
     callbacks.hf_export=null trainer.log_every_n_steps=5)
for strategy in "${STRATEGIES[@]}"; do
    log "20 steps, trainer=$strategy"
    $PY "${RUN[@]}" "${COMMON[@]}" "${BATCH[@]}" trainer="$strategy" +trainer.max_steps=20 run_name="$strategy" \
        > "$RESULTS/train_$strategy.log" 2>&1
    rc=$?; log "trainer=$strategy rc=$rc"; [ $rc = 0 ] || FAILED=$((FAILED + 1))
done
log "batch probe"
$PY "${RUN[@]}" "${COMMON[@]}" trainer="${STRATEGIES[0]}" data.batch_size=auto effective_batch_size=null \
    +trainer.max_steps=1 run_name=probe \
    > "$RESULTS/train_probe.log" 2>&1
rc=$?; log "probe rc=$rc"; [ $rc = 0 ] || FAILED=$((FAILED + 1))
for run in "${STRATEGIES[@]}" probe; do
    folder=$WORK/outputs/arxiv_sum/runs/$run
    cp "$folder/run_summary.json" "$RESULTS/${run}_run_summary.json" 2>/dev/null
    cp "$(find "$folder/csv" -name metrics.csv 2>/dev/null | head -1)" "$RESULTS/${run}_metrics.csv" 2>/dev/null
done
$PY experiments/benchmarks/device_check_summary.py "$RESULTS" "${STRATEGIES[@]}" > "$RESULTS/summary.md"
cat "$RESULTS/summary.md"
if [ -n "${OUT:-}" ]; then tar -C "$RESULTS" -czf "$OUT/device_check.tar.gz" . && cp "$RESULTS/summary.md" "$OUT/"; fi
exit $FAILED
