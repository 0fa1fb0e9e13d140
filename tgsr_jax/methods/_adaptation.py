"""Pieces shared by the kernel and subspace methods (TCA, GFK, SA, STM, TKL).

Kernels, PCA bases, the precision scope, the grouping of grid points that share their expensive
work, and the LIBSVM classifier on embedded samples. Numerics only: nothing here opens files.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl  # a scikit-learn dependency

from tgsr_jax import methods
from tgsr_jax.methods import svm

PRECISIONS = ("float64", "float32")
KERNELS = ("linear", "rbf")


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[jnp.dtype]:
  """Enables 64-bit JAX where ``precision`` is 'float64'; yields the dtype to compute in.

  Raises:
    ValueError: ``precision`` is not one of :data:`PRECISIONS`.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  with jax.enable_x64(precision == "float64"):
    yield jnp.float64 if precision == "float64" else jnp.float32


def check_inputs(xs, ys, xt, xq, num_classes: int):
  """Validates shapes and labels; returns float64 NumPy copies and integer labels."""
  xs, xt, xq = (np.asarray(a, np.float64) for a in (xs, xt, xq))
  ys = np.asarray(ys)
  for name, a in (("xs", xs), ("xt", xt), ("xq", xq)):
    if a.ndim != 2:
      raise ValueError(f"{name} must be 2-D (samples x features), got shape {a.shape}")
    if a.shape[1] != xs.shape[1]:
      raise ValueError(f"{name} has {a.shape[1]} features, xs has {xs.shape[1]}")
  if ys.shape != (len(xs),):
    raise ValueError(f"ys must have shape ({len(xs)},) (one label per row of xs), got {ys.shape}")
  if ys.size and (ys.min() < 0 or ys.max() >= num_classes):
    raise ValueError(f"ys must hold class indices in [0, {num_classes}), got values "
                     f"{np.unique(ys).tolist()}")
  return xs, ys.astype(np.int64), xt, xq


def param(params: Mapping[str, np.ndarray], name: str, default, size: int) -> np.ndarray:
  """The (G,) values of an optional grid axis, ``default`` at every point where it is absent."""
  if name in params:
    values = np.asarray(params[name])
    if values.shape != (size,):
      raise ValueError(f"params[{name!r}] must have shape ({size},) like the other axes, "
                       f"got {values.shape}")
    return values
  return np.asarray([default] * size)


def grid_size(params: Mapping[str, np.ndarray], required: tuple[str, ...]) -> int:
  """The number of grid points; checks that the required axes are present."""
  missing = [n for n in required if n not in params]
  if missing:
    raise ValueError(f"params lacks the grid axes {missing}; expected {list(required)}")
  return len(np.asarray(params[required[0]]))


def check_kernels(kinds: np.ndarray) -> None:
  bad = sorted({str(k) for k in kinds} - set(KERNELS))
  if bad:
    raise ValueError(f"params['kernel'] must be one of {KERNELS}, got {bad}")


def mean_sq_distance(x: jax.Array) -> jax.Array:
  """Mean squared Euclidean distance between the rows of ``x`` (the RBF width's unit)."""
  sq = jnp.sum(x * x, axis=1)
  n = x.shape[0]
  total = 2.0 * n * jnp.sum(sq) - 2.0 * jnp.sum(jnp.sum(x, axis=0) ** 2)
  return total / (n * (n - 1))


def kernel(a: jax.Array, b: jax.Array, kind: str, gamma: float | jax.Array = 1.0) -> jax.Array:
  """``linear``: a b^T; ``rbf``: exp(-gamma ||a_i - b_j||^2)."""
  ab = a @ b.T
  if kind == "linear":
    return ab
  sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * ab
  return jnp.exp(-gamma * jnp.maximum(sq, 0.0))


def rbf_gamma(x: jax.Array, width: float) -> jax.Array:
  """gamma = 1 / (width * mean squared distance between the rows of ``x``)."""
  return 1.0 / (width * mean_sq_distance(x))


