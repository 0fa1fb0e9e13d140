#!/usr/bin/env bash
# The accelerator check of the comparison methods' speed (issue 17), as one prepared command.
#
# On an accelerator TSRG and DRLS run their grids on the lane pool (tgsr_jax.methods._regenerate;
# the column-blocked path is the CPU's). Writes logs to $OUT (default runs/bench):
# 1. benchmarks/regeneration_speed.py --full --full_precision float64: seconds per TSRG iteration
#    per grid point against the NumPy loop (on the host CPU), the ceiling at the device's measured
#    GEMM peak, and the whole 259-point grid in float64 (the precision of `:paper`);
# 2. benchmarks/cdmer_methods.py: every method's whole grid on V->N against one point at a time.
# Both read the real SMIC features from ../shared/cdmer/ssfr when they are there, and otherwise
# draw synthetic features of the same size (each log's first line says which). Sized for one
# 10-minute device command.
#
#   bash benchmarks/device_regeneration.sh                   # on the accelerator machine
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/bench}
mkdir -p "$out"
python=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$python" -c 'import jax; print("jax", jax.__version__, jax.devices())'
} | tee "$out/device.txt"
PYTHONPATH=. "$python" -m benchmarks.regeneration_speed --full --full_precision float64 \
  --lanes 16 2>&1 | tee "$out/regeneration_speed.log"
PYTHONPATH=. "$python" -m benchmarks.cdmer_methods --loop-points=1 --points=TSRG=16 \
  --tgsr-kappas=12 2>&1 | tee "$out/cdmer_methods.log"
