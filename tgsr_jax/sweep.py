"""The (kappa, xi) grid search of the TGSR protocol as one vmapped, sharded computation.

Every grid point shares the thin QR of ``[Xs^T, d]`` (:func:`tgsr_jax.solver.prepare_problem`);
each xi adds one small eigendecomposition; the ALM iterations of a chunk of grid points run as one
``jax.vmap``-ed ``while_loop`` whose products with the shared ``Q`` become matrix-matrix products.
The grid-point axis of a chunk is sharded over every local device; on several processes
(hosts) each solves its share of the chunks and the results are gathered (:func:`iter_sweep`).

Grid points are scheduled in chunks of ``chunk_size`` (bounded memory: two (Kd, C) matrices per
grid point), ordered by kappa so that a chunk's points need similar numbers of iterations.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from subtle_core import distributed
from tgsr_jax import gram_engine
from tgsr_jax import metrics
from tgsr_jax import solver

ENGINES = ("gram", "dense")

# The paper's xi grid as MATLAB ranges: 0.001:0.0002:0.01, 0.01:0.002:0.1, 0.1:0.02:1, 1:0.2:10,
# 10:2:100, 100:20:1000 (276 values with the 5 shared end points, 271 distinct).
PAPER_XI_RANGES = ((0.001, 0.0002, 0.01), (0.01, 0.002, 0.1), (0.1, 0.02, 1.0), (1.0, 0.2, 10.0),
                   (10.0, 2.0, 100.0), (100.0, 20.0, 1000.0))


def matlab_range(start: float, step: float, stop: float) -> np.ndarray:
  """``start:step:stop`` as MATLAB evaluates it (``start + k * step`` with a rounding tolerance)."""
  count = int(math.floor((stop - start) / step + 1e-10)) + 1
  return start + step * np.arange(count)


def paper_xi_grid(distinct: bool = True) -> np.ndarray:
  """The paper's xi values (271 distinct, or the 276 of the authors' loop with duplicates)."""
  values = np.concatenate([matlab_range(*r) for r in PAPER_XI_RANGES])
  values = np.round(values, 10)
  if distinct:
    values = np.unique(values)
  return values


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """Scores of every grid point (row i is ``(kappa[i], xi[i])``).

  Attributes:
    kappa, xi: the grid points.
    acc, mf1, uar: scores on the labelled target.
    iterations: ALM iterations used; converged: whether the stopping rule was met.
    selected: (N, K) bool, the groups each fit keeps.
  """
  kappa: np.ndarray
  xi: np.ndarray
  acc: np.ndarray
  mf1: np.ndarray
  uar: np.ndarray
  iterations: np.ndarray
  converged: np.ndarray
  selected: np.ndarray

  def __len__(self) -> int:
    return int(self.kappa.shape[0])

  def best(self, by: str = "mf1") -> int:
    """Index of the best grid point: the first (in grid order) with the highest ``by`` score.

    This is the authors' selection rule (``experiments.cdmer`` writes the same point to
    ``best.json``); on a kappa-major grid from :func:`grid_points`, ties go to the smaller kappa,
    then the smaller xi.

    Args:
      by: 'mf1' (the paper) or 'acc'.
    """
    if by not in ("mf1", "acc"):
      raise ValueError(f"by: expected 'mf1' or 'acc', got {by!r}")
    return int(np.argmax(getattr(self, by)))

  @staticmethod
  def concatenate(parts: Iterable["SweepResult"]) -> "SweepResult":
    parts = list(parts)
    return SweepResult(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                          for f in dataclasses.fields(SweepResult)})


def grid_points(kappas: Iterable[int], xis: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
  """All (kappa, xi) pairs, kappa-major (the authors' loop order)."""
  kappas = np.asarray(list(kappas), dtype=np.int64)
  xis = np.asarray(list(xis), dtype=np.float64)
  return np.repeat(kappas, xis.size), np.tile(xis, kappas.size)


OUTPUTS = ("scores", "labels")


def _chunk_outputs(logits: jax.Array, yt: jax.Array, num_classes: int, outputs: str
                   ) -> dict[str, jax.Array]:
  """What a chunk returns of its (G, n, C) evaluation-row logits: confusions or labels."""
  pred = jnp.argmax(logits, axis=-1)
  if outputs == "labels":
    return {"labels": pred, "logits": logits}
  return {"confusion": jax.vmap(lambda p: metrics.confusion_matrix(yt, p, num_classes))(pred)}


def _solve_chunk_impl(problem: solver.Problem, xt: jax.Array, yt: jax.Array, kappa: jax.Array,
                      xi: jax.Array, *, layout: solver.GroupLayout, settings: solver.Settings,
                      tol: float, num_classes: int, platform: str | None = None,
                      outputs: str = "scores") -> dict[str, jax.Array]:
  """Solves a chunk of grid points (vmapped); scores them on the target or returns labels."""
  w, s = solver.xi_spectra(problem, xi, platform=platform)
  state0 = solver.init_state(problem, settings)
  # Grid points live on the last axis of C and P, so Q^T (Kd x C x G) is one plain GEMM.
  solve = jax.vmap(
      functools.partial(solver.alm_solve, layout=layout, settings=settings, tol=tol),
      in_axes=(None, 0, 0, 0, None),
      out_axes=solver.AlmState(c=-1, p=-1, mu=0, iteration=0, error=0))
  state = solve(problem, w, s, kappa, state0)
  c = state.c  # (Kd, C, G)
  logits = jnp.einsum("nk,kcg->gnc", xt, c)
  if layout.group_size is not None:
    energy = jnp.sum(jnp.square(c.reshape(layout.num_groups, -1, c.shape[-1])), axis=1)
  else:
    energy = jax.ops.segment_sum(jnp.sum(jnp.square(c), axis=1), problem.segment_ids,
                                 num_segments=layout.num_groups, indices_are_sorted=True)
  return {
      **_chunk_outputs(logits, yt, num_classes, outputs),
      "iterations": state.iteration, "converged": state.error < tol,
      "selected": (energy > 0).T,
  }


@functools.partial(jax.jit, static_argnames=("mesh", "layout", "settings", "tol", "num_classes",
                                             "outputs"))
def _solve_chunk(problem: solver.Problem, xt: jax.Array, yt: jax.Array, kappa: jax.Array,
                 xi: jax.Array, *, mesh: Mesh, layout: solver.GroupLayout,
                 settings: solver.Settings, tol: float, num_classes: int,
                 outputs: str = "scores") -> dict[str, jax.Array]:
  """:func:`_solve_chunk_impl` with the grid points split over the devices of ``mesh``."""
  local = functools.partial(_solve_chunk_impl, layout=layout, settings=settings, tol=tol,
                            num_classes=num_classes, platform=mesh.devices.flat[0].platform,
                            outputs=outputs)
  replicated, lanes = PartitionSpec(), PartitionSpec("lanes")
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(replicated, replicated, replicated, lanes, lanes),
                       out_specs=lanes, check_vma=False)(problem, xt, yt, kappa, xi)


