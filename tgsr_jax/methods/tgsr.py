"""TGSR as a comparison :class:`tgsr_jax.methods.Method` (the last row of Tables II/III).

The fit is the TGSR sweep's (:mod:`tgsr_jax.sweep`): the problem is factored once from the source
and the unlabelled target (:func:`tgsr_jax.sweep.prepare_sweep`), the gram engine's factors are
built from the *query* rows (``prepare_sweep(xq=...)``: its logits ``Xq C`` are then the query
logits), and every chunk of (kappa, xi) grid points is solved at once; the chunk function returns
predicted labels instead of confusion matrices (:meth:`tgsr_jax.sweep.PreparedSweep.predict`).

Static structure (the grouping of the columns, the number of groups K, the ALM settings, the
chunk size) is bound by :func:`make`; ``experiments.cdmer`` builds the method from its settings.
A source without some class (e.g. a pseudo-labelled target in reverse validation) is fitted on
the classes it has; the others are never predicted.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tgsr_jax import layout
from tgsr_jax import methods
from tgsr_jax import solver
from tgsr_jax import sweep

GROUPINGS = ("contiguous", "regions")


def feature_groups(grouping: str, num_features: int, num_groups: int) -> np.ndarray:
  """Group id of every column: ``contiguous`` chunks (the authors' code) or true facial ``regions``.

  ``regions`` assumes the benchmark's column layout (:mod:`tgsr_jax.layout`).
  """
  if grouping == "contiguous":
    return layout.contiguous_groups(num_features, num_groups)
  if grouping == "regions":
    groups = layout.benchmark_region_groups()
    if num_groups != layout.num_regions():
      raise ValueError(f"config.num_groups={num_groups} disagrees with config.grouping='regions' "
                       f"({layout.num_regions()} facial regions)")
    if groups.size != num_features:
      raise ValueError(f"config.grouping='regions' needs the 85-region benchmark layout "
                       f"({groups.size} columns), got {num_features} columns")
    return groups
  raise ValueError(f"config.grouping must be one of {GROUPINGS}, got {grouping!r}")


def grid_arrays(params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """``params['kappa']`` (int) and ``params['xi']`` (float) as (G,) arrays, checked."""
  kappa, xi = methods.param_arrays(params, ("kappa", "xi"), "TGSR")
  kappa = kappa.astype(np.int64)
  if not np.all(np.isfinite(xi)) or np.any(xi < 0):
    raise ValueError(f"TGSR params 'xi' must be finite and >= 0, got {xi}")
  return kappa, xi


def fit_predict(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, xq: np.ndarray,
                params: Mapping[str, np.ndarray], *, num_classes: int,
                precision: str = "float64", grouping: str = "contiguous", num_groups: int = 85,
                settings: solver.Settings = solver.Settings(), chunk_size: int = 64,
                devices=None) -> methods.GridPredictions:
  """Fits TGSR at every ``(kappa, xi)`` of ``params`` and predicts ``xq``.

  Args:
    xs, ys: labelled source (n_s, d), (n_s,) class indices in [0, num_classes).
    xt: (n_t, d) unlabelled target (the domain of the MMD term).
    xq: (Q, d) query samples (never used to fit).
    params: ``'kappa'`` and ``'xi'`` (G,) arrays.
    num_classes: C.
    precision: ``'float64'`` (reference) or ``'float32'``.
    grouping, num_groups: the column groups (:func:`feature_groups`).
    settings: ALM settings.
    chunk_size: grid points solved together.
    devices: devices to shard grid points over (default: all local devices).

  Returns:
    :class:`tgsr_jax.methods.GridPredictions` with scores ``Xq C`` (G, Q, C), iterations and
    converged per grid point; a point with non-finite logits is failed (labels -1).
  """
  kappa, xi = grid_arrays(params)
  xs, xt, xq = (np.asarray(a) for a in (xs, xt, xq))
  ys = np.asarray(ys).astype(np.int64).reshape(-1)
  num_points = kappa.size
  groups = feature_groups(grouping, xs.shape[1], num_groups)
  present = np.unique(ys)
  if present.size == 1:
    # One class: every fit predicts it (and iterating is pointless).
    return methods.GridPredictions(
        params={"kappa": kappa, "xi": xi},
        labels=np.full((num_points, len(xq)), int(present[0]), np.int64),
        iterations=np.zeros(num_points, np.int64), converged=np.ones(num_points, bool),
        failed=np.zeros(num_points, bool))
  compact = np.searchsorted(present, ys)      # the classes the source has, as 0..k-1
  prepared = sweep.prepare_sweep(xs, compact, xt, None, groups=groups,
                                 num_classes=int(present.size), precision=precision,
                                 settings=settings, devices=devices, xq=xq)
  if num_points and (kappa.min() < 1 or kappa.max() > prepared.layout.num_groups):
    raise ValueError(f"TGSR params 'kappa' must lie in [1, {prepared.layout.num_groups}], got "
                     f"[{kappa.min()}, {kappa.max()}]")
  labels = np.full((num_points, len(xq)), -1, np.int64)
  scores = np.full((num_points, len(xq), num_classes), -np.inf)
  iterations = np.zeros(num_points, np.int64)
  converged = np.zeros(num_points, bool)
  for idx in sweep.plan_chunks(kappa, xi, chunk_size):
    # Chunks padded to a power of two (repeating the last point): the few compiled shapes are
    # reused by the many small calls of label-free selection.
    size = min(max(chunk_size, idx.size), 1 << int(np.ceil(np.log2(idx.size))))
    padded = np.concatenate([idx, np.full(size - idx.size, idx[-1])])
    out = prepared.predict(kappa[padded], xi[padded])
    labels[idx] = present[out.labels[:idx.size]]
    scores[np.ix_(idx, np.arange(len(xq)), present)] = out.logits[:idx.size]
    iterations[idx] = out.iterations[:idx.size]
    converged[idx] = out.converged[:idx.size]
  failed = ~np.all(np.isfinite(scores[:, :, present]), axis=(1, 2))
  labels[failed] = -1
  return methods.GridPredictions(params={"kappa": kappa, "xi": xi}, labels=labels,
                                 scores=scores, iterations=iterations, converged=converged,
                                 failed=failed)


PAPER_GRID = {"kappa": tuple(range(1, 86)),
              "xi": tuple(float(x) for x in sweep.paper_xi_grid())}
PAPER_GRID_SOURCE = ("the TGSR paper's grid: kappa 1..85 x the 271 distinct xi of "
                     "0.001:0.0002:0.01, ..., 100:20:1000 (23035 points)")


def make(*, kappas: Sequence[int] = PAPER_GRID["kappa"],
         xis: Sequence[float] = PAPER_GRID["xi"], grid_source: str = PAPER_GRID_SOURCE,
         grouping: str = "contiguous", num_groups: int = 85,
         settings: solver.Settings = solver.Settings(), chunk_size: int = 64,
         devices=None) -> methods.Method:
  """TGSR with its grid and static structure bound (see :func:`fit_predict`)."""
  if grouping not in GROUPINGS:
    raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")

  def bound(xs, ys, xt, xq, params, *, num_classes, precision="float64"):
    return fit_predict(xs, ys, xt, xq, params, num_classes=num_classes, precision=precision,
                       grouping=grouping, num_groups=num_groups, settings=settings,
                       chunk_size=chunk_size, devices=devices)

  return methods.Method(name="TGSR", grid={"kappa": tuple(int(k) for k in kappas),
                                           "xi": tuple(float(x) for x in xis)},
                        grid_source=grid_source, fit_predict=bound, iterative=True)


# The authors' setting: the paper's grid, groups = the benchmark's consecutive chunks.
METHOD = make()
