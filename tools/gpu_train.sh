#!/usr/bin/env bash
# The prepared GPU training window (docs/training-gpu.md). Run from the repo root on the device
# machine, e.g. through the device tool:  tools/gpu_train.sh   (carry: .gpu)
#
# Defaults: the channel-ladder (N=128, M=192, variable rate), bf16, channels-last, 32 x 256² crops
# from .gpu/data/train, 8 minutes of wall clock (data loading included), checkpoints every 2
# minutes, resuming from .gpu/resume when it exists. Output: $OUT/run/ (weights as float16 files of
# at most 15.9 MiB, manifest.json with lineage and pixels/s, metrics.jsonl).
# Every setting is an environment variable: MINUTES ARCH MODEL INIT (--init-weights) BETA BATCH PATCH
# LR DEVICE COMPILE=1 DATA VAL PYTHON, and ARGS for any further raybb.train.fast option (the names
# of `raybb train` where they mean the same: --steps, --warmup-steps, --channels, --threads...).
# CPU dry run (what tests/train_loop/test_fast.py runs):
#   DEVICE=cpu MODEL='{"N":16,"M":24,"F":16,"G":8,"slices":[8,16],"prior_hidden":16}' \
#   PATCH=64 BATCH=4 ARGS="--steps 20 --threads 1" OUT=/tmp/dry tools/gpu_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUTDIR=${OUT:-runs/gpu}/run
MINUTES=${MINUTES:-8}
DATA=${DATA:-.gpu/data/train}
VAL=${VAL:-.gpu/data/val}
INIT=${INIT:-}
if [ -z "$INIT" ] && [ -e .gpu/resume ]; then INIT=.gpu/resume; fi
ARCH=${ARCH:-channel-ladder}
MODEL=${MODEL:-"{}"}
BATCH=${BATCH:-32}
PATCH=${PATCH:-256}
LR=${LR:-1e-4}
DEVICE=${DEVICE:-cuda}
EXTRA=()
if [ "${COMPILE:-0}" = 1 ]; then EXTRA+=(--compile); fi
if [ -n "$INIT" ]; then EXTRA+=(--init-weights "$INIT"); fi
if [ -n "${BETA:-}" ]; then EXTRA+=(--beta "$BETA"); fi
if [ "$DEVICE" = cpu ]; then EXTRA+=(--precision fp32 --no-channels-last); fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader 2>/dev/null || true
fi
echo "raybb.train.fast: arch=$ARCH init=${INIT:-none} minutes=$MINUTES batch=$BATCH patch=$PATCH device=$DEVICE out=$OUTDIR"
# shellcheck disable=SC2086  # ARGS and DATA are word lists on purpose
exec "$PY" -m raybb.train.fast --out "$OUTDIR" --data $DATA --val-data $VAL --arch "$ARCH" --model "$MODEL" \
  --minutes "$MINUTES" --batch "$BATCH" --patch "$PATCH" --lr "$LR" --device "$DEVICE" "${EXTRA[@]}" ${ARGS:-}
