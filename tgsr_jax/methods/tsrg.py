r"""TSRG: the target-sample re-generator (the CDMER benchmark's linear-kernel version).

Formulation (``../shared/cdmer/METHODS.md``; samples as columns, ``X = [X_s, X_t]``,
``K_s = X^T X_s``, ``k_delta = K_s 1/n_s - K_t 1/n_t``): a regenerator ``P`` (n x d) maps the
kernel of a sample back to feature space,

.. math::
   \min_P \|X_s - P^\top K_s\|_F^2 + \lambda \|P^\top k_\delta\|^2 + \mu \|P\|_1,

so that regenerated source samples stay where they are while the regenerated source and target
means coincide. Solved by the authors' inexact ALM, shared with DRLS
(:mod:`tgsr_jax.methods._regenerate`: kappa from 1e-3, times 1.1 per iteration up to 1e15,
``P = T = 1`` at the start, stop at ``max |P - Q| < 1e-8``). ``P`` is n x 15045 per grid point
on the CDMER features: the grid points run on a pool of lanes that fits ``memory_budget``.

Classifier: the benchmark's linear LIBSVM (C = 1, one-vs-one) trained once on the raw source
``X_s`` and applied to the regenerated queries ``P^T K_q`` (``K_q = X^T X_q``; queries enter only
through this kernel, never the fit). The SVM is linear, so each pairwise machine is ``(w, b)`` with
``w = sum_i alpha_i y_i x_i``, and its decision on a regenerated query is
``K_q^T (P w) + b``: one batched product for all grid points (equal to LIBSVM's decision values
up to rounding). Votes and ties follow :mod:`tgsr_jax.methods.svm` (LIBSVM's class order of first
appearance, ties to the earliest class).

Grid: the benchmark's 7 lambda x 37 mu = 259 points (METHODS.md).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from sklearn import svm as sk_svm

from tgsr_jax import methods
from tgsr_jax.methods import _regenerate
from tgsr_jax.methods import svm


def linear_ovo_machines(xs: np.ndarray, ys: np.ndarray, *, c: float = 1.0, tol: float = 1e-3
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The pairwise machines of :func:`tgsr_jax.methods.svm.linear_svm` as primal ``(w, b)``.

  Trained exactly as ``svm.ovo_svm`` trains them (LIBSVM on the precomputed linear kernel, the
  same pairs, rows and targets), then ``w`` is read from the dual coefficients.

  Args:
    xs: (n, d) training samples.
    ys: (n,) class indices.
    c: the SVM's C.
    tol: LIBSVM's stopping tolerance.

  Returns:
    ``(order, w, b)``: LIBSVM's class order (k,), weights (d, P) and biases (P,) of the
    P = k(k-1)/2 machines in LIBSVM's pair order; the decision of machine p on ``x`` is
    ``x @ w[:, p] + b[p]``, positive voting for the first class of the pair.
  """
  xs = np.asarray(xs, np.float64)
  ys = np.asarray(ys)
  order = svm.first_appearance_order(ys)
  gram = xs @ xs.T
  weights, biases = [], []
  for i in range(len(order)):
    for j in range(i + 1, len(order)):
      rows = np.flatnonzero((ys == order[i]) | (ys == order[j]))
      target = np.where(ys[rows] == order[i], 1, -1)
      machine = sk_svm.SVC(kernel="precomputed", C=c, tol=tol, shrinking=True)
      machine.fit(gram[np.ix_(rows, rows)], target)
      # decision_function(k) = k[:, support] @ dual_coef_[0] + intercept_[0].
      weights.append(xs[rows[machine.support_]].T @ machine.dual_coef_[0])
      biases.append(float(machine.intercept_[0]))
  d = xs.shape[1]
  w = np.stack(weights, axis=1) if weights else np.zeros((d, 0))
  return order, w, np.asarray(biases, np.float64)


def fit_predict(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, xq: np.ndarray,
                params: Mapping[str, np.ndarray], *, num_classes: int,
                precision: str = "float64",
                settings: _regenerate.Settings = _regenerate.Settings(),
                memory_budget: int = 2 << 30, devices=None) -> methods.GridPredictions:
  """Fits TSRG at every ``(lambda, mu)`` of ``params`` and predicts ``xq``.

  Args:
    xs, ys: labelled source (n_s, d), (n_s,) class indices in [0, num_classes); or (G, n_s),
      one labelling per grid point (the regeneration, which ignores labels, is shared).
    xt: (n_t, d) unlabelled target.
    xq: (Q, d) query samples.
    params: ``'lambda'`` and ``'mu'`` (G,) arrays.
    num_classes: C.
    precision: ``'float64'`` (reference) or ``'float32'``.
    settings: ALM settings.
    memory_budget: bytes for the iterates of one device's pool of lanes.
    devices: devices to shard grid points over (default: all local devices).

  Returns:
    :class:`tgsr_jax.methods.GridPredictions` (no scores: LIBSVM's votes decide).
  """
  xs, ys, xt, xq = _regenerate.check_inputs(xs, ys, xt, xq, num_classes)
  lam, mu = _regenerate.grid_arrays(params, "TSRG")
  distinct, index = _regenerate.labellings(ys, lam.size)
  # The regenerator does not depend on the labels: one ALM per grid point whatever its
  # labelling; each point is read out by its own labelling's machines (padded to C(C-1)/2).
  pairs = num_classes * (num_classes - 1) // 2
  machines = [linear_ovo_machines(xs, labels) for labels in distinct]
  w = np.zeros((len(distinct), xs.shape[1], pairs))
  b = np.zeros((len(distinct), pairs))
  for j, (_, w_j, b_j) in enumerate(machines):
    w[j, :, :w_j.shape[1]], b[j, :b_j.size] = w_j, b_j
  kernels = _regenerate.Kernels(xs, xt, xq)
  out = _regenerate.solve_grid(kernels, xs, w, lam, mu, readout_index=index, precision=precision,
                               settings=settings, memory_budget=memory_budget, devices=devices)
  decisions = np.einsum("nq,gnp->gqp", kernels.k_q, out.pr) + b[index][:, None, :]  # (G, Q, P)
  labels = np.empty((lam.size, xq.shape[0]), np.int64)
  for j, (order, w_j, _) in enumerate(machines):
    rows = index == j
    votes = svm.ovo_votes(decisions[rows][..., :w_j.shape[1]], order, num_classes)
    labels[rows] = svm.ovo_predict(votes, order)
  labels = np.where(out.failed[:, None], -1, labels)
  return methods.GridPredictions(params={"lambda": lam, "mu": mu}, labels=labels,
                                 iterations=out.iterations, converged=out.converged,
                                 failed=out.failed)


METHOD = methods.Method(name="TSRG", grid=_regenerate.GRID, grid_source=_regenerate.GRID_SOURCE,
                        fit_predict=fit_predict, iterative=True, labels_per_point=True)
