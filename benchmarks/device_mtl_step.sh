#!/usr/bin/env bash
# The accelerator check of the MTL speed targets, as one prepared command (issues 5 and 18).
#
# Runs, with the machine's own JAX, and writes logs and JSON records to $OUT (default
# runs/bench):
# 1. benchmarks/mtl_step.py in the paper's setting (ResNet-34, 96 x 96, batch 256 per task):
#    the training step itself (ADA, L1 landmark loss, device augmentation), in float32 with the
#    rows the trace-norm targets name (LAF; Tucker/TT randomized and gram) and
#    without the augmentation (its share of a step), then in bfloat16 (no penalty, LAF, Tucker
#    gram, without the augmentation);
# 2. benchmarks/mtl_input.py: the host pipeline's images/s and the device augmentation's share
#    of a ResNet-34 step at batch 256 per task.
# Each step variant compiles in about half a minute on a GPU; the JSON records are rewritten
# after every round, so a run stopped early keeps what it finished. The whole script is sized
# for one 10-minute device command. Extra arguments go to both mtl_step runs, e.g. `--steps 20`.
#
#   bash benchmarks/device_mtl_step.sh                       # on the accelerator machine
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/bench}
mkdir -p "$out"
python=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$python" -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__,
"optax", optax.__version__, jax.devices())'
} | tee "$out/device.txt"
common=(--backbone resnet34 --batch 256 --image_size 96 --steps 10 --rounds 3)
PYTHONPATH=. "$python" -m benchmarks.mtl_step "${common[@]}" --dtype float32 \
  --variants stacked,stacked/no_augment,laf/exact,tucker/randomized,tt/randomized,tucker/gram,tt/gram \
  --json "$out/mtl_step_resnet34_b256_f32.json" "$@" 2>&1 | tee "$out/mtl_step_resnet34_b256_f32.log"
PYTHONPATH=. "$python" -m benchmarks.mtl_step "${common[@]}" --dtype bfloat16 \
  --variants stacked,stacked/no_augment,laf/gram,tucker/gram \
  --json "$out/mtl_step_resnet34_b256_bf16.json" "$@" 2>&1 | tee "$out/mtl_step_resnet34_b256_bf16.log"
PYTHONPATH=. "$python" -m benchmarks.mtl_input --sections host,device --backbone resnet34 \
  --batch 256 --image_size 96 --json "$out/mtl_input.json" 2>&1 | tee "$out/mtl_input.log"
