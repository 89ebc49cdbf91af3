#!/usr/bin/env bash
# ONE prepared GPU check for a single-GPU machine that ends in a verdict (< 8 minutes on one H100):
#   1. the `cuda` tests (sync-free hot loop, GPU-timeline data share, steady windows, export on CUDA, sparse24,
#      int8 measured where deployed, fp16/bf16/tf32, memory, clocks);
#   2. FastGPU on resnet50, synthetic ImageNet-shaped data on the GPU (batch 256): fp32 / tf32 / bf16 / fp16
#      x channels_last, plus bf16 + channels_last + compile; eager points under trainer.sync_debug=error;
#   3. the plain loop (experiments/plain_loop.py) on the same settings, in the same call;
#   3b. GPT points: FastGPU's nanoGPT-shaped decoder (GPT-2 small shape, block 1024) on the shipped text, bf16 /
#      bf16 + compile / fp8 + compile, beside a plain nanoGPT-style loop of the same settings (tokens/s);
#   3c. a real default sweep (the isolated launcher: points forked by its fork server) of a user's model whose module
#      asks CUDA at import (experiments/user_model/cudanet.py), 4 points, two of them parallel=ddp with one process:
#      every point must train on the device from a process that can use CUDA;
#   4. the sweep report, then experiments/gpu_verdict.py: verdict.json / verdict.md, exit 1 on a failed check.
# Each FastGPU point is its own process with its own time limit; a failed or timed-out point is a row.
#
#   bash experiments/gpu_check.sh                       # on the GPU machine
#   DEVICE=cpu bash experiments/gpu_check.sh            # the same script with tiny sizes (speed checks advisory)
# Knobs: RESULTS_DIR, POINT_TIMEOUT (s), STEPS, SKIP_TESTS=1, OVERHEAD=1 (also the small-model overhead
# benchmark), LEVERS=1 (also fp16/bf16 + fused SGD + compile modes, the >= 1.15x target; ~10 more minutes), PYTHON.
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

