r"""DRLS: domain regeneration in the label space (the CDMER benchmark's linear-kernel version).

Formulation (``../shared/cdmer/METHODS.md``; samples as columns, ``K_s = X^T X_s``,
``X = [X_s, X_t]``, ``k_delta = K_s 1/n_s - K_t 1/n_t``): a regenerator ``P`` (n x c) maps the
kernel of a sample to label space,

.. math::
   \min_P \|L_s - P^\top K_s\|_F^2 + \lambda \|P^\top k_\delta\|^2 + \mu \|P\|_1,

with ``L_s`` (c x n_s) the one-hot source labels; the second term matches the regenerated means of
source and target. Solved by the authors' inexact ALM (see :mod:`tgsr_jax.methods._regenerate`:
kappa from 1e-3, times 1.1 per iteration up to 1e15, ``P = T = 1`` at the start, stop at
``max |P - Q| < 1e-8``).

Classifier: none beyond the regression: a query ``x_q`` gets ``argmax P^T K_q``, ``K_q = X^T x_q``
(queries enter only through this kernel, never the fit). ``scores`` are ``P^T K_q``; a tie of the
argmax goes to the lowest class index.

Grid: the benchmark's 7 lambda x 37 mu = 259 points (METHODS.md, from the released code's grid).
Measured with this code on the ``ssfr`` features: C->V best M-F1 0.5757 / ACC 57.75 at
lambda = 10, mu = 0.6, as published; the published TYPE-I DRLS cells do not come out of the code
(METHODS.md).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from tgsr_jax import methods
from tgsr_jax.methods import _regenerate


def fit_predict(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, xq: np.ndarray,
                params: Mapping[str, np.ndarray], *, num_classes: int,
                precision: str = "float64",
                settings: _regenerate.Settings = _regenerate.Settings(),
                devices=None) -> methods.GridPredictions:
  """Fits DRLS at every ``(lambda, mu)`` of ``params`` and predicts ``xq``.

  Args:
    xs, ys: labelled source (n_s, d), (n_s,) class indices in [0, num_classes); or (G, n_s),
      one labelling per grid point (the kernels and spectra are shared by all of them).
    xt: (n_t, d) unlabelled target.
    xq: (Q, d) query samples.
    params: ``'lambda'`` and ``'mu'`` (G,) arrays.
    num_classes: C.
    precision: ``'float64'`` (reference) or ``'float32'``.
    settings: ALM settings.
    devices: devices to shard grid points over (default: all local devices).

  Returns:
    :class:`tgsr_jax.methods.GridPredictions` with scores ``P^T K_q`` (G, Q, C).
  """
  xs, ys, xt, xq = _regenerate.check_inputs(xs, ys, xt, xq, num_classes)
  lam, mu = _regenerate.grid_arrays(params, "DRLS")
  distinct, index = _regenerate.labellings(ys, lam.size)
  kernels = _regenerate.Kernels(xs, xt, xq)
  one_hot = np.eye(num_classes)[distinct]                     # (L, n_s, C)
  out = _regenerate.solve_grid(kernels, one_hot, np.eye(num_classes), lam, mu, y_index=index,
                               precision=precision, settings=settings, devices=devices)
  scores = np.einsum("nq,gnc->gqc", kernels.k_q, out.pr)
  labels = np.where(out.failed[:, None], -1, np.argmax(scores, axis=-1))
  return methods.GridPredictions(params={"lambda": lam, "mu": mu}, labels=labels, scores=scores,
                                 iterations=out.iterations, converged=out.converged,
                                 failed=out.failed)


METHOD = methods.Method(name="DRLS", grid=_regenerate.GRID, grid_source=_regenerate.GRID_SOURCE,
                        fit_predict=fit_predict, iterative=True, labels_per_point=True)
