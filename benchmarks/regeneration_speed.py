r"""TSRG grid speed: a NumPy loop of the authors' ALM vs the batched JAX grid (float64, float32).

TSRG's regenerator is n x 15045 per grid point; every ALM iteration multiplies it by an n x n
matrix, so its 259-point grid is the costliest of Tables II/III. Prints, from one run:

  (a) seconds per iteration of one grid point in a plain NumPy loop (float64, the formula of
      METHODS.md as written: ``U diag(1 / (D + kappa/2)) U^T (K_s X_s^T + (kappa P + T) / 2)``);
  (b) seconds per iteration per grid point of the batched grid (tgsr_jax.methods._regenerate:
      one lambda's mu values iterate together), in float64 and float32, measured as the
      difference of two runs of one chunk capped at k and 2k iterations (compilation excluded);
  the speed-up of (b) over (a) and the projected whole-grid times for ``--iterations`` per point
  (the issue's estimate: about 200). ``--full`` also times the whole float32 (or
  ``--full_precision``) grid once.

  python -m benchmarks.regeneration_speed                    # real SMIC V->N if ../shared exists
  python -m benchmarks.regeneration_speed --full             # plus the whole grid, one run
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import reference
from tgsr_jax.methods import _regenerate
from tgsr_jax.methods import tsrg

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "cdmer" / "ssfr"


def load(name: str, n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
  path = SHARED / f"CrossCorpus_LBPTOP_R3P8_{name}_112by112.mat"
  if path.exists() and d == 15045:
    fs = cdmer_io.read_feature_file(path, name)
    return fs.features, fs.labels - 1, f"real {path.name}"
  rng = np.random.default_rng(seed)
  x = rng.dirichlet(np.ones(d), size=n) * 255.0          # rows sum to 255, as LBP-TOP's do
  return x, rng.integers(0, 3, n), f"synthetic ({n} x {d})"


def numpy_seconds_per_iteration(xs: np.ndarray, xt: np.ndarray, lam: float, mu: float,
                                iterations: int) -> float:
  """Seconds per iteration of the plain NumPy ALM (`reference.regeneration_iterate`) at one point.

  The set-up (kernels and the eigendecomposition, `reference.regeneration_setup`) is not timed.
  """
  factors = reference.regeneration_setup(xs, xt, xs, lam)
  start = time.perf_counter()
  reference.regeneration_iterate(*factors, mu, max_iterations=iterations, tol=0.0)
  return (time.perf_counter() - start) / iterations


def jax_seconds_per_iteration(kernels, xs, readout, lanes: int, precision: str,
                              iterations: int) -> float:
  """Seconds per iteration per grid point of one chunk of ``lanes`` mu values."""
  lam = np.full(lanes, 10.0)
  mu = np.asarray(_regenerate.MUS[:lanes])
  times = []
  for cap in (iterations, 2 * iterations):
    settings = _regenerate.Settings(max_iterations=cap)
    _regenerate.solve_grid(kernels, xs, readout, lam, mu, precision=precision, settings=settings)
    start = time.perf_counter()
    _regenerate.solve_grid(kernels, xs, readout, lam, mu, precision=precision, settings=settings)
    times.append(time.perf_counter() - start)
  return max(times[1] - times[0], 1e-9) / (iterations * lanes)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", default="SMIC_VIS")
  parser.add_argument("--target", default="SMIC_NIR")
  parser.add_argument("--features", type=int, default=15045, help="d (synthetic unless 15045)")
  parser.add_argument("--numpy_iterations", type=int, default=10)
  parser.add_argument("--jax_iterations", type=int, default=20)
  parser.add_argument("--iterations", type=int, default=200,
                      help="ALM iterations per grid point assumed by the projections")
  parser.add_argument("--full", action="store_true", help="also time the whole grid once")
  parser.add_argument("--full_precision", default="float32")
  args = parser.parse_args(argv)

  xs, ys, src = load(args.source, 71, args.features, 0)
  xt, _, tgt = load(args.target, 71, args.features, 1)
  print(f"source: {src}; target: {tgt}")
  grid = methods.grid_points(tsrg.METHOD.grid)
  points = grid["lambda"].size
  kernels = _regenerate.Kernels(xs, xt, xt)
  n, m = kernels.k_s.shape[0], xs.shape[1]
  readout = np.zeros((m, 3))
  record = {"numpy": numpy_seconds_per_iteration(xs, xt, 10.0, 0.01, args.numpy_iterations)}
  for precision in ("float64", "float32"):
    itemsize = 8 if precision == "float64" else 4
    lanes = _regenerate.chunk_lanes(37, 8 * n * m * itemsize, 2 << 30, 1)
    record[precision] = jax_seconds_per_iteration(kernels, xs, readout, lanes, precision,
                                                  args.jax_iterations)
    record[f"{precision}_lanes"] = lanes
  print(f"seconds per iteration per grid point (n = {n}, m = {m}):")
  print(f"  (a) NumPy loop, float64: {record['numpy']:.4f}")
  for precision in ("float64", "float32"):
    ratio = record["numpy"] / record[precision]
    record[f"speedup_{precision}"] = ratio
    print(f"  (b) batched JAX, {precision} (chunks of {record[precision + '_lanes']}): "
          f"{record[precision]:.4f}  -> {ratio:.1f}x the NumPy loop")
  total = points * args.iterations
  print(f"projected whole grid ({points} points x {args.iterations} iterations): NumPy "
        f"{total * record['numpy'] / 60:.1f} min, float64 {total * record['float64'] / 60:.1f} "
        f"min, float32 {total * record['float32'] / 60:.1f} min")
  if args.full:
    start = time.perf_counter()
    out = tsrg.fit_predict(xs, ys, xt, xt, grid, num_classes=3, precision=args.full_precision)
    record["full_seconds"] = time.perf_counter() - start
    print(f"whole grid, {args.full_precision}, one run: {record['full_seconds'] / 60:.1f} min "
          f"({out.iterations.sum()} iterations in all, {int(out.converged.sum())}/{points} "
          f"converged)")
  return record


if __name__ == "__main__":
  main()