@functools.partial(jax.jit,
                   static_argnames=("mesh", "num_groups", "settings", "tol", "num_classes",
                                    "outputs"))
def _solve_chunk_gram(problem: solver.Problem, factors: gram_engine.GramFactors, yt: jax.Array,
                      kappa: jax.Array, xi: jax.Array, *, mesh: Mesh, num_groups: int,
                      settings: solver.Settings, tol: float, num_classes: int,
                      outputs: str = "scores") -> dict[str, jax.Array]:
  """Solves a chunk of grid points with :mod:`tgsr_jax.gram_engine`; scores or labels.

  The logits are ``Xe C`` for the evaluation rows ``Xe`` the factors were built from
  (``factors.xq``/``xo``): the target when sweeping, the query rows when predicting.

  Each device iterates its own share of the grid points (``shard_map``): lanes on different
  devices never wait for each other, and the loop needs no cross-device communication.
  """

  def local(problem, factors, yt, kappa, xi):
    w, s = solver.xi_spectra(problem, xi, platform=mesh.devices.flat[0].platform)
    state = gram_engine.init_state(factors, num_classes, kappa.shape[0], settings)
    state = gram_engine.iterate(problem, factors, w, s, kappa, state, num_groups=num_groups,
                                settings=settings, tol=tol, iteration_limit=settings.max_iterations)
    logits = gram_engine.target_logits(factors, state)
    return {**_chunk_outputs(logits, yt, num_classes, outputs), "iterations": state.iteration,
            "converged": state.error < tol, "selected": (state.s > 0).T}

  replicated, lanes = PartitionSpec(), PartitionSpec("lanes")
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(replicated, replicated, replicated, lanes, lanes),
                       out_specs=lanes, check_vma=False)(problem, factors, yt, kappa, xi)


