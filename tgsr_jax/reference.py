"""A straightforward NumPy port of the published TGSR algorithm, one grid point at a time.

This is the independent reference the JAX solver is tested and benchmarked against. It follows
the authors' code line by line (see ``../shared/cdmer/README.md``): columns are samples, the D step
uses the thin SVD of X~ (never a Kd x Kd matrix), double precision.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ReferenceFit:
  coef: np.ndarray  # (Kd, C)
  iterations: int
  converged: bool


def fit_reference(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, group_size: int, kappa: int,
                  xi: float, *, num_classes: int, mu: float = 1e-3,
                  rho: float = 1.1, mu_max: float = 1e15, tol: float = 1e-8,
                  max_iterations: int = 1_000_000,
                  group_ids: np.ndarray | None = None) -> ReferenceFit:
  """Fits TGSR by inexact ALM exactly as the authors' code does (consecutive equal groups).

  Args:
    xs: source features (ns, Kd), rows are samples.
    ys: source labels (ns,), ints in [0, num_classes).
    xt: target features (nt, Kd).
    group_size: columns per group; groups are consecutive chunks of this size.
    group_ids: optional (Kd,) group id per column (any sizes); overrides ``group_size``.
    kappa: number of groups kept.
    xi: weight of the MMD term.
    num_classes: C.
    mu, rho, mu_max, tol, max_iterations: ALM settings (the authors' defaults).

  Returns:
    The coefficient matrix C (Kd, num_classes), iterations used and whether it converged.
  """
  xs = np.asarray(xs, np.float64)
  xt = np.asarray(xt, np.float64)
  kd = xs.shape[1]
  if group_ids is None:
    group_ids = np.repeat(np.arange(kd // group_size), group_size)
  group_ids = np.asarray(group_ids)
  num_groups = int(group_ids.max()) + 1
  labels = np.zeros((num_classes, xs.shape[0]))
  labels[np.asarray(ys), np.arange(xs.shape[0])] = 1.0
  delta = xs.mean(0) - xt.mean(0)
  x_tilde = np.concatenate([xs.T, np.sqrt(xi) * delta[:, None]], axis=1)  # Kd x (ns+1)
  l_tilde = np.concatenate([labels, np.zeros((num_classes, 1))], axis=1)
  u, s, _ = np.linalg.svd(x_tilde, full_matrices=False)
  xl = 2.0 * x_tilde @ l_tilde.T
  c = np.ones((kd, num_classes))
  p = np.zeros((kd, num_classes))
  iterations = 0
  converged = False
  while iterations < max_iterations:
    iterations += 1
    # D = (mu I + 2 U S^2 U^T)^-1 B = (B - U diag(2 s^2 / (mu + 2 s^2)) U^T B) / mu
    b = xl + p + mu * c
    d = (b - u @ ((2 * s**2 / (mu + 2 * s**2))[:, None] * (u.T @ b))) / mu
    v = d - p / mu
    norms = np.sqrt(np.bincount(group_ids, weights=(v**2).sum(axis=1), minlength=num_groups))
    if kappa < num_groups:
      threshold = np.sort(norms)[::-1][kappa]
    else:
      threshold = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
      scale = np.where(norms > threshold, (norms - threshold) / norms, 0.0)
    c = v * scale[group_ids][:, None]
    p = p + mu * (c - d)
    mu = min(rho * mu, mu_max)
    if np.max(np.abs(d - c)) < tol:
      converged = True
      break
  return ReferenceFit(coef=c, iterations=iterations, converged=converged)


def scores_reference(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[float, float]:
  """Accuracy and mean per-class F1 (a class never predicted scores 0)."""
  y_true = np.asarray(y_true)
  y_pred = np.asarray(y_pred)
  acc = float(np.mean(y_true == y_pred))
  f1s = []
  for k in range(num_classes):
    tp = np.sum((y_pred == k) & (y_true == k))
    fp = np.sum((y_pred == k) & (y_true != k))
    fn = np.sum((y_pred != k) & (y_true == k))
    f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
  return acc, float(np.mean(f1s))


def regeneration_alm(xs: np.ndarray, xt: np.ndarray, y: np.ndarray, lam: float, mu: float, *,
                     max_iterations: int = 2000, tol: float = 1e-8) -> tuple[np.ndarray, int]:
  """The inexact ALM of TSRG and DRLS (``../shared/cdmer/METHODS.md``), one grid point, plainly.

  With ``X = [X_s, X_t]`` (columns are samples), ``K_s = X^T X_s``, ``K_t = X^T X_t``,
  ``k_delta = K_s 1/n_s - K_t 1/n_t`` and ``U diag(D) U^T`` the eigendecomposition of
  ``K~ K~^T``, ``K~ = [K_s, sqrt(lambda) k_delta]``, it iterates from ``kappa = 1e-3``,
  ``P = T = 1``::

    Q = U diag(1 / (D + kappa/2)) U^T (K_s Y^T + (kappa P + T) / 2)
    P = soft_threshold(Q - T / kappa, mu / kappa)
    T = T + kappa (P - Q);  kappa = min(1.1 kappa, 1e15)

  until ``max|P - Q| < tol``. TSRG regenerates the source features (``y = xs``), DRLS the one-hot
  source labels.

  Args:
    xs: (n_s, d) source samples; xt: (n_t, d) target samples (rows are samples).
    y: (n_s, m) what is regenerated, rows matching ``xs``.
    lam, mu: the grid point.
    max_iterations: the iteration cap.
    tol: the stopping tolerance (0 runs exactly ``max_iterations`` iterations).

  Returns:
    ``P`` (n_s + n_t, m) and the iterations run.
  """
  return regeneration_iterate(*regeneration_setup(xs, xt, y, lam), mu,
                              max_iterations=max_iterations, tol=tol)


def regeneration_setup(xs: np.ndarray, xt: np.ndarray, y: np.ndarray,
                       lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The part of :func:`regeneration_alm` done once per point: ``(D, U, K_s Y^T)``."""
  xs_c, xt_c, y_c = np.asarray(xs, np.float64).T, np.asarray(xt, np.float64).T, np.asarray(
      y, np.float64).T
  x = np.concatenate([xs_c, xt_c], axis=1)
  k_s, k_t = x.T @ xs_c, x.T @ xt_c
  k_delta = k_s.mean(axis=1) - k_t.mean(axis=1)
  k_tilde = np.concatenate([k_s, np.sqrt(lam) * k_delta[:, None]], axis=1)
  d, u = np.linalg.eigh(k_tilde @ k_tilde.T)
  return d, u, k_s @ y_c.T


def regeneration_iterate(d: np.ndarray, u: np.ndarray, b0: np.ndarray, mu: float, *,
                         max_iterations: int = 2000, tol: float = 1e-8) -> tuple[np.ndarray, int]:
  """The iterations of :func:`regeneration_alm` from :func:`regeneration_setup`'s factors."""
  p = np.ones_like(b0)
  t = np.ones_like(b0)
  kappa = 1e-3
  iteration = 0
  for iteration in range(1, max_iterations + 1):
    q = u @ np.diag(1.0 / (d + kappa / 2)) @ u.T @ (b0 + (kappa * p + t) / 2)
    v = q - t / kappa
    p = np.sign(v) * np.maximum(np.abs(v) - mu / kappa, 0.0)
    t = t + kappa * (p - q)
    kappa = min(1.1 * kappa, 1e15)
    if np.max(np.abs(p - q)) < tol:
      break
  return p, iteration
