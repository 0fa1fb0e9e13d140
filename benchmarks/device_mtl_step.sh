#!/usr/bin/env bash
# The accelerator check of the MTL speed targets, as one prepared command (issue 5).
#
# Runs benchmarks/mtl_step.py in the paper's setting (ResNet-34, 96 x 96, batch 256 per task)
# with the machine's own JAX, and writes the log and a JSON record to $OUT (default runs/bench).
# The variants are the ones the targets name, the matrix-product-only 'newton_schulz' rows (the
# candidate for the Tucker/TT target on a GPU, where cuSOLVER factorises one matrix at a time),
# the 'gram' rows and the vmap row; each compiles for about half a minute on a GPU, so the whole
# run fits one 10-minute device command, and the JSON record is rewritten after every round, so
# a run stopped early keeps what it finished. Extra arguments go to the benchmark, e.g.
# `--variants separate,stacked` or `--steps 20`.
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
PYTHONPATH=. "$python" -m benchmarks.mtl_step --backbone resnet34 --batch 256 --image_size 96 \
  --steps 10 --rounds 3 \
  --variants separate,stacked,laf/exact,tucker/randomized,tt/randomized,tucker/newton_schulz,tt/newton_schulz,tucker/gram,tt/gram,stacked/vmap \
  --json "$out/mtl_step_resnet34_b256.json" "$@" 2>&1 | tee "$out/mtl_step_resnet34_b256.log"