@dataclasses.dataclass(frozen=True)
class GridLabels:
  """Predicted labels of the evaluation rows at a chunk of grid points (``PreparedSweep.predict``).

  Attributes:
    labels: (G, n) class indices (argmax of the logits).
    logits: (G, n, C) ``Xe C`` of the evaluation rows ``Xe``.
    iterations, converged: as in :class:`SweepResult`.
  """
  labels: np.ndarray
  logits: np.ndarray
  iterations: np.ndarray
  converged: np.ndarray


@dataclasses.dataclass
class PreparedSweep:
  """A factored problem ready to solve chunks of grid points (see :func:`prepare_sweep`).

  ``xt``/``yt`` are the evaluation rows (the target, or the query rows of ``prepare_sweep(xq=)``)
  and their labels (zeros when only :meth:`predict` is used).
  """
  problem: solver.Problem
  xt: jax.Array
  yt: jax.Array
  layout: solver.GroupLayout
  num_classes: int
  precision: str
  settings: solver.Settings
  mesh: Mesh
  engine: str
  factors: gram_engine.GramFactors | None

  def _run_chunk(self, kappa: np.ndarray, xi: np.ndarray, outputs: str) -> dict[str, np.ndarray]:
    """One chunk through the engine, padded to a multiple of the device count, unpadded."""
    n = kappa.shape[0]
    ndev = self.mesh.devices.size
    padded = -(-n // ndev) * ndev
    kappa_p = np.concatenate([kappa, np.full(padded - n, kappa[-1])]).astype(np.int32)
    xi_p = np.concatenate([xi, np.full(padded - n, xi[-1])])
    with jax.enable_x64(self.precision == "float64"):
      dtype = solver.resolve_dtype(self.precision)
      lanes = NamedSharding(self.mesh, PartitionSpec("lanes"))
      kappa_d = jax.device_put(jnp.asarray(kappa_p), lanes)
      xi_d = jax.device_put(jnp.asarray(xi_p, dtype), lanes)
      tol = self.settings.resolved_tol(self.precision)
      if self.engine == "gram":
        out = _solve_chunk_gram(self.problem, self.factors, self.yt, kappa_d, xi_d,
                                mesh=self.mesh, num_groups=self.layout.num_groups,
                                settings=self.settings, tol=tol, num_classes=self.num_classes,
                                outputs=outputs)
      else:
        out = _solve_chunk(self.problem, self.xt, self.yt, kappa_d, xi_d, mesh=self.mesh,
                           layout=self.layout, settings=self.settings, tol=tol,
                           num_classes=self.num_classes, outputs=outputs)
      out = jax.device_get(out)
    return {k: np.asarray(v)[:n] for k, v in out.items()}

  def solve(self, kappa: np.ndarray, xi: np.ndarray) -> SweepResult:
    """Solves the given grid points (one chunk) and scores them on the labelled target."""
    out = self._run_chunk(kappa, xi, "scores")
    # Scores from exact integer counts, in float64 on the host whatever the solver precision.
    scores = metrics.scores_from_confusion(out["confusion"])
    return SweepResult(
        kappa=kappa.astype(np.int64), xi=xi.astype(np.float64),
        acc=scores["acc"], mf1=scores["mf1"], uar=scores["uar"],
        iterations=out["iterations"].astype(np.int64),
        converged=out["converged"].astype(bool),
        selected=out["selected"].astype(bool))

  def predict(self, kappa: np.ndarray, xi: np.ndarray) -> GridLabels:
    """Solves the given grid points (one chunk) and predicts the evaluation rows."""
    out = self._run_chunk(kappa, xi, "labels")
    return GridLabels(labels=out["labels"].astype(np.int64),
                      logits=out["logits"].astype(np.float64),
                      iterations=out["iterations"].astype(np.int64),
                      converged=out["converged"].astype(bool))


def prepare_sweep(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, yt: np.ndarray | None, *,
                  groups: np.ndarray, num_classes: int | None = None, precision: str = "float32",
                  settings: solver.Settings = solver.Settings(),
                  devices: list[jax.Device] | None = None, engine: str = "auto",
                  xq: np.ndarray | None = None) -> PreparedSweep:
  """Validates the data and factors the work shared by all grid points.

  Args:
    xs, ys: labelled source (ns, Kd), (ns,) ints in [0, C).
    xt, yt: target features (nt, Kd) and its labels (used only for scoring; None when only
      :meth:`PreparedSweep.predict` is used).
    groups: (Kd,) group id of every column.
    num_classes: C (default ``max(ys) + 1``).
    precision: ``'float32'`` (fast) or ``'float64'`` (reproduces the reference).
    settings: ALM settings.
    devices: devices to shard grid points over (default: all local devices).
    engine: ``'gram'`` (group-wise coordinates, :mod:`tgsr_jax.gram_engine`; needs equal group
      sizes), ``'dense'`` (the vmapped ALM on full matrices) or ``'auto'`` (gram when possible).
    xq: (nq, Kd) rows to predict instead of ``xt`` (the fit still adapts to ``xt``); then
      ``yt`` must be None and only :meth:`PreparedSweep.predict` applies.

  Returns:
    A :class:`PreparedSweep`.
  """
  xs = np.asarray(xs)
  xt = np.asarray(xt)
  ys = np.asarray(ys).astype(np.int64).reshape(-1)
  num_classes = int(ys.max()) + 1 if num_classes is None else int(num_classes)
  solver.check_inputs(xs, ys, xt, num_classes)
  if xq is not None:
    if yt is not None:
      raise ValueError("prepare_sweep: give yt (to score the target) or xq (to predict query "
                       "rows), not both")
    xq = np.asarray(xq)
    if xq.ndim != 2 or xq.shape[1] != xt.shape[1] or not np.all(np.isfinite(xq)):
      raise ValueError(f"xq must be finite (nq, {xt.shape[1]}) query rows, got {xq.shape}")
  x_eval = xt if xq is None else xq
  yt = (np.zeros(len(x_eval), np.int64) if yt is None
        else np.asarray(yt).astype(np.int64).reshape(-1))
  if yt.shape != (xt.shape[0],) and xq is None:
    raise ValueError(f"yt must have shape ({xt.shape[0]},) to match xt, got {yt.shape}")
  if yt.size and yt.min() < 0 or yt.max() >= num_classes:
    raise ValueError(f"yt must hold labels in [0, {num_classes}), got [{yt.min()}, {yt.max()}]")
  perm, layout, sorted_groups = solver.group_layout(groups, xs.shape[1])
  if engine == "auto":
    engine = "gram" if layout.group_size is not None else "dense"
  if engine not in ENGINES:
    raise ValueError(f"engine must be 'auto' or one of {ENGINES}, got {engine!r}")
  if engine == "gram" and layout.group_size is None:
    raise ValueError("engine='gram' needs groups of equal size; use engine='dense'")
  devices = list(jax.local_devices()) if devices is None else list(devices)
  mesh = Mesh(np.asarray(devices), ("lanes",))
  with jax.enable_x64(precision == "float64"):
    dtype = solver.resolve_dtype(precision)
    replicated = NamedSharding(mesh, PartitionSpec())
    problem = solver.prepare_problem(
        jnp.asarray(xs[:, perm], dtype), jnp.asarray(ys), jnp.asarray(xt[:, perm], dtype),
        jnp.asarray(sorted_groups), num_classes=num_classes)
    problem = jax.device_put(problem, replicated)
    xt_dev = jax.device_put(jnp.asarray(x_eval[:, perm], dtype), replicated)
    yt_dev = jax.device_put(jnp.asarray(yt), replicated)
    factors = None
    if engine == "gram":
      factors = gram_engine.gram_factors(problem, xt_dev, num_groups=layout.num_groups)
  return PreparedSweep(problem=problem, xt=xt_dev, yt=yt_dev, layout=layout,
                       num_classes=num_classes, precision=precision, settings=settings, mesh=mesh,
                       engine=engine, factors=factors)


def plan_chunks(kappa: np.ndarray, xi: np.ndarray, chunk_size: int) -> list[np.ndarray]:
  """Splits grid points into chunks of at most ``chunk_size`` indices, ordered by kappa."""
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  order = np.lexsort((xi, kappa))
  return [order[i:i + chunk_size] for i in range(0, order.size, chunk_size)]


def iter_sweep(prepared: PreparedSweep, kappa: np.ndarray, xi: np.ndarray, *, chunk_size: int = 256,
               skip: Callable[[int, np.ndarray], bool] | None = None
               ) -> Iterator[tuple[int, np.ndarray, SweepResult | None]]:
  """Yields ``(chunk_index, indices, result)`` for every chunk; ``result`` is None when skipped.

  ``indices`` index into the ``kappa``/``xi`` arrays, so callers can persist chunks and resume:
  ``skip(chunk_index, indices)`` returning True (e.g. the chunk is saved) skips the solve.

  On several processes (:mod:`subtle_core.distributed`) every process calls this with the same
  arguments. ``skip`` is called on every process for every chunk before any solve, and process
  0's answers count for all. The chunks left are dealt round-robin, one per process per round;
  each round's results are gathered on every process (exact: the arrays travel as bytes), so
  each process yields every chunk, skipped ones first, then round by round. A caller that saves
  the results (process 0) thus loses at most one round when the run is interrupted.
  """
  chunks = plan_chunks(kappa, xi, chunk_size)
  count = distributed.process_count()
  if count == 1:
    for index, idx in enumerate(chunks):
      if skip is not None and skip(index, idx):
        yield index, idx, None
        continue
      yield index, idx, prepared.solve(kappa[idx], xi[idx])
    return
  skipped = np.asarray([bool(skip(index, idx)) if skip is not None else False
                        for index, idx in enumerate(chunks)], bool)
  skipped = distributed.broadcast_arrays({"skipped": skipped})["skipped"]
  for index in np.flatnonzero(skipped):
    yield int(index), chunks[index], None
  todo = np.flatnonzero(~skipped)
  rank = distributed.process_index()
  names = [f.name for f in dataclasses.fields(SweepResult)]
  for start in range(0, todo.size, count):
    share = todo[start:start + count]
    mine = None
    if rank < share.size:
      idx = chunks[share[rank]]
      logging.info("process %d of %d: grid chunk %d (%d points)", rank, count, share[rank],
                   idx.size)
      mine = dataclasses.asdict(prepared.solve(kappa[idx], xi[idx]))
    gathered = distributed.all_gather_arrays(mine)
    for index, arrays in zip(share, gathered):
      yield int(index), chunks[index], SweepResult(**{n: arrays[n] for n in names})


def sweep(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, yt: np.ndarray, *, groups: np.ndarray,
          kappas: Iterable[int], xis: Iterable[float], num_classes: int | None = None,
          precision: str = "float32", settings: solver.Settings = solver.Settings(),
          chunk_size: int = 256, devices: list[jax.Device] | None = None,
          progress: Callable[[int], None] | None = None, engine: str = "auto") -> SweepResult:
  """Fits and scores TGSR at every (kappa, xi) of a grid.

  Args:
    xs, ys, xt, yt, groups, num_classes, precision, settings, devices, engine: see
      :func:`prepare_sweep`.
    kappas, xis: the grid axes; every pair is fitted.
    chunk_size: grid points solved together (memory: about 4 Kd C chunk_size values).
    progress: called with the number of grid points finished after each chunk.

  Returns:
    A :class:`SweepResult` in kappa-major grid order (the authors' loop order); on several
    processes every process gets the whole result.
  """
  kappa, xi = grid_points(kappas, xis)
  if kappa.size == 0:
    raise ValueError("the grid is empty: kappas and xis need at least one value each")
  prepared = prepare_sweep(xs, ys, xt, yt, groups=groups, num_classes=num_classes,
                           precision=precision, settings=settings, devices=devices, engine=engine)
  if kappa.min() < 1 or kappa.max() > prepared.layout.num_groups:
    raise ValueError(f"kappas must lie in [1, {prepared.layout.num_groups}], got "
                     f"[{kappa.min()}, {kappa.max()}]")
  if xi.min() < 0:
    raise ValueError(f"xis must be >= 0, got {xi.min()}")
  parts, order = [], []
  for _, idx, result in iter_sweep(prepared, kappa, xi, chunk_size=chunk_size):
    parts.append(result)
    order.append(idx)
    if progress is not None:
      progress(idx.size)
  merged = SweepResult.concatenate(parts)
  inverse = np.argsort(np.concatenate(order))
  return SweepResult(**{f.name: getattr(merged, f.name)[inverse]
                        for f in dataclasses.fields(SweepResult)})
