#!/usr/bin/env bash
# ONE prepared GPU check for a single-GPU machine (< 8 minutes on one H100):
#   1. the `cuda` tests (fp16 + GradScaler, bf16, tf32 flags, memory, channels_last, compile, clocks);
#   2. a sweep of resnet50 on synthetic ImageNet-shaped data (3x224x224, 1000 classes, batch 256, data on
#      the GPU) over fp32 / tf32 / bf16 / fp16 x channels_last, plus bf16 + channels_last + compile;
#   3. FastGPU against a plain loop on the small-step cases (small CNN on digits, resnet18 at 3x32x32).
# Results land in one folder (default experiments/results/gpu/): results.csv, report.md, plots, logs.
# Each point is its own process with its own time limit; a failed or timed-out point is a row, not the end.
#
#   bash experiments/gpu_check.sh                       # on the GPU machine
#   DEVICE=cpu bash experiments/gpu_check.sh            # the same script with tiny sizes (CPU fallback)
# Knobs: RESULTS_DIR, POINT_TIMEOUT (s), STEPS, SKIP_TESTS=1, SKIP_OVERHEAD=1, PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python}
RESULTS_DIR=${RESULTS_DIR:-experiments/results/gpu}
export WANDB_MODE=${WANDB_MODE:-offline} PYTHONUNBUFFERED=1
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
SWEEP_DIR="$RESULTS_DIR/sweep"
rm -rf "$SWEEP_DIR"
mkdir -p "$SWEEP_DIR"
LOG="$RESULTS_DIR/gpu_check.log"
: > "$LOG"
say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [ "$DEVICE" = cuda ]; then
  POINT_TIMEOUT=${POINT_TIMEOUT:-150}
  STEPS=${STEPS:-40}
  WORKLOAD=(model=resnet50 model.stem=imagenet data=synthetic data.image_size=224 data.num_classes=1000
            data.batch_size=256 data.eval_batch_size=256 data.train_samples=1024 data.val_samples=256
            data.device_resident=true trainer.device=cuda)
  POINTS=("precision=fp32" "precision=fp32 channels_last=true" "precision=tf32" "precision=tf32 channels_last=true"
          "precision=bf16" "precision=bf16 channels_last=true" "precision=fp16" "precision=fp16 channels_last=true"
          "precision=bf16 channels_last=true compile=true")
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$LOG"
else
  POINT_TIMEOUT=${POINT_TIMEOUT:-240}
  STEPS=${STEPS:-12}
  WORKLOAD=(model=small_cnn data=synthetic data.image_size=32 data.batch_size=32 data.train_samples=256 data.val_samples=64
            trainer.device=cpu)
  POINTS=("precision=fp32" "precision=fp32 channels_last=true" "precision=bf16" "precision=bf16 channels_last=true"
          "precision=bf16 channels_last=true compile=true")
fi
COMMON=(trainer.max_steps=$STEPS trainer.warmup_steps=$((STEPS / 4)) trainer.eval_every_n_epochs=1000
        trainer.log_every_n_steps=10 trainer.progress_bar=false trainer.checkpoint=false trainer.monitor_interval_s=0.5)

if [ "$DEVICE" = cuda ] && [ -z "${SKIP_TESTS:-}" ]; then
  say "cuda tests"
  timeout 240 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -rs 2>&1 | tee "$RESULTS_DIR/cuda_tests.log" | tail -n 15
fi

i=0
for point in "${POINTS[@]}"; do
  dir="$SWEEP_DIR/$i"
  say "point $i: $point"
  # shellcheck disable=SC2086
  timeout --signal=TERM --kill-after=15 "$POINT_TIMEOUT" "$PYTHON" -m fastgpu "${WORKLOAD[@]}" "${COMMON[@]}" $point \
      "hydra.run.dir=$dir" >> "$LOG" 2>&1
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    say "point $i timed out after ${POINT_TIMEOUT}s"
    printf '{"status": "failed", "error_type": "Timeout", "error": "no result within %ss (POINT_TIMEOUT)"}\n' "$POINT_TIMEOUT" > "$dir/metrics.json"
  elif [ $rc -ne 0 ]; then
    say "point $i failed (exit $rc): $(tail -n 1 "$LOG")"
  fi
  i=$((i + 1))
done

say "report"
"$PYTHON" -m fastgpu.report "$SWEEP_DIR" --baseline precision=fp32 2>&1 | tee -a "$LOG"
cp "$SWEEP_DIR"/results.csv "$SWEEP_DIR"/report.md "$SWEEP_DIR"/*.png "$RESULTS_DIR"/ 2>/dev/null

if [ -z "${SKIP_OVERHEAD:-}" ]; then
  say "FastGPU vs plain loop"
  ROUNDS=$([ "$DEVICE" = cuda ] && echo 3 || echo 1)
  timeout 240 "$PYTHON" experiments/overhead.py --device "$DEVICE" --rounds "$ROUNDS" --out "$RESULTS_DIR/overhead.json" 2>&1 \
      | grep -v '^wandb' | tee -a "$LOG" | tail -n 5
fi
say "done: $RESULTS_DIR"
