r"""Speed of every comparison method's whole grid on V->N (real sizes), against one point at a time.

Prints, from one run on the real SMIC V->N features (71 source, 71 target samples, d = 15045;
synthetic features of the same sizes when ../shared is absent), for every method:

  * the time of its whole grid (``fit_predict`` of every grid point at once, float64, predicting
    the target) and its fits per second;
  * fits/s of a loop over a few grid points, one at a time, extrapolated to the grid:
    - DRLS, TSRG: a straightforward NumPy port of the authors' ALM (the regenerator; for TSRG the
      per-point LIBSVM on regenerated queries is not included, so the ratio is a lower bound);
    - TGSR: ``tgsr_jax.reference.fit_reference`` (the NumPy port of the published algorithm);
    - the others: the method's own ``fit_predict`` called with one grid point per call (no
      independent NumPy port exists here; the ratio is what batching the grid buys);
  * for the iterative methods (TSRG, DRLS, TGSR), the fraction of this machine's measured matrix
    multiply peak (a 2048^3 GEMM in the same precision) and memory bandwidth (a 256 MiB copy) that
    the whole grid reaches, from a flop / byte model of its main products per iteration:
    TGSR 2 K r^2 C flops (the stacked Q_g^T Q_g times the D-step correction) and 4 K r C values
    moved; DRLS/TSRG 2 n^2 m flops (the (n x n) x (n x m) product, m = C for DRLS, d for TSRG)
    and six n x m arrays read or written per iteration (n = n_s + n_t).

The whole grid is timed on its second call (the first compiles every shape it uses), the loop's
points after one warm-up point. ``--precision`` sets the grid's precision (the loops are
float64); ``--points NAME=N`` times only the first N points of a method's grid (TSRG's 259 points
take about an hour in float32 on two loaded cores).

  python -m benchmarks.cdmer_methods                        # every available method, full grids
  python -m benchmarks.cdmer_methods --methods=SVM,SA,DRLS     # some of them
  python -m benchmarks.cdmer_methods --tgsr-kappas=1,12,85     # TGSR on a few grid rows only
  python -m benchmarks.cdmer_methods --loop-points=2           # grid points timed one at a time
  python -m benchmarks.cdmer_methods --precision=float32 --points=TSRG=16,TGSR=0
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import reference
from tgsr_jax import settings
from tgsr_jax.methods import tgsr

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "cdmer" / "ssfr"


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  path = lambda db: SHARED / f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat"  # noqa: E731
  if path("SMIC_VIS").exists() and path("SMIC_NIR").exists():
    src = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
    tgt = cdmer_io.read_feature_file(path("SMIC_NIR"), "SMIC_NIR")
    return src.features, src.labels - 1, tgt.features, "real SMIC V->N"
  rng = np.random.default_rng(0)
  xs, xt = np.abs(rng.normal(size=(71, 15045))), np.abs(rng.normal(size=(71, 15045)) + 0.1)
  return xs, np.tile(np.arange(3), 24)[:71], xt, "synthetic features of V->N's sizes"


def measured_peak(dtype, size: int = 2048) -> float:
  """FLOP/s of a jitted ``size``^3 GEMM (best of 3)."""
  with jax.enable_x64(dtype == np.float64):
    a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(3))
  return 2 * size**3 / best


def measured_bandwidth() -> float:
  """Bytes/s of a 256 MiB array copy (read + write, best of 3)."""
  a = np.ones(32 * 2**20)
  b = np.empty_like(a)
  best = min(_timed(lambda: np.copyto(b, a)) for _ in range(3))
  return 2 * a.nbytes / best


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def loop_time(name, method, xs, ys, xt, params, picks) -> float:
  """Seconds per grid point of the one-at-a-time loop (see the module docstring)."""
  start = time.perf_counter()
  for g in picks:
    point = {k: v[g:g + 1] for k, v in params.items()}
    if name in ("DRLS", "TSRG"):
      # TSRG regenerates the source features, DRLS the one-hot source labels.
      y = xs if name == "TSRG" else np.eye(3)[ys]
      reference.regeneration_alm(xs, xt, y, float(point["lambda"][0]), float(point["mu"][0]))
    elif name == "TGSR":
      fit = reference.fit_reference(xs, ys, xt, xs.shape[1] // 85, int(point["kappa"][0]),
                                    float(point["xi"][0]), num_classes=3)
      np.argmax(xt @ fit.coef, axis=1)
    else:
      method.fit_predict(xs, ys, xt, xt, point, num_classes=3, precision="float64")
  return (time.perf_counter() - start) / len(picks)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--methods", default="all")
  parser.add_argument("--loop-points", type=int, default=3)
  parser.add_argument("--tgsr-kappas", default="",
                      help="TGSR grid rows (default all 85 x 271 points: ~minutes)")
  parser.add_argument("--precision", default="float64", choices=("float64", "float32"))
  parser.add_argument("--points", default="",
                      help="NAME=N,...: time only the first N grid points of these methods")
  args = parser.parse_args()
  first_points = {k.strip().upper(): int(v) for k, v in
                  (item.split("=") for item in args.points.split(",") if item.strip())}
  xs, ys, xt, what = load()
  n, d = len(xs) + len(xt), xs.shape[1]
  peak64, peak32, bandwidth = measured_peak(np.float64), measured_peak(np.float32), \
      measured_bandwidth()
  print(f"{what}: n_s={len(xs)}, n_t={len(xt)}, d={d}; {jax.device_count()} device(s) "
        f"{jax.devices()[0].platform}; grids in {args.precision}, loops in float64")
  print(f"measured GEMM peak: float64 {peak64 / 1e9:.1f} GFLOP/s, float32 {peak32 / 1e9:.1f} "
        f"GFLOP/s; copy bandwidth {bandwidth / 1e9:.1f} GB/s\n")
  print(f"{'method':7s} {'points':>6s} {'grid s':>9s} {'fits/s':>9s} {'loop fits/s':>12s} "
        f"{'speed-up':>9s} {'%peak':>6s} {'%bw':>5s}  iterations (mean)")
  rng = np.random.default_rng(0)
  for name in settings.parse_methods(args.methods):
    method = methods.get(name)
    grid = dict(method.grid)
    if name == "TGSR":
      method = tgsr.make(grouping="contiguous")
      if args.tgsr_kappas:
        grid["kappa"] = tuple(int(k) for k in args.tgsr_kappas.split(","))
    params = methods.grid_points(grid)
    if first_points.get(name.upper()):
      params = {k: v[:first_points[name.upper()]] for k, v in params.items()}
    g = len(next(iter(params.values())))
    fit = dict(num_classes=3, precision=args.precision)
    if name in ("TSRG", "DRLS", "TGSR"):
      # Their compiled shapes do not depend on the grid's size much (the lane pool, padded
      # chunks); a whole second grid would double the costliest runs.
      method.fit_predict(xs, ys, xt, xt, {k: v[:1] for k, v in params.items()}, **fit)
    else:
      method.fit_predict(xs, ys, xt, xt, params, **fit)           # compile / warm up
    start = time.perf_counter()
    out = method.fit_predict(xs, ys, xt, xt, params, **fit)
    grid_s = time.perf_counter() - start
    method.fit_predict(xs, ys, xt, xt, {k: v[:1] for k, v in params.items()}, num_classes=3,
                       precision="float64")                           # the loop's warm-up
    picks = rng.choice(g, size=min(args.loop_points, g), replace=False)
    per_point = loop_time(name, method, xs, ys, xt, params, picks)
    peak_text, bw_text, it_text = "", "", ""
    if name in ("TSRG", "DRLS", "TGSR"):
      its = float(np.sum(out.iterations))
      itemsize = 8 if args.precision == "float64" else 4
      if name == "TGSR":
        k, r = 85, len(xs) + 1
        flops, bytes_ = its * 2 * k * r * r * 3, its * 4 * k * r * 3 * itemsize
      else:
        m = d if name == "TSRG" else 3
        flops, bytes_ = its * 2 * n * n * m, its * 6 * n * m * itemsize
      peak = peak64 if args.precision == "float64" else peak32
      peak_text = f"{100 * flops / grid_s / peak:5.1f}%"
      bw_text = f"{100 * bytes_ / grid_s / bandwidth:4.1f}%"
      it_text = f"{its / g:.0f}"
    print(f"{name:7s} {g:6d} {grid_s:9.2f} {g / grid_s:9.1f} {1 / per_point:12.2f} "
          f"{g / grid_s * per_point:8.1f}x {peak_text:>6s} {bw_text:>5s}  {it_text}", flush=True)


if __name__ == "__main__":
  main()
