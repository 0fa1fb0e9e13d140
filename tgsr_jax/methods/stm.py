"""STM: the selective transfer machine (Chu, De la Torre and Cohn, CVPR 2013).

Formulation (binary, labels y_i in {+1, -1}). STM learns a classifier f(x) = w^T phi(x) + b and
non-negative source weights s jointly:

  min_{w, b, s}  1/2 ||w||^2 + C sum_i s_i loss(y_i, f(x_i)) + lambda Omega(s),
  Omega(s) = 1/2 s^T K s - kappa^T s,   kappa_i = (n_s / n_t) sum_j k(x_i, x_t_j),
  s.t.  0 <= s_i <= B,  |sum_i s_i - n_s| <= n_s eps,

Omega being kernel mean matching (KMM): the weighted source mean should match the target mean in
feature space. It alternates the two blocks:

1. fix s: a sample-weighted SVM (per-sample C s_i), LIBSVM here (hinge loss; the paper's primal
   Newton solver uses the squared hinge);
2. fix (w, b): with the hinge losses l_i = max(0, 1 - y_i f(x_i)), a QP in s:
   min_s 1/2 s^T K s - kappa^T s + (C / lambda) l^T s under the same constraints.

It starts from s = 1 (the plain SVM), runs ``ALTERNATIONS`` = 5 weight steps (the paper reports
convergence within a few alternations; ``converged`` says whether the last step moved every weight
by less than 1e-3 x max(1, max s)), and ends with the SVM on the final weights.

Multi-class: one-vs-one as LIBSVM (class order of first appearance, a tied vote to the earliest
class; :mod:`tgsr_jax.methods.svm`), each binary machine its own STM on the source rows of its two
classes against the whole (unlabelled) target.

Conventions: the linear kernel (the CDMER SVM baseline's) for both the SVM and KMM; B = 1000 and
eps = (sqrt(n) - 1) / sqrt(n) (n the machine's source rows), the usual KMM defaults (Huang et al.,
NIPS 2006), which the STM paper inherits. Queries (never used to fit) are classified by the final
machines.

Computation: per binary machine the kernel, kappa and the constraints are shared by every grid
point; each weight step solves the QPs of all grid points together (the dense interior point
solver :func:`tgsr_jax.methods._adaptation.solve_qp`, vectorised over the grid); the SVMs (about
a millisecond each) are trained per grid point.

Grid (no published grid; chosen here): C in {0.1, 1, 10} x lambda in {1e-4, ..., 100} (lambda
enters only through C / lambda against the kernel's scale; lambda -> 0 lets the losses drive the
weights, a large lambda leaves KMM weights: on the SMIC LBP-TOP features (linear kernel entries
about 20) every lambda >= 1 gives the same predictions, so the grid extends downwards). A point
fails (labels -1) where a QP does not converge, an SVM cannot be trained, or C or lambda is not
positive; ``failure`` says which. The weight QPs are solved in float64 whatever ``precision``
(n <= 130 variables on the host: float32 saves nothing there, and its interior point iteration
does not reach its tolerance where C / lambda >= 1e4 scales the losses far above the kernel,
which failed those points on the synthetic benchmarks).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from sklearn import svm as sk_svm

from tgsr_jax import methods
from tgsr_jax.methods import _adaptation as ad
from tgsr_jax.methods import svm

GRID = {"C": (0.1, 1.0, 10.0), "lambda": (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)}
ALTERNATIONS = 5
WEIGHT_BOUND = 1000.0


def kmm_constraints(n: int, bound: float = WEIGHT_BOUND, eps: float | None = None):
  """G, h with G s <= h  <=>  0 <= s <= B and |sum s - n| <= n eps (eps None: KMM's default)."""
  eps = (np.sqrt(n) - 1.0) / np.sqrt(n) if eps is None else eps
  eye = np.eye(n)
  g = np.concatenate([eye, -eye, np.ones((1, n)), -np.ones((1, n))])
  h = np.concatenate([np.full(n, bound), np.zeros(n), [n * (1 + eps)], [-n * (1 - eps)]])
  return g, h


def weight_step(k: np.ndarray, kappa: np.ndarray, losses: np.ndarray, ratio: np.ndarray, *,
                dtype=np.float64):
  """The weight QPs of all grid points, together: min 1/2 s^T K s - kappa^T s + ratio_g l_g^T s.

  Args:
    k: (n, n) kernel of the machine's source rows; kappa: (n,).
    losses: (G, n) hinge losses of the current machines; ratio: (G,) C / lambda.
    dtype: the precision of the QP iteration.

  Returns:
    weights (G, n), and whether each QP converged (G,).
  """
  q = -np.asarray(kappa)[None, :] + np.asarray(ratio)[:, None] * np.asarray(losses)
  s, _, met = ad.solve_qp(k, q, *kmm_constraints(len(kappa)), dtype=dtype)
  return s, met


def _machine(k: np.ndarray, target: np.ndarray, weights: np.ndarray, c: float):
  machine = sk_svm.SVC(kernel="precomputed", C=c, tol=1e-3, shrinking=True)
  return machine.fit(k, target, sample_weight=weights)


def stm_binary(k_pair: np.ndarray, target: np.ndarray, kappa: np.ndarray, cs: np.ndarray,
               lams: np.ndarray, *, precision: str = "float64",
               alternations: int = ALTERNATIONS):
  """One binary STM at every (C, lambda) point.

  Args:
    k_pair: (n, n) kernel of the machine's source rows; target: (n,) labels +1 / -1.
    kappa: (n,) the KMM vector of these rows against the target.
    cs, lams: (G,) the grid.
    precision: accepted for the common signature; the weight QPs and the SVMs run in double
      precision (see the module docstring).
    alternations: the number of weight steps.

  Returns:
    the fitted machines (a list, None where a point failed), the final weights (G, n),
    per-point flags: converged (the last step moved the weights by < 1e-3 x max(1, max s)), and
    (G,) why a point failed ('' where it did not).
  """
  n, size = len(target), len(cs)
  weights = np.ones((size, n))
  alive = np.ones(size, bool)
  settled = np.zeros(size, bool)
  machines: list = [None] * size
  failure = np.full(size, "", dtype=object)
  for step in range(alternations + 1):
    losses = np.zeros((size, n))
    for p in np.flatnonzero(alive):
      try:
        machines[p] = _machine(k_pair, target, weights[p], float(cs[p]))
      except ValueError as e:
        machines[p], alive[p] = None, False
        failure[p] = f"SVM of weight step {step} cannot be trained ({e})"
        continue
      losses[p] = np.maximum(0.0, 1.0 - target * machines[p].decision_function(k_pair))
    if step == alternations:
      break
    new, met = weight_step(k_pair, kappa, losses, cs / lams)
    new = np.asarray(new, np.float64)
    new = np.clip(new, 0.0, None)
    moved = np.max(np.abs(new - weights), axis=1)
    settled = moved <= 1e-3 * np.maximum(1.0, np.max(new, axis=1))
    lost = alive & ~(met & np.all(np.isfinite(new), axis=1))
    failure[lost] = f"weight QP of step {step + 1} did not converge"
    alive &= ~lost
    weights = np.where(alive[:, None], new, weights)
  machines = [m if a else None for m, a in zip(machines, alive)]
  return machines, weights, settled & alive, failure.astype(str)


def _fit_predict(xs, ys, xt, xq, params: Mapping[str, np.ndarray], *, num_classes: int,
                 precision: str = "float64") -> methods.GridPredictions:
  """STM at every (C, lambda) grid point; see the module docstring."""
  xs, ys, xt, xq = ad.check_inputs(xs, ys, xt, xq, num_classes)
  size = ad.grid_size(params, ("C", "lambda"))
  cs = np.asarray(params["C"], np.float64)
  lams = np.asarray(params["lambda"], np.float64)
  valid = (cs > 0) & (lams > 0)
  order = svm.first_appearance_order(ys)
  pairs = [(i, j) for i in range(len(order)) for j in range(i + 1, len(order))]
  decisions = np.zeros((size, len(xq), len(pairs)))
  failure = np.where(valid, "", "C and lambda must be positive").astype(object)
  ok = valid.copy()
  converged = valid.copy()
  if precision not in ad.PRECISIONS:
    raise ValueError(f"precision must be one of {ad.PRECISIONS}, got {precision!r}")
  # The linear kernel in float64 on the host: the SVMs train in double precision regardless.
  k_ss, k_st, k_qs = xs @ xs.T, xs @ xt.T, xq @ xs.T
  for col, (i, j) in enumerate(pairs if valid.any() else []):
    rows = np.flatnonzero((ys == order[i]) | (ys == order[j]))
    target = np.where(ys[rows] == order[i], 1, -1)
    kappa = len(rows) / len(xt) * k_st[rows].sum(axis=1)
    machines, _, settled, why = stm_binary(k_ss[np.ix_(rows, rows)], target, kappa, cs[valid],
                                           lams[valid], precision=precision)
    for p, machine, s, reason in zip(np.flatnonzero(valid), machines, settled, why):
      if machine is None:
        if ok[p]:
          failure[p] = f"machine {order[i]} vs {order[j]}: {reason}"
        ok[p] = converged[p] = False
        continue
      converged[p] &= bool(s)
      decisions[p, :, col] = machine.decision_function(k_qs[:, rows])
  labels = [svm.ovo_predict(svm.ovo_votes(decisions[p], order, num_classes), order)
            if ok[p] else None for p in range(size)]
  out = ad.assemble({"C": cs, "lambda": lams}, labels, len(xq),
                    iterations=np.where(valid, ALTERNATIONS, 0), converged=converged,
                    failure=failure.astype(str))
  return out


METHOD = methods.Method(
    name="STM", grid=GRID,
    grid_source=("chosen here from Chu et al., CVPR 2013 (no published CDMER grid): C in "
                 "{0.1, 1, 10} x lambda in {1e-4, ..., 100}; linear kernel, KMM B = 1000, "
                 f"eps = (sqrt(n) - 1)/sqrt(n), {ALTERNATIONS} alternations, one-vs-one"),
    fit_predict=_fit_predict, iterative=True)
