r"""TGSR grid-search speed: NumPy reference port vs the JAX sweep (float64, float32).

Prints, from one run on the real problem sizes (Kd = 15045, C = 3, 71 source samples for a SMIC
experiment):

  (a) fits/s of a straightforward NumPy port of the published algorithm, one grid point at a time
      (thin-SVD D step, float64: tgsr_jax.reference.fit_reference);
  (b) fits/s of the vmapped sweep in float64 and (c) in float32, on whole rows of the paper's
      85 x 271 grid (all 271 xi for a stratified random sample of kappas: iteration counts depend
      strongly on kappa, and whole rows are how the full grid is chunked);
  the projected time of the full grid (23,035 fits), the speed-up of (c) over (a), and the
  fraction of this machine's measured float32 matrix-multiply peak that (c) reaches in its main
  product (the stacked Q_g^T Q_g times the D-step correction, 2 K r^2 C flops per iteration).

  python benchmarks/tgsr_sweep.py                    # real SMIC V->N if ../shared is present
  python benchmarks/tgsr_sweep.py --source=CASME2    # 130 source samples
  python benchmarks/tgsr_sweep.py --full             # also time the whole float32 grid
  python benchmarks/tgsr_sweep.py --engine=dense     # the vmapped ALM on full matrices
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from tgsr_jax import cdmer_io
from tgsr_jax import layout
from tgsr_jax import reference
from tgsr_jax import sweep
from tgsr_jax.synthetic import features as synthetic_features

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "cdmer" / "ssfr"


def load(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
  path = SHARED / f"CrossCorpus_LBPTOP_R3P8_{name}_112by112.mat"
  if path.exists():
    fs = cdmer_io.read_feature_file(path)
    return fs.features, fs.labels - 1, f"real {path.name}"
  spec = synthetic_features.DEFAULT_DOMAINS[name]
  counts = {"CASME2": (73, 32, 25)}.get(name, (23, 28, 20))  # the real databases' sizes
  spec = synthetic_features.DomainSpec(spec.name, counts, spec.shift, spec.noise, spec.signal)
  x, y = synthetic_features.make_database(spec, seed=seed)
  return x, y - 1, f"synthetic {name} (real sizes)"


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = np.inf
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best / 1e9


def time_sweep(xs, ys, xt, yt, kappa, xi, precision, chunk_size, engine):
  groups = layout.contiguous_groups(xs.shape[1], 85)
  prepared = sweep.prepare_sweep(xs, ys, xt, yt, groups=groups, precision=precision, engine=engine)
  prepared.solve(kappa[:chunk_size], xi[:chunk_size])  # compile
  start = time.perf_counter()
  results = [r for _, _, r in sweep.iter_sweep(prepared, kappa, xi, chunk_size=chunk_size)]
  elapsed = time.perf_counter() - start
  return elapsed, sweep.SweepResult.concatenate(results)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", default="SMIC_VIS")
  parser.add_argument("--target", default="SMIC_NIR")
  parser.add_argument("--kappas", type=int, default=6,
                      help="kappa rows (x 271 xi) timed for (b), (c); stratified over 1..85")
  parser.add_argument("--reference-fits", type=int, default=16, help="grid points timed for (a)")
  parser.add_argument("--engine", default="auto", choices=("auto", "gram", "dense"))
  parser.add_argument("--chunk-size", type=int, default=64)
  parser.add_argument("--full", action="store_true", help="also time the full float32 grid")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  xs, ys, what_s = load(args.source, args.seed)
  xt, yt, what_t = load(args.target, args.seed)
  print(f"source {what_s}: {xs.shape}; target {what_t}: {xt.shape}; devices {jax.devices()}")
  kappa_all, xi_all = sweep.grid_points(range(1, 86), sweep.paper_xi_grid())
  rng = np.random.default_rng(args.seed)
  strata = np.array_split(np.arange(1, 86), args.kappas)
  rows = np.array([rng.choice(stratum) for stratum in strata])
  kappa, xi = sweep.grid_points(rows, sweep.paper_xi_grid())
  pick = rng.permutation(kappa.size)[:args.reference_fits]

  start = time.perf_counter()
  ref_iters = 0
  for k, x in zip(kappa[pick], xi[pick]):
    ref_iters += reference.fit_reference(xs, ys, xt, 177, int(k), float(x), num_classes=3).iterations
  ref_rate = args.reference_fits / (time.perf_counter() - start)

  t64, r64 = time_sweep(xs, ys, xt, yt, kappa, xi, "float64", args.chunk_size, args.engine)
  t32, r32 = time_sweep(xs, ys, xt, yt, kappa, xi, "float32", args.chunk_size, args.engine)
  rate64, rate32 = kappa.size / t64, kappa.size / t32
  peak = matmul_peak_gflops()
  r = xs.shape[0] + 1
  if args.engine == "dense":  # two products with Q per iteration: 2 x (2 Kd r C) flops
    flops32 = float(r32.iterations.sum()) * 4 * xs.shape[1] * r * 3
  else:  # one product with the stacked Q_g^T Q_g: 2 K r^2 C flops
    flops32 = float(r32.iterations.sum()) * 2 * 85 * r * r * 3
  total = kappa_all.size
  print(f"timed kappas {rows.tolist()} x {sweep.paper_xi_grid().size} xi = {kappa.size} fits, "
        f"engine {args.engine}, chunk {args.chunk_size}")
  print(f"mean ALM iterations: reference {ref_iters / args.reference_fits:.1f} "
        f"({args.reference_fits} random points of those rows), float64 {r64.iterations.mean():.1f}, "
        f"float32 {r32.iterations.mean():.1f}")
  print(f"(a) NumPy reference, one grid point at a time : {ref_rate:8.2f} fits/s")
  print(f"(b) JAX sweep float64                          : {rate64:8.2f} fits/s  "
        f"({rate64 / ref_rate:5.1f} x reference)")
  print(f"(c) JAX sweep float32                          : {rate32:8.2f} fits/s  "
        f"({rate32 / ref_rate:5.1f} x reference)")
  agree = np.mean((r64.acc == r32.acc) & (r64.mf1 == r32.mf1))
  print(f"float32 rows with the float64 ACC and M-F1     : {agree:.1%}")
  print(f"full grid ({total} fits) projected: reference {total / ref_rate / 60:.1f} min, "
        f"float64 {total / rate64 / 60:.1f} min, float32 {total / rate32 / 60:.1f} min")
  print(f"float32 matmul peak {peak:.1f} GFLOP/s; (c) reaches {flops32 / t32 / 1e9:.1f} GFLOP/s "
        f"in its main product = {flops32 / t32 / 1e9 / peak:.1%} of peak")
  if args.full:
    t, res = time_sweep(xs, ys, xt, yt, kappa_all, xi_all, "float32", args.chunk_size, args.engine)
    print(f"full float32 grid: {total} fits in {t / 60:.2f} min ({total / t:.1f} fits/s); "
          f"best M-F1 {res.mf1.max():.4f}")


if __name__ == "__main__":
  main()