# each point: FastGPU overrides | the plain loop's setting
if [ "$DEVICE" = cuda ]; then
  POINT_TIMEOUT=${POINT_TIMEOUT:-150}
  STEPS=${STEPS:-60}
  WORKLOAD=(model=resnet50 model.stem=imagenet data=synthetic data.image_size=224 data.num_classes=1000
            data.batch_size=256 data.eval_batch_size=256 data.train_samples=1024 data.val_samples=256
            data.device_resident=true trainer.device=cuda)
  PLAIN=(--model resnet50 --image-size 224 --classes 1000 --batch 256)
  POINTS=("precision=fp32 deploy=true export=[torch_export]|fp32" "precision=fp32 channels_last=true|fp32,cl"
          "precision=tf32|tf32" "precision=tf32 channels_last=true|tf32,cl" "precision=bf16|bf16"
          "precision=bf16 channels_last=true deploy=true export=[torch_export]|bf16,cl" "precision=fp16|fp16"
          "precision=fp16 channels_last=true|fp16,cl"
          "precision=bf16 channels_last=true compile=true trainer.sync_debug=off|bf16,cl,compile")
  if [ -n "${LEVERS:-}" ]; then  # the expert levers (issue 14): compile modes, fused SGD, cudnn.benchmark (default on)
    POINTS+=("precision=fp16 channels_last=true compile=true optimizer.impl=fused trainer.sync_debug=off|fp16,cl,compile,fused"
             "precision=bf16 channels_last=true compile=max-autotune-no-cudagraphs optimizer.impl=fused trainer.sync_debug=off|bf16,cl,compile-max-autotune-no-cudagraphs,fused"
             "precision=fp16 channels_last=true compile=max-autotune-no-cudagraphs optimizer.impl=fused trainer.sync_debug=off|fp16,cl,compile-max-autotune-no-cudagraphs,fused")
    POINT_TIMEOUT=${LEVER_POINT_TIMEOUT:-420}  # max-autotune benchmarks kernel choices for minutes
  fi
  GPT_WORKLOAD=(task=language_model model=gpt data=text model.n_layer=12 model.n_head=12 model.n_embd=768
                data.block_size=1024 data.batch_size=8 data.eval_batch_size=8 data.device_resident=true trainer.device=cuda)
  GPT_PLAIN=(--model gpt --block-size 1024 --batch 8 --model-args n_layer=12 n_head=12 n_embd=768)
  GPT_POINTS=("precision=bf16|bf16" "precision=bf16 compile=true trainer.sync_debug=off|bf16,compile"
              "precision=fp8 compile=true trainer.sync_debug=off|fp8,compile")
  VERDICT_MODE=()
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$LOG"
else
  POINT_TIMEOUT=${POINT_TIMEOUT:-240}
  STEPS=${STEPS:-12}
  WORKLOAD=(model=small_cnn data=synthetic data.image_size=32 data.batch_size=32 data.train_samples=256
            data.val_samples=64 trainer.device=cpu)
  PLAIN=(--model small_cnn --image-size 32 --classes 10 --batch 32)
  # two points that exercise every step of the script; no compile point: inductor's CPU compile takes minutes on
  # 2 cores (compile is tested in tests/test_train.py)
  POINTS=("precision=fp32 deploy=true export=[torch_export]|fp32" "precision=bf16 channels_last=true deploy=true export=[torch_export]|bf16,cl")
  GPT_WORKLOAD=(task=language_model model=gpt data=text model.n_layer=2 model.n_head=4 model.n_embd=64
                data.block_size=64 data.batch_size=8 trainer.device=cpu)
  GPT_PLAIN=(--model gpt --block-size 64 --batch 8 --model-args n_layer=2 n_head=4 n_embd=64)
  GPT_POINTS=("precision=fp32|fp32")
  VERDICT_MODE=(--advisory)
fi
WARMUP=$((STEPS / 6 > 2 ? STEPS / 6 : 2))
# inference benchmarking and export cost start-up time and are not what this check measures: only where asked
COMMON=(trainer.max_steps=$STEPS trainer.warmup_steps=$WARMUP trainer.eval_every_n_epochs=1000
        trainer.log_every_n_steps=10 trainer.progress_bar=false trainer.checkpoint=false trainer.monitor_interval_s=0.2
        trainer.sync_debug=error inference.benchmark=false export=[])

TESTS=()
if [ "$DEVICE" = cuda ] && [ -z "${SKIP_TESTS:-}" ]; then
  say "cuda tests"
  timeout 240 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider > "$RESULTS_DIR/cuda_tests.log" 2>&1
  TESTS=(--tests-exit $?)
  tail -n 15 "$RESULTS_DIR/cuda_tests.log" | tee -a "$LOG"
fi

# run_points SWEEP_DIR WORKLOAD_ARRAY POINT...: each point its own process and time limit; fills SETTINGS
run_points() {
  local sweep=$1 i=0 entry point dir rc
  local -n workload=$2
  shift 2
  SETTINGS=()
  for entry in "$@"; do
    point=${entry%%|*}
    SETTINGS+=("${entry##*|}")
    dir="$sweep/$i"
    say "point $i: $point"
    set -f  # the point's words are split, never globbed (export=[torch_export])
    # shellcheck disable=SC2086
    timeout --signal=TERM --kill-after=15 "$POINT_TIMEOUT" "$PYTHON" -m fastgpu "${workload[@]}" "${COMMON[@]}" $point \
        "hydra.run.dir=$dir" >> "$LOG" 2>&1
    rc=$?
    set +f
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      say "point $i timed out after ${POINT_TIMEOUT}s"
      printf '{"status": "failed", "error_type": "Timeout", "error": "no result within %ss (POINT_TIMEOUT)"}\n' \
        "$POINT_TIMEOUT" > "$dir/metrics.json"
    elif [ $rc -ne 0 ]; then
      say "point $i failed (exit $rc): $(tail -n 1 "$LOG")"
    fi
    i=$((i + 1))
  done
}

