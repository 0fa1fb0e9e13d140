"""The domain-adaptation methods of the TGSR paper's Tables II/III, as grid-batched functions.

Every method is a :class:`Method`: a name, its default hyper-parameter grid (with where the grid
comes from), and ``fit_predict``, which fits the method at every grid point at once and predicts
the class of query samples::

  method = methods.get("TCA")
  params = methods.grid_points(method.grid)              # name -> (G,) arrays
  out = method.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  out.labels                                             # (G, Q) class indices, -1 where failed

Conventions (shared by all methods):
- rows are samples: ``xs`` (n_s, d) labelled source, ``ys`` (n_s,) class indices 0..C-1,
  ``xt`` (n_t, d) unlabelled target (the domain the method adapts to), ``xq`` (Q, d) the samples
  to predict (the target itself for the CDMER protocol; held-out source samples for label-free
  model selection). Query samples are never used to fit.
- work shared by the grid points (kernels, eigendecompositions, PCA bases) is done once per call;
  the grid points are batched.
- a grid point that fails numerically is reported in ``failed`` with labels -1; it is not fatal.

Each method lives in its own module of this package, which defines ``METHOD``.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
from typing import Callable, Mapping, Protocol

import numpy as np

# Table order of the TGSR paper (Tables II/III), and the module defining each method.
_MODULES = {
    "SVM": "svm", "IW-SVM": "iwsvm", "TCA": "tca", "GFK": "gfk", "SA": "sa", "STM": "stm",
    "TKL": "tkl", "TSRG": "tsrg", "DRLS": "drls", "TGSR": "tgsr",
}
NAMES = tuple(_MODULES)


@dataclasses.dataclass(frozen=True)
class GridPredictions:
  """A method's predictions at every point of its grid.

  Attributes:
    params: hyper-parameter name -> (G,) values, one entry per grid point.
    labels: (G, Q) predicted class indices of the query samples; -1 where the point failed.
    scores: (G, Q, C) decision values (higher means more likely), or None where the method has
      none.
    iterations: (G,) iterations of iterative methods, else None.
    converged: (G,) whether each point met its stopping rule, else None.
    failed: (G,) whether each point failed numerically (then its labels are -1).
    failure: (G,) why each failed point failed ('' where it did not, or where the method does not
      say), or None.
  """
  params: Mapping[str, np.ndarray]
  labels: np.ndarray
  scores: np.ndarray | None = None
  iterations: np.ndarray | None = None
  converged: np.ndarray | None = None
  failed: np.ndarray | None = None
  failure: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.labels.shape[0])


class FitPredict(Protocol):
  def __call__(self, xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, xq: np.ndarray,
               params: Mapping[str, np.ndarray], *, num_classes: int,
               precision: str = "float64") -> GridPredictions:
    ...


@dataclasses.dataclass(frozen=True)
class Method:
  """A comparison method.

  Attributes:
    name: the row name of Tables II/III.
    grid: the default grid, hyper-parameter name -> values; the grid is their product, in this
      key order (the first key varies slowest).
    grid_source: where the grid comes from (the paper, METHODS.md, or the choice made here).
    fit_predict: fits every grid point and predicts the query samples (see the module docstring).
    iterative: whether the method iterates (then ``iterations``/``converged`` are reported).
    labels_per_point: whether ``fit_predict`` also takes ``ys`` of shape (G, n_s), one labelling
      per grid point, sharing the work that does not depend on the labels (reverse validation's
      backward fits: :func:`fit_predict_labellings`).
  """
  name: str
  grid: Mapping[str, tuple]
  grid_source: str
  fit_predict: Callable[..., GridPredictions]
  iterative: bool = False
  labels_per_point: bool = False


def grid_points(grid: Mapping[str, tuple]) -> dict[str, np.ndarray]:
  """The product of the grid's axes: name -> (G,) values, the first axis varying slowest."""
  names = list(grid)
  if not names:
    return {}
  rows = list(itertools.product(*(tuple(grid[n]) for n in names)))
  return {n: np.asarray([r[i] for r in rows]) for i, n in enumerate(names)}


