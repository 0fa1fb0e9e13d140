"""TCA: transfer component analysis (Pan, Tsang, Kwok and Yang, IEEE TNN 22(2), 2011).

Formulation (the journal paper, Sec. IV-B). With X = [X_s; X_t] (n = n_s + n_t rows), the kernel
K = k(X, X) (n x n), the MMD matrix L = e e^T with e_i = 1/n_s on source rows and -1/n_t on target
rows, and the centring matrix H = I - 11^T / n, TCA solves

  min_W tr(W^T K L K W) + mu tr(W^T W)   s.t.   W^T K H K W = I,

whose solution W (n x m) is the m leading eigenvectors of (K L K + mu I)^-1 K H K. Every sample x
is embedded as z(x) = k(x, X) W; a query row x_q (never used to fit) is embedded out of sample by
the same formula through its kernel with the fitting samples.

Two placements of mu circulate: the conference version (and e.g. ``skada``) uses
(I + mu K L K)^-1 K H K, i.e. mu there is 1/mu here. This module follows the journal paper.

Convention: the eigenvectors are those of the (non-symmetric) matrix above, scaled to unit
Euclidean norm (what an eigen-solver returns for it; the constraint W^T K H K W = I would instead
scale every component to unit scatter, which weights the components differently under the SVM).

Computation: K, the vector K e (K L K = (K e)(K e)^T) and K H K are formed once per kernel; the
eigendecomposition K L K = Q diag(s) Q^T gives (K L K + mu I)^-1/2 = Q diag((s + mu)^-1/2) Q^T for
every mu, so each mu is one symmetric eigenproblem of (K L K + mu I)^-1/2 K H K (K L K + mu I)^-1/2,
batched over the mu values with ``vmap``; W = (K L K + mu I)^-1/2 V. The embedding dimensions of
the grid are prefixes of one eigenvector set per (kernel, mu).

Classifier: LIBSVM's linear one-vs-one SVM (C = 1, :func:`tgsr_jax.methods.svm.ovo_svm`) on the
embedded source samples, applied to the embedded queries.

Grid (no published grid; chosen from the paper): the kernel in {linear, RBF} (the paper uses both;
RBF gamma = 1 / (rbf_width x the mean squared distance between the rows of X), width 1 by
default), mu in {1e-3, ..., 1e3} (the paper's sensitivity study spans this range, default mu = 1)
and the dimension m in {5, 10, 20, 30, 40, 50, 60} (below n_t - 1 = 70 for SMIC). A point fails
(labels -1) where mu <= 0, m exceeds n or the embedding is not finite.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tgsr_jax import methods
from tgsr_jax.methods import _adaptation as ad

GRID = {
    "kernel": ("linear", "rbf"),
    "mu": (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3),
    "dim": (5, 10, 20, 30, 40, 50, 60),
}


def tca_factors(k: jax.Array, num_source: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The work shared by every mu: K H K and the eigendecomposition of K L K.

  Args:
    k: (n, n) kernel of the source rows followed by the target rows.
    num_source: n_s.

  Returns:
    K H K (n, n), and the eigenvalues s (n,) and eigenvectors Q (n, n) of K L K.
  """
  n = k.shape[0]
  e = jnp.where(jnp.arange(n) < num_source, 1.0 / num_source, -1.0 / (n - num_source))
  ke = k @ e.astype(k.dtype)
  hk = k - jnp.mean(k, axis=0, keepdims=True)          # H K
  khk = hk.T @ hk                                       # K H H K = K H K (H idempotent)
  s, q = jnp.linalg.eigh(jnp.outer(ke, ke))
  return khk, jnp.maximum(s, 0.0), q


def tca_components(khk: jax.Array, s: jax.Array, q: jax.Array, mu: jax.Array):
  """Eigenvalues (descending) and unit-norm eigenvectors of (K L K + mu I)^-1 K H K.

  Args:
    khk, s, q: from :func:`tca_factors`.
    mu: scalar trade-off (> 0).

  Returns:
    eigenvalues (n,) in descending order and W (n, n), column i the i-th eigenvector.
  """
  a_isqrt = (q * jax.lax.rsqrt(s + mu)) @ q.T
  m = a_isqrt @ khk @ a_isqrt
  lam, v = jnp.linalg.eigh(0.5 * (m + m.T))
  w = a_isqrt @ v[:, ::-1]
  return lam[::-1], w / jnp.linalg.norm(w, axis=0, keepdims=True)


@jax.jit
def _components_over_mu(khk, s, q, mus):
  return jax.vmap(tca_components, in_axes=(None, None, None, 0))(khk, s, q, mus)


def _fit_predict(xs, ys, xt, xq, params: Mapping[str, np.ndarray], *, num_classes: int,
                 precision: str = "float64") -> methods.GridPredictions:
  """TCA at every (kernel, rbf_width, mu, dim, C) grid point; see the module docstring."""
  xs, ys, xt, xq = ad.check_inputs(xs, ys, xt, xq, num_classes)
  size = ad.grid_size(params, ("mu", "dim"))
  mus = np.asarray(params["mu"], np.float64)
  dims = np.asarray(params["dim"]).astype(np.int64)
  kinds = ad.param(params, "kernel", "linear", size).astype(str)
  widths = ad.param(params, "rbf_width", 1.0, size).astype(np.float64)
  cs = ad.param(params, "C", 1.0, size).astype(np.float64)
  ad.check_kernels(kinds)
  n = len(xs) + len(xt)
  labels: list = [None] * size
  with ad.precision_scope(precision) as dtype:
    x = jnp.asarray(np.concatenate([xs, xt]), dtype)
    xq_j = jnp.asarray(xq, dtype)
    # Points sharing a kernel share K, K H K and the eigendecomposition of K L K.
    for kind, width in sorted({(kd, w if kd == "rbf" else 0.0) for kd, w in zip(kinds, widths)}):
      group = np.flatnonzero((kinds == kind) & ((widths == width) | (kind == "linear")))
      gamma = ad.rbf_gamma(x, width) if kind == "rbf" else 1.0
      k = ad.kernel(x, x, kind, gamma)
      kq = np.asarray(ad.kernel(xq_j, x, kind, gamma), np.float64)
      khk, s, q = tca_factors(k, len(xs))
      valid_mu = np.unique(mus[group][mus[group] > 0])
      if valid_mu.size == 0:
        continue
      _, w_all = _components_over_mu(khk, s, q, jnp.asarray(valid_mu, dtype))
      w_all = np.asarray(w_all, np.float64)
      k64 = np.asarray(k, np.float64)
      for g in group:
        if mus[g] <= 0 or not 1 <= dims[g] <= n:
          continue
        w = w_all[np.searchsorted(valid_mu, mus[g]), :, :dims[g]]
        labels[g] = ad.svm_on_features(k64[:len(xs)] @ w, ys, kq @ w, num_classes=num_classes,
                                       c=float(cs[g]))
  out_params = {"kernel": kinds, "rbf_width": widths, "mu": mus, "dim": dims, "C": cs}
  return ad.assemble(out_params, labels, len(xq))


METHOD = methods.Method(
    name="TCA", grid=GRID,
    grid_source=("chosen here from Pan et al., IEEE TNN 2011 (no published CDMER grid): kernel "
                 "linear or RBF (width 1 x mean squared distance), mu 1e-3..1e3, dimension 5..60; "
                 "linear SVM (C = 1) on the embedding"),
    fit_predict=_fit_predict)