run_points "$SWEEP_DIR" WORKLOAD "${POINTS[@]}"
say "plain loop: ${SETTINGS[*]}"
timeout 300 "$PYTHON" experiments/plain_loop.py --device "$DEVICE" "${PLAIN[@]}" --warmup "$WARMUP" \
    --steps $((STEPS - WARMUP)) --settings "${SETTINGS[@]}" --out "$RESULTS_DIR/plain_loop.json" >> "$LOG" 2>&1 \
  || say "plain loop failed: $(tail -n 1 "$LOG")"

GPT_SWEEP="$RESULTS_DIR/sweep_gpt"
rm -rf "$GPT_SWEEP"
mkdir -p "$GPT_SWEEP"
run_points "$GPT_SWEEP" GPT_WORKLOAD "${GPT_POINTS[@]}"
say "plain nanoGPT-style loop: ${SETTINGS[*]}"
timeout 300 "$PYTHON" experiments/plain_loop.py --device "$DEVICE" "${GPT_PLAIN[@]}" --warmup "$WARMUP" \
    --steps $((STEPS - WARMUP)) --settings "${SETTINGS[@]}" --out "$RESULTS_DIR/plain_loop_gpt.json" >> "$LOG" 2>&1 \
  || say "plain GPT loop failed: $(tail -n 1 "$LOG")"
"$PYTHON" -m fastgpu.results.report "$GPT_SWEEP" >> "$LOG" 2>&1

FORK_SWEEP="$RESULTS_DIR/sweep_fork"
rm -rf "$FORK_SWEEP"
say "default sweep of a model module that asks CUDA at import: 4 points, 2 of them ddp"
# shellcheck disable=SC2016
PYTHONPATH="$PWD/experiments/user_model${PYTHONPATH:+:$PYTHONPATH}" timeout --signal=TERM --kill-after=15 \
    "$((POINT_TIMEOUT * 2))" "$PYTHON" -m fastgpu -m model=custom model._target_=cudanet.net +model.features=16 \
    '+model.num_classes=${data.num_classes}' data=custom data._target_=cudanet.blobs data.num_classes=4 \
    trainer.device="$DEVICE" parallel=none,ddp parallel.nproc_per_node=1 trainer.seed=0,1 trainer.epochs=2 \
    trainer.progress_bar=false trainer.monitor_interval_s=0.2 inference.benchmark=false 'export=[]' \
    "hydra.sweep.dir=$FORK_SWEEP" >> "$LOG" 2>&1 || say "the fork sweep exited $? (the verdict names the point)"

say "report"
"$PYTHON" -m fastgpu.results.report "$SWEEP_DIR" --baseline precision=fp32 2>&1 | tee -a "$LOG"
cp "$SWEEP_DIR"/results.csv "$SWEEP_DIR"/report.md "$SWEEP_DIR"/*.png "$RESULTS_DIR"/ 2>/dev/null

if [ -n "${OVERHEAD:-}" ]; then
  say "FastGPU vs plain loop on the small models"
  timeout 240 "$PYTHON" experiments/overhead.py --device "$DEVICE" --rounds 3 --out "$RESULTS_DIR/overhead.json" 2>&1 \
      | grep -v '^wandb' | tee -a "$LOG" | tail -n 5
fi

say "verdict"
"$PYTHON" experiments/gpu_verdict.py "$RESULTS_DIR" --device "$DEVICE" "${TESTS[@]}" "${VERDICT_MODE[@]}" 2>&1 \
  | tee -a "$LOG"
verdict=${PIPESTATUS[0]}
say "done: $RESULTS_DIR (verdict exit $verdict)"
exit "$verdict"