def param_arrays(params: Mapping[str, np.ndarray], names: tuple[str, ...],
                 method: str) -> tuple[np.ndarray, ...]:
  """``params[name]`` for each of ``names`` as (G,) float64 arrays, all of one length G.

  Raises:
    ValueError: naming ``method`` and the axes that are missing or of unequal length.
  """
  missing = [n for n in names if n not in params]
  if missing:
    wanted = " and ".join(repr(n) for n in names)
    raise ValueError(f"{method} params need {wanted} as (G,) arrays; missing {missing}")
  arrays = tuple(np.atleast_1d(np.asarray(params[n], np.float64)).reshape(-1) for n in names)
  if len({a.size for a in arrays}) > 1:
    raise ValueError(f"{method} params {names} must have the same length, got "
                     f"{[a.size for a in arrays]}")
  return arrays


def get(name: str) -> Method:
  """The method called ``name`` (case-insensitive; one of :data:`NAMES`)."""
  canonical = {n.upper(): n for n in NAMES}.get(name.strip().upper())
  if canonical is None:
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(NAMES)}")
  module = importlib.import_module(f"{__name__}.{_MODULES[canonical]}")
  return module.METHOD


def fit_predict_labellings(method: Method, xs: np.ndarray, ys: np.ndarray, xt: np.ndarray,
                           xq: np.ndarray, params: Mapping[str, np.ndarray], *, num_classes: int,
                           precision: str = "float64") -> GridPredictions:
  """Fits grid point ``g`` of ``params`` on the labelling ``ys[g]`` and predicts ``xq``.

  Methods with :attr:`Method.labels_per_point` take the whole (G, n_s) ``ys`` in one call (one
  set of kernels, spectra and compiled shapes for all labellings); the others are called once
  per distinct labelling with the grid points that share it.

  Args:
    method: the method.
    xs: (n_s, d) source samples; ys: (G, n_s) one labelling per grid point.
    xt, xq: unlabelled target and query samples.
    params: the grid, name -> (G,) values.
    num_classes: C.
    precision: passed to ``fit_predict``.

  Returns:
    :class:`GridPredictions` of the G points (labels, failed; iterations and converged where the
    method reports them; no scores).
  """
  ys = np.asarray(ys)
  g = ys.shape[0]
  if ys.ndim != 2 or ys.shape[1] != len(xs):
    raise ValueError(f"ys must be (G, n_s) = (G, {len(xs)}), one labelling per grid point, got "
                     f"{ys.shape}")
  sizes = {len(np.atleast_1d(v)) for v in params.values()}
  if sizes and sizes != {g}:
    raise ValueError(f"params must have one value per labelling (G = {g}), got lengths {sizes}")
  fit = dict(num_classes=num_classes, precision=precision)
  if getattr(method, "labels_per_point", False):
    out = method.fit_predict(xs, ys, xt, xq, params, **fit)
    return dataclasses.replace(out, scores=None)
  labels = np.full((g, len(xq)), -1, np.int64)
  failed = np.zeros(g, bool)
  iterative = getattr(method, "iterative", False)
  iterations = np.zeros(g, np.int64) if iterative else None
  converged = np.zeros(g, bool) if iterative else None
  distinct, group_of = np.unique(ys, axis=0, return_inverse=True)
  group_of = np.asarray(group_of).reshape(-1)
  for j, labelling in enumerate(distinct):
    members = np.flatnonzero(group_of == j)
    sub = {k: np.asarray(v)[members] for k, v in params.items()}
    out = method.fit_predict(xs, labelling, xt, xq, sub, **fit)
    labels[members] = np.asarray(out.labels)
    if out.failed is not None:
      failed[members] = np.asarray(out.failed, bool)
    if iterations is not None and out.iterations is not None:
      iterations[members] = np.asarray(out.iterations)
    if converged is not None and out.converged is not None:
      converged[members] = np.asarray(out.converged)
  return GridPredictions(params=dict(params), labels=labels, iterations=iterations,
                         converged=converged, failed=failed)
