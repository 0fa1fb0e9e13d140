"""The SVM baseline, and the one-vs-one SVM every SVM-based method of Tables II/III shares.

The CDMER benchmark trains MATLAB LIBSVM (``-t 0 -c 1``: linear kernel, C = 1). For three
classes LIBSVM votes one-vs-one:

* the class order is the order of first appearance in the training labels;
* for every pair i < j of that order a binary machine is trained with class i as +1 and class j as
  -1, on the samples of those two classes only; a positive decision value votes for i;
* the prediction is the class with the most votes, a tie going to the earliest class in that
  order.

scikit-learn's ``SVC`` runs the same LIBSVM solver but sorts the classes, which breaks ties
differently (two published cells change; see ``../shared/cdmer/METHODS.md``). Here each binary
machine is scikit-learn's LIBSVM on a precomputed kernel (the same solver, tolerance 1e-3 and
shrinking as MATLAB LIBSVM's defaults), and the voting follows LIBSVM.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from sklearn import svm as sk_svm

from tgsr_jax import methods


def first_appearance_order(y: np.ndarray) -> np.ndarray:
  """The distinct values of ``y`` in the order of their first appearance (LIBSVM's order)."""
  _, first = np.unique(y, return_index=True)
  return np.asarray(y)[np.sort(first)]


def ovo_votes(decisions: np.ndarray, order: np.ndarray, num_classes: int) -> np.ndarray:
  """LIBSVM's votes from the pairwise decision values.

  Args:
    decisions: (..., P) decision values of the P = k(k-1)/2 machines, in LIBSVM's pair order
      ((0,1), (0,2), ..., (1,2), ...) over ``order``.
    order: (k,) the class indices in LIBSVM's order.
    num_classes: C, the width of the output (classes absent from training get no votes).

  Returns:
    (..., C) votes per class index.
  """
  k = len(order)
  votes = np.zeros(decisions.shape[:-1] + (num_classes,), np.int64)
  p = 0
  for i in range(k):
    for j in range(i + 1, k):
      positive = decisions[..., p] > 0
      votes[..., order[i]] += positive
      votes[..., order[j]] += ~positive
      p += 1
  return votes


def ovo_predict(votes: np.ndarray, order: np.ndarray) -> np.ndarray:
  """The class with the most votes; a tie goes to the earliest class of ``order``."""
  in_order = votes[..., order]                       # (..., k), columns in LIBSVM's order
  return order[np.argmax(in_order, axis=-1)]         # argmax returns the first maximum


def ovo_svm(k_train: np.ndarray, y: np.ndarray, k_query: np.ndarray, *, num_classes: int,
            c: float = 1.0, sample_weight: np.ndarray | None = None,
            tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
  """Trains LIBSVM's one-vs-one SVM on a precomputed kernel and predicts the query samples.

  Args:
    k_train: (n, n) kernel between the training samples.
    y: (n,) class indices of the training samples.
    k_query: (Q, n) kernel between the query and the training samples.
    num_classes: C.
    c: the SVM's C.
    sample_weight: (n,) per-sample multipliers of C (IW-SVM, STM), or None.
    tol: LIBSVM's stopping tolerance (``-e``; 1e-3 is its default).

  Returns:
    labels (Q,) and decision values (Q, P) of the P machines in LIBSVM's pair order.
  """
  y = np.asarray(y)
  order = first_appearance_order(y)
  decisions = []
  for i in range(len(order)):
    for j in range(i + 1, len(order)):
      rows = np.flatnonzero((y == order[i]) | (y == order[j]))
      target = np.where(y[rows] == order[i], 1, -1)
      machine = sk_svm.SVC(kernel="precomputed", C=c, tol=tol, shrinking=True)
      weight = None if sample_weight is None else np.asarray(sample_weight, np.float64)[rows]
      machine.fit(k_train[np.ix_(rows, rows)], target, sample_weight=weight)
      # classes_ is [-1, 1]: a positive decision value means +1, i.e. class order[i].
      decisions.append(machine.decision_function(k_query[:, rows]))
  decisions = np.stack(decisions, axis=-1) if decisions else np.zeros((len(k_query), 0))
  votes = ovo_votes(decisions, order, num_classes)
  return ovo_predict(votes, order), decisions


def linear_svm(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, *, num_classes: int,
               c: float = 1.0, sample_weight: np.ndarray | None = None):
  """:func:`ovo_svm` with the linear kernel (LIBSVM ``-t 0``); returns labels and decisions."""
  xs = np.asarray(xs, np.float64)
  xq = np.asarray(xq, np.float64)
  return ovo_svm(xs @ xs.T, ys, xq @ xs.T, num_classes=num_classes, c=c,
                 sample_weight=sample_weight)


def _fit_predict(xs, ys, xt, xq, params: Mapping[str, np.ndarray], *, num_classes: int,
                 precision: str = "float64") -> methods.GridPredictions:
  """The SVM baseline: no adaptation, ``xt`` is not used; one grid point per C value."""
  del xt, precision  # LIBSVM trains in double precision
  cs = np.asarray(params.get("C", [1.0]), np.float64)
  labels, scores = [], []
  for c in cs:
    lab, dec = linear_svm(xs, ys, xq, num_classes=num_classes, c=float(c))
    labels.append(lab)
    scores.append(dec)
  return methods.GridPredictions(params={"C": cs}, labels=np.stack(labels),
                                 failed=np.zeros(len(cs), bool))


METHOD = methods.Method(
    name="SVM", grid={"C": (1.0,)},
    grid_source="no tuning: LIBSVM, linear kernel, C = 1, as in the CDMER benchmark",
    fit_predict=_fit_predict)
