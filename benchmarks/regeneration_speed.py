r"""TSRG grid speed: a NumPy loop of the authors' ALM vs the batched JAX grid (float64, float32).

TSRG's regenerator is n x 15045 per grid point; every ALM iteration multiplies it by an n x n
matrix, so its 259-point grid is the costliest of Tables II/III. Prints, from one run:

  (a) seconds per iteration of one grid point in a plain NumPy loop (float64, the formula of
      METHODS.md as written: ``U diag(1 / (D + kappa/2)) U^T (K_s X_s^T + (kappa P + T) / 2)``);
  (b) seconds per iteration per grid point of the batched grid (tgsr_jax.methods._regenerate),
      in float64 and float32, on both of its paths: the lane pool (``column_block=0``, each
      lane running one point over all of P's columns) and the column-blocked path (the default
      on a CPU: one point at a time, each cache-sized block of columns iterating from cache;
      ``--column_block`` sets its width, default automatic), measured as the difference of two
      runs of ``2 x lanes`` points capped at k and 2k iterations (compilation excluded; best of
      ``--repeats`` runs each, as the machine may be shared);
  the speed-up of (b) over (a), the fraction of this machine's measured GEMM peak (the same
  precision) and copy bandwidth reached (model: ``2 n^2 m`` flops and six ``n x m`` arrays
  read or written per iteration and point), the ceiling on any speed-up over (a) that an
  iteration of ``2 n^2 m`` flops allows at that peak, and the projected whole-grid times for
  ``--iterations`` per point (the issue's estimate: about 200). ``--full`` also runs the whole
  grid (``--full_precision``; ``--full_points`` keeps the first points) once and compares
  it with the NumPy loop's time for the same points and iterations (the float64 iteration counts
  equal the NumPy loop's, tests/test_methods_tsrg.py).

  python -m benchmarks.regeneration_speed                    # real SMIC V->N if ../shared exists
  python -m benchmarks.regeneration_speed --full             # plus the whole grid, one run
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax
import numpy as np

from benchmarks import cdmer_methods
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
                              iterations: int, repeats: int = 2,
                              column_block: int | None = 0) -> float:
  """Seconds per iteration per grid point of ``2 lanes`` points (``column_block`` as in
  ``_regenerate.Settings``: 0 the lane pool of ``lanes`` lanes, None/w > 0 the blocked path)."""
  points = 2 * lanes
  lam = np.full(points, 10.0)
  mu = np.resize(np.asarray(_regenerate.MUS), points)
  itemsize = 8 if precision == "float64" else 4
  budget = lanes * 8 * kernels.k_s.shape[0] * xs.shape[1] * itemsize
  best = {}
  for cap in (iterations, 2 * iterations):
    # tol 0: every point runs exactly `cap` iterations.
    settings = _regenerate.Settings(max_iterations=cap, tol=0.0, column_block=column_block)
    run = lambda: _regenerate.solve_grid(kernels, xs, readout, lam, mu,  # noqa: E731
                                         precision=precision, settings=settings,
                                         memory_budget=budget, devices=jax.local_devices()[:1])
    run()
    best[cap] = min(_timed(run) for _ in range(repeats))
  return max(best[2 * iterations] - best[iterations], 1e-9) / (iterations * points)


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", default="SMIC_VIS")
  parser.add_argument("--target", default="SMIC_NIR")
  parser.add_argument("--features", type=int, default=15045, help="d (synthetic unless 15045)")
  parser.add_argument("--numpy_iterations", type=int, default=10)
  parser.add_argument("--jax_iterations", type=int, default=20)
  parser.add_argument("--iterations", type=int, default=200,
                      help="ALM iterations per grid point assumed by the projections")
  parser.add_argument("--lanes", type=int, default=4, help="pool lanes timed in (b)")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--column_block", type=int, default=-1,
                      help="width of the blocked path's column blocks (-1: automatic)")
  parser.add_argument("--peak_size", type=int, default=2048, help="GEMM size of the peak")
  parser.add_argument("--full", action="store_true", help="also time the whole grid once")
  parser.add_argument("--full_precision", default="float32")
  parser.add_argument("--full_points", type=int, default=0,
                      help="run only the first N points of the grid (0: all 259)")
  args = parser.parse_args(argv)

  xs, ys, src = load(args.source, 71, args.features, 0)
  xt, _, tgt = load(args.target, 71, args.features, 1)
  print(f"source: {src}; target: {tgt}")
  grid = methods.grid_points(tsrg.METHOD.grid)
  if args.full_points:
    grid = {k: v[:args.full_points] for k, v in grid.items()}
  points = grid["lambda"].size
  kernels = _regenerate.Kernels(xs, xt, xt)
  n, m = kernels.k_s.shape[0], xs.shape[1]
  readout = np.zeros((m, 3))
  peak = {"float64": cdmer_methods.measured_peak(np.float64, args.peak_size),
          "float32": cdmer_methods.measured_peak(np.float32, args.peak_size)}
  bandwidth = cdmer_methods.measured_bandwidth()
  print(f"measured GEMM peak: float64 {peak['float64'] / 1e9:.1f}, float32 "
        f"{peak['float32'] / 1e9:.1f} GFLOP/s; copy bandwidth {bandwidth / 1e9:.1f} GB/s")
  record = {"numpy": min(numpy_seconds_per_iteration(xs, xt, 10.0, 0.01, args.numpy_iterations)
                         for _ in range(args.repeats))}
  block = None if args.column_block < 0 else args.column_block
  platform = jax.local_devices()[0].platform
  flops = 2 * n * n * m
  for precision in ("float64", "float32"):
    itemsize = 8 if precision == "float64" else 4
    blocks, width = _regenerate.column_blocks(n, m, itemsize, block, platform)
    record[f"blocks_{precision}"] = (blocks, width)
    # The blocked row only where the grid would block (a CPU, or --column_block given).
    for path, column_block in (("pool", 0), ("blocked", block))[:2 if blocks else 1]:
      record[f"{path}_{precision}"] = jax_seconds_per_iteration(
          kernels, xs, readout, args.lanes, precision, args.jax_iterations, args.repeats,
          column_block=column_block)
    # The grid's default path on this CPU.
    record[precision] = record[f"blocked_{precision}" if blocks else f"pool_{precision}"]
  print(f"seconds per iteration per grid point (n = {n}, m = {m}; {flops / 1e6:.0f} MFLOP):")
  print(f"  (a) NumPy loop, float64: {record['numpy']:.4f}  "
        f"({100 * flops / record['numpy'] / peak['float64']:.0f}% of the float64 peak)")
  for precision in ("float64", "float32"):
    itemsize = 8 if precision == "float64" else 4
    blocks, width = record[f"blocks_{precision}"]
    for path in ("pool", "blocked")[:2 if blocks else 1]:
      seconds = record[f"{path}_{precision}"]
      label = (f"lane pool, {args.lanes} lanes" if path == "pool"
               else f"column blocks, {blocks} x {width}")
      print(f"  (b) batched JAX, {precision}, {label}: {seconds:.4f}  -> "
            f"{record['numpy'] / seconds:.1f}x the NumPy loop; "
            f"{100 * flops / seconds / peak[precision]:.0f}% of the {precision} GEMM peak, "
            f"{100 * 6 * n * m * itemsize / seconds / bandwidth:.0f}% of the copy bandwidth")
    record[f"speedup_{precision}"] = record["numpy"] / record[precision]
    record[f"peak_{precision}"] = flops / record[precision] / peak[precision]
    record[f"bandwidth_{precision}"] = 6 * n * m * itemsize / record[precision] / bandwidth
    record[f"ceiling_{precision}"] = record["numpy"] / (flops / peak[precision])
    print(f"      ceiling at the {precision} peak ({flops / 1e6:.0f} MFLOP in "
          f"{1e3 * flops / peak[precision]:.1f} ms): {record[f'ceiling_{precision}']:.1f}x "
          f"the NumPy loop")
  total = points * args.iterations
  print(f"projected whole grid ({points} points x {args.iterations} iterations): NumPy "
        f"{total * record['numpy'] / 60:.1f} min, float64 {total * record['float64'] / 60:.1f} "
        f"min, float32 {total * record['float32'] / 60:.1f} min")
  if args.full:
    start = time.perf_counter()
    out = tsrg.fit_predict(xs, ys, xt, xt, grid, num_classes=3, precision=args.full_precision,
                           settings=_regenerate.Settings(column_block=block))
    record["full_seconds"] = time.perf_counter() - start
    numpy_seconds = out.iterations.sum() * record["numpy"]
    record["full_speedup"] = numpy_seconds / record["full_seconds"]
    print(f"whole grid ({points} points), {args.full_precision}, one run: "
          f"{record['full_seconds'] / 60:.1f} min ({out.iterations.sum()} iterations in all, "
          f"mean {out.iterations.mean():.0f}, {int(out.converged.sum())}/{points} converged); "
          f"the NumPy loop for the same iterations: {numpy_seconds / 60:.1f} min -> "
          f"{record['full_speedup']:.1f}x")
  return record


if __name__ == "__main__":
  main()
