"""SA: subspace alignment (Fernando, Habrard, Sebban and Tuytelaars, ICCV 2013).

Formulation. P_s and P_t (D x k) are the k leading principal directions of the source and the
target (PCA of each domain's centred rows). The alignment M = P_s^T P_t (k x k) minimises
||P_s M - P_t||_F, and the authors' SVM variant compares a source row x_s and a target row x_t
through the kernel

  k(x_s, x_t) = x_s P_s M P_t^T x_t^T = x_s P_s P_s^T P_t P_t^T x_t^T,

trained on k(x_s, x_s') = x_s P_s M M^T P_s^T x_s'^T. Equivalently: the linear SVM on the aligned
source z_s = x_s P_s M, applied to the projected target z_t = x_t P_t, which is how it is computed
here. The bases multiply the rows as given (not centred), as in the authors' code.

Queries: a query row x_q (never used to fit) is treated as a target-domain sample, z_q = x_q P_t.

Computation: the two thin PCA bases are computed once for the largest k of the grid (an SVD of the
n x D centred data, never a D x D matrix); every k uses prefixes: z_s(k) = (X_s P_s)[:, :k]
M[:k, :k], z_q(k) = (X_q P_t)[:, :k].

Classifier: LIBSVM's linear one-vs-one SVM, C = 1 (the authors cross-validate C on the source; the
CDMER SVM baseline uses C = 1, kept here so SA differs from it only by the alignment).

Grid (no published grid): the subspace dimension k in {5, 10, 20, ..., 70}. The paper picks k by a
stability bound and reports k in the tens; with n_t = 71 SMIC samples the centred target has at
most 70 directions, so 70 is the top. A k beyond the numerical rank of either domain fails
(labels -1).
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from tgsr_jax import methods
from tgsr_jax.methods import _adaptation as ad

GRID = {"dim": (5, 10, 20, 30, 40, 50, 60, 70)}


def pca_bases(xs: jnp.ndarray, xt: jnp.ndarray, k: int):
  """Source and target PCA bases (D x k each) and their ranks (thin SVDs)."""
  ps, s_s = ad.pca_basis(xs, k)
  pt, s_t = ad.pca_basis(xt, k)
  d = xs.shape[1]
  rank_s = ad.pca_rank(s_s, len(xs), d, xs.dtype)
  rank_t = ad.pca_rank(s_t, len(xt), d, xt.dtype)
  return ps, pt, rank_s, rank_t


def dimension_failures(dims: np.ndarray, rank_s: int, rank_t: int, n_s: int, n_t: int
                       ) -> np.ndarray:
  """Why each subspace dimension cannot be used ('' where it can): it exceeds a PCA basis' rank."""
  out = np.full(len(dims), "", dtype=object)
  for g, k in enumerate(np.asarray(dims)):
    if k < 1:
      out[g] = f"dim {k}: a subspace needs at least one direction"
    elif k > min(rank_s, rank_t):
      out[g] = (f"dim {k} exceeds the PCA rank of the source ({rank_s}, {n_s} samples) or the "
                f"target ({rank_t}, {n_t} samples): centred data has at most n - 1 directions")
  return out.astype(str)


def _fit_predict(xs, ys, xt, xq, params: Mapping[str, np.ndarray], *, num_classes: int,
                 precision: str = "float64") -> methods.GridPredictions:
  """SA at every (dim, C) grid point; see the module docstring."""
  xs, ys, xt, xq = ad.check_inputs(xs, ys, xt, xq, num_classes)
  size = ad.grid_size(params, ("dim",))
  dims = np.asarray(params["dim"]).astype(np.int64)
  cs = ad.param(params, "C", 1.0, size).astype(np.float64)
  labels: list = [None] * size
  k_max = int(min(dims.max(initial=0), len(xs), len(xt), xs.shape[1]))
  rank_s = rank_t = 0
  if k_max >= 1:
    with ad.precision_scope(precision) as dtype:
      xs_j, xt_j = jnp.asarray(xs, dtype), jnp.asarray(xt, dtype)
      ps, pt, rank_s, rank_t = pca_bases(xs_j, xt_j, k_max)
      align = np.asarray(ps.T @ pt, np.float64)                   # M = P_s^T P_t
      xs_ps = np.asarray(xs_j @ ps, np.float64)
      xq_pt = np.asarray(jnp.asarray(xq, dtype) @ pt, np.float64)
    for g in range(size):
      k = dims[g]
      if not 1 <= k <= min(rank_s, rank_t):
        continue
      zs = xs_ps[:, :k] @ align[:k, :k]
      labels[g] = ad.svm_on_features(zs, ys, xq_pt[:, :k], num_classes=num_classes,
                                     c=float(cs[g]))
  return ad.assemble({"dim": dims, "C": cs}, labels, len(xq),
                     failure=dimension_failures(dims, rank_s, rank_t, len(xs), len(xt)))


METHOD = methods.Method(
    name="SA", grid=GRID,
    grid_source=("chosen here from Fernando et al., ICCV 2013 (no published CDMER grid): subspace "
                 "dimension 5..70; linear SVM (C = 1) on the aligned source / projected target"),
    fit_predict=_fit_predict)