def pca_basis(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The leading ``k`` principal directions of the rows of ``x`` (centred), thin.

  From the eigendecomposition of the ``n x n`` Gram matrix of the centred rows, in float64 on
  the host (``C C^T = U S^2 U^T``, basis ``C^T U S^-1``): the same directions as the thin SVD of
  ``C`` (to rounding, for singular values above ``pca_rank``'s threshold), and at n = 71,
  d = 15045 about 17x faster than XLA's CPU SVD of the wide ``n x d`` matrix (measured 0.5 s
  against 8.4 s on the loaded machine), which was most of GFK's and SA's time.

  Returns:
    basis (d, min(k, n)) with orthonormal columns (a direction whose singular value is 0 is a
    zero column), and the singular values (min(k, n),) of the centred data (a zero or tiny one
    means the data has fewer than k directions), both in ``x``'s dtype.
  """
  dtype = x.dtype
  x64 = np.asarray(x, np.float64)
  centred = x64 - x64.mean(axis=0, keepdims=True)
  eigenvalues, u = np.linalg.eigh(centred @ centred.T)
  eigenvalues, u = eigenvalues[::-1][:k], u[:, ::-1][:, :k]
  s = np.sqrt(np.clip(eigenvalues, 0.0, None))
  basis = (centred.T @ u) / np.where(s > 0, s, np.inf)
  return jnp.asarray(basis, dtype), jnp.asarray(s, dtype)


def pca_rank(singular_values: np.ndarray, n: int, d: int, dtype=None) -> int:
  """The numerical rank of a centred data matrix from :func:`pca_basis`'s singular values.

  Its Gram matrix is float64 whatever ``dtype`` (kept for the callers' signature): eigenvalues
  ``s^2`` below ``max(n, d) eps_64 s_0^2`` are rounding noise of that Gram matrix.
  """
  s = np.asarray(singular_values, np.float64)
  if s.size == 0 or s[0] <= 0:
    return 0
  return int(np.sum(s**2 > max(n, d) * np.finfo(np.float64).eps * s[0]**2))


def svm_on_kernel(k_train: np.ndarray, ys: np.ndarray, k_query: np.ndarray, *, num_classes: int,
                  c: float = 1.0, sample_weight: np.ndarray | None = None):
  """LIBSVM's one-vs-one SVM on a precomputed kernel; None where the kernel is not finite."""
  k_train = np.asarray(k_train, np.float64)
  k_query = np.asarray(k_query, np.float64)
  if not (np.all(np.isfinite(k_train)) and np.all(np.isfinite(k_query))):
    return None
  try:
    labels, _ = svm.ovo_svm(k_train, ys, k_query, num_classes=num_classes, c=c,
                            sample_weight=sample_weight)
  except ValueError:
    return None
  return labels


def svm_on_features(zs: np.ndarray, ys: np.ndarray, zq: np.ndarray, *, num_classes: int,
                    c: float = 1.0):
  """The linear SVM (LIBSVM ``-t 0``) on embedded samples; None where they are not finite."""
  zs = np.asarray(zs, np.float64)
  zq = np.asarray(zq, np.float64)
  return svm_on_kernel(zs @ zs.T, ys, zq @ zs.T, num_classes=num_classes, c=c)


def assemble(params: Mapping[str, np.ndarray], labels: list, num_queries: int, **extra):
  """GridPredictions from per-point label arrays (None = failed)."""
  failed = np.array([lab is None for lab in labels], bool)
  out = np.full((len(labels), num_queries), -1, np.int64)
  for g, lab in enumerate(labels):
    if lab is not None:
      out[g] = lab
  return methods.GridPredictions(params={k: np.asarray(v) for k, v in params.items()},
                                 labels=out, failed=failed, **extra)


def solve_qp(p: np.ndarray, q: np.ndarray, g: np.ndarray, h: np.ndarray, *, iterations: int = 60,
             tol: float | None = None,
             dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Small dense convex QPs by a primal-dual interior point method (Mehrotra's corrector).

  min_x 1/2 x^T P x + q^T x   s.t.   G x <= h,

  with P (n, n) symmetric positive semi-definite and the inequalities strictly feasible. A batch
  of problems (TKL's damping factors, STM's grid points) is solved together, vectorised over the
  leading axis (NumPy's stacked LAPACK solves: XLA's CPU Cholesky and eigh slow down by 10-100x
  from n = 128 on, which the CASME II target (n = 130) hits). The variables are scaled to a unit
  diagonal of P and the rows of G to unit norm first, which makes the iteration indifferent to the
  problems' badly mixed scales. It starts from x = 0 with slacks that satisfy every inequality
  x = 0 satisfies (a start far from loose rows, e.g. KMM's bound B, stalls the iteration).

  Args:
    p: (B, n, n) or (n, n); q: (B, n) or (n,); g: (B, m, n) or (m, n); h: (B, m) or (m,). A
      missing batch axis is broadcast; with none anywhere the outputs have none either.
    iterations: the iteration budget (a converged problem stops changing).
    tol: stopping tolerance on the scaled residuals (the primal one relative to 1 + max|h|) and
      the duality measure; None picks 1e-10 (float64) or 1e-5 (float32).
    dtype: np.float64 or np.float32, the precision of the iteration.

  Returns:
    x (B, n), the iterations used (B,), and whether the tolerance was met (B,).
  """
  dtype = np.dtype(dtype)
  tol = (1e-10 if dtype == np.float64 else 1e-5) if tol is None else tol
  single = all(np.ndim(a) == k for a, k in ((p, 2), (q, 1), (g, 2), (h, 1)))
  p, q, g, h = (np.asarray(a, dtype) for a in (p, q, g, h))
  batch = max(p.shape[0] if p.ndim == 3 else 1, q.shape[0] if q.ndim == 2 else 1,
              g.shape[0] if g.ndim == 3 else 1, h.shape[0] if h.ndim == 2 else 1)
  n, m = p.shape[-1], g.shape[-2]
  p = np.broadcast_to(p, (batch, n, n))
  q = np.broadcast_to(q, (batch, n))
  g = np.broadcast_to(g, (batch, m, n))
  h = np.broadcast_to(h, (batch, m))
  diag = np.diagonal(p, axis1=1, axis2=2)
  d = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0).astype(dtype)
  p_s = d[:, :, None] * p * d[:, None, :]
  q_s = q * d
  g_s = g * d[:, None, :]
  row = np.linalg.norm(g_s, axis=2)
  row = np.where(row > 0, row, 1.0)
  g_s, h_s = g_s / row[:, :, None], h / row
  scale = np.maximum(np.maximum(np.abs(p_s).max(axis=(1, 2)), np.abs(q_s).max(axis=1)), 1.0)
  p_s, q_s = p_s / scale[:, None, None], q_s / scale[:, None]
  h_norm = np.abs(h_s).max(axis=1)
  ridge = 1e3 * np.finfo(dtype).eps * np.eye(n, dtype=dtype)
  mv = lambda a, v: np.einsum("bij,bj->bi", a, v)  # noqa: E731
  tv = lambda a, v: np.einsum("bji,bj->bi", a, v)  # noqa: E731

  def max_step(v, dv):
    with np.errstate(divide="ignore", invalid="ignore"):
      ratio = np.where(dv < 0, -v / dv, np.inf)
    return np.minimum(1.0, ratio.min(axis=1))

  def residuals(x, s, z, lanes=slice(None)):
    return (mv(p_s[lanes], x) + q_s[lanes] + tv(g_s[lanes], z), mv(g_s[lanes], x) + s - h_s[lanes],
            np.sum(s * z, axis=1) / m)

  def met(rd, rp, mu, lanes=slice(None)):
    return ((np.abs(rd).max(axis=1) < tol) & (np.abs(rp).max(axis=1) < tol * (1.0 + h_norm[lanes]))
            & (mu < tol))

  def solve(a, b):
    try:
      return np.linalg.solve(a, b[..., None])[..., 0], np.ones(len(a), bool)
    except np.linalg.LinAlgError:  # a singular lane: solve the others one by one
      out, ok = np.zeros_like(b), np.ones(len(a), bool)
      for i in range(len(a)):
        try:
          out[i] = np.linalg.solve(a[i], b[i])
        except np.linalg.LinAlgError:
          ok[i] = False
      return out, ok

  x = np.zeros((batch, n), dtype)
  s = np.maximum(h_s, 1.0)
  z = np.ones((batch, m), dtype)
  its = np.zeros(batch, np.int64)
  done = met(*residuals(x, s, z))
  # Single-threaded BLAS: the matrices are small, and threaded OpenBLAS next to XLA's own threads
  # on a busy CPU was measured 40x slower (16 s against 0.4 s for TKL's five n = 130 QPs).
  # Each iteration works on the problems still running only (a batch costs the sum of its
  # problems' iterations, not the slowest one's times the batch); every problem's arithmetic is
  # its own, so batched and single solves agree exactly.
  with np.errstate(all="ignore"), threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
    for _ in range(iterations):
      if done.all():
        break
      run = np.flatnonzero(~done)
      ps, gs = p_s[run], g_s[run]
      xr, sr, zr = x[run], s[run], z[run]
      rd, rp, mu = residuals(xr, sr, zr, run)
      kkt = ps + np.swapaxes(gs * (zr / sr)[:, :, None], 1, 2) @ gs + ridge

      def direction(rc, rd=rd, rp=rp, kkt=kkt, gs=gs, sr=sr, zr=zr):
        dx, ok = solve(kkt, -rd - tv(gs, (-rc + zr * rp) / sr))
        ds = -rp - mv(gs, dx)
        return dx, ds, (-rc - zr * ds) / sr, ok

      dx_a, ds_a, dz_a, ok_a = direction(sr * zr)
      alpha_a = np.minimum(max_step(sr, ds_a), max_step(zr, dz_a))[:, None]
      mu_a = np.sum((sr + alpha_a * ds_a) * (zr + alpha_a * dz_a), axis=1) / m
      sigma = ((mu_a / mu) ** 3)[:, None]
      dx, ds, dz, ok = direction(sr * zr + ds_a * dz_a - sigma * mu[:, None])
      alpha = 0.99 * np.minimum(max_step(sr, ds), max_step(zr, dz))[:, None]
      new = (xr + alpha * dx, sr + alpha * ds, zr + alpha * dz)
      ok &= ok_a & np.all([np.isfinite(a).all(axis=1) for a in new], axis=0)
      keep = (~ok)[:, None]
      xr, sr, zr = (np.where(keep, old, upd) for old, upd in zip((xr, sr, zr), new))
      x[run], s[run], z[run] = xr, sr, zr
      its[run] += 1
      done[run] = ~ok | met(*residuals(xr, sr, zr, run), run)
  converged = met(*residuals(x, s, z))
  x = x * d
  if single:
    return x[0], its[0], converged[0]
  return x, its, converged
