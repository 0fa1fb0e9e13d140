r"""Transfer Group Sparse Regression (TGSR) solved by inexact ALM, as pure JAX functions.

The model (TGSR paper, Eq. 5-6), with rows of ``xs``/``xt`` as samples and ``X~`` holding samples as
columns:

.. math::
   \min_C \|\tilde L - C^\top \tilde X\|_F^2 + \lambda \sum_i \|C_i\|_F, \qquad
   \tilde X = [X_s^\top, \sqrt{\xi}\,(\bar x_s - \bar x_t)], \quad \tilde L = [L_s, 0],

where ``C_i`` are the rows of ``C`` belonging to group ``i``. As in the authors' code, lambda is
replaced by keeping the ``kappa`` groups of largest norm (Eq. 13). Inexact ALM (Algorithm 1) splits
``C = D``:

* D step: ``D = (mu I + 2 X~ X~^T)^-1 (2 X~ L~^T + P + mu C)``;
* C step: group shrinkage of ``V = D - P / mu`` keeping the ``kappa`` largest groups;
* ``P <- P + mu (C - D)``, ``mu <- min(rho mu, mu_max)``; stop when ``max |C - D| < tol``.

The D step never forms a Kd x Kd matrix. All xi share the column space of ``[X_s^T, d]`` (``d`` the
mean difference), so one thin QR ``[X_s^T, d] = Q R`` is computed once; for each xi only the small
``r x r`` matrix ``G = R diag(1, .., 1, xi) R^T = W diag(s) W^T`` is eigendecomposed, and

.. math::
   D = E + Q W \frac{W^\top a - 2 s \odot W^\top Q^\top E}{\mu + 2 s}, \qquad
   E = C + P / \mu, \quad a = Q^\top (2 X_s^\top Y_s) = 2 R_s Y_s,

which equals ``(mu I + 2 X~ X~^T)^-1 (2 X~ L~^T + P + mu C)`` because ``2 X~ L~^T`` lies in the
span of ``Q``; written this way it has no ``1 / mu`` cancellation, so float32 stays accurate while
mu is small. ``Q`` is shared by every grid point, so a vmapped sweep turns ``Q^T E`` into one
matrix product.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Tolerances of the stopping rule max|C - D| < tol. float64 uses the authors' absolute 1e-8.
# float32 cannot resolve 1e-8 next to coefficients of order 0.1-1 (its rounding floor is ~1e-8
# relative to mu*C inside the D step), so its default is the smallest value it reliably reaches.
DEFAULT_TOL = {"float64": 1e-8, "float32": 1e-5}
PRECISIONS = ("float64", "float32")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Inexact-ALM settings; the defaults are the reference algorithm's.

  Attributes:
    mu0: initial penalty mu.
    rho: growth factor of mu per iteration.
    mu_max: cap on mu.
    tol: stopping tolerance on max|C - D|; None picks ``DEFAULT_TOL[precision]``.
    max_iterations: iteration cap.
    init_value: initial value of every entry of C (the authors use ones).
  """
  mu0: float = 1e-3
  rho: float = 1.1
  mu_max: float = 1e15
  tol: float | None = None
  max_iterations: int = 1_000_000
  init_value: float = 1.0

  def resolved_tol(self, precision: str) -> float:
    return DEFAULT_TOL[precision] if self.tol is None else float(self.tol)


@dataclasses.dataclass(frozen=True)
class GroupLayout:
  """Static group structure of the (group-sorted) feature columns.

  Attributes:
    num_groups: K.
    group_size: columns per group when all groups have equal size (reshape fast path), else None.
  """
  num_groups: int
  group_size: int | None


class Problem(NamedTuple):
  """Everything the ALM iterations need that does not depend on (kappa, xi).

  Feature columns are permuted so that groups are contiguous (``perm`` maps them back).
  """
  q: jax.Array          # (Kd, r) orthonormal basis of span[Xs^T, d]
  r_src: jax.Array      # (r, ns) coordinates of Xs^T in that basis
  r_delta: jax.Array    # (r,) coordinates of the mean difference d
  a: jax.Array          # (r, C) Q^T (2 Xs^T Y)
  segment_ids: jax.Array  # (Kd,) group id of every (permuted) column


def resolve_dtype(precision: str) -> Any:
  """Maps ``'float64'``/``'float32'`` to a dtype, checking that float64 is enabled when asked."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  if precision == "float64" and not jax.config.jax_enable_x64:
    raise ValueError(
        "precision='float64' needs 64-bit JAX: run inside `with jax.enable_x64(True):` or set "
        "jax.config.update('jax_enable_x64', True) (tgsr_jax.fit and tgsr_jax.sweep do this for you)")
  return jnp.float64 if precision == "float64" else jnp.float32


def group_layout(groups: np.ndarray, num_features: int) -> tuple[np.ndarray, GroupLayout, np.ndarray]:
  """Validates a column -> group assignment and sorts columns so that groups are contiguous.

  Args:
    groups: int array (Kd,) of group ids 0..K-1 (every id used at least once).
    num_features: Kd, to check the length.

  Returns:
    ``(perm, layout, sorted_groups)`` with ``x[:, perm]`` group-contiguous.

  Raises:
    ValueError: if ``groups`` does not fit the features.
  """
  groups = np.asarray(groups)
  if groups.ndim != 1 or groups.shape[0] != num_features:
    raise ValueError(f"groups must be a 1-D array of length {num_features} (one id per feature "
                     f"column), got shape {groups.shape}")
  if not np.issubdtype(groups.dtype, np.integer) or groups.min() < 0:
    raise ValueError("groups must hold non-negative integer group ids")
  num_groups = int(groups.max()) + 1
  sizes = np.bincount(groups, minlength=num_groups)
  if np.any(sizes == 0):
    raise ValueError(f"group ids must be 0..K-1 with every id used; ids {np.flatnonzero(sizes == 0)[:5]} "
                     "are empty")
  perm = np.argsort(groups, kind="stable")
  size = int(sizes[0]) if np.all(sizes == sizes[0]) else None
  return perm, GroupLayout(num_groups=num_groups, group_size=size), groups[perm]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def prepare_problem(xs: jax.Array, ys: jax.Array, xt: jax.Array, segment_ids: jax.Array, *,
                    num_classes: int) -> Problem:
  """Factors the work shared by every (kappa, xi): one thin QR of ``[Xs^T, d]``.

  Args:
    xs: (ns, Kd) source features (group-contiguous columns), in the working dtype.
    ys: (ns,) int labels in [0, num_classes).
    xt: (nt, Kd) target features.
    segment_ids: (Kd,) sorted group ids.
    num_classes: C.

  Returns:
    A :class:`Problem`.
  """
  delta = xs.mean(axis=0) - xt.mean(axis=0)
  basis = jnp.concatenate([xs.T, delta[:, None]], axis=1)  # (Kd, ns + 1)
  q, r = jnp.linalg.qr(basis, mode="reduced")
  a = 2.0 * r[:, :-1] @ jax.nn.one_hot(ys, num_classes, dtype=xs.dtype)
  return Problem(q=q, r_src=r[:, :-1], r_delta=r[:, -1], a=a, segment_ids=segment_ids)


def xi_spectrum(problem: Problem, xi: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eigendecomposition of ``Q^T X~ X~^T Q = R diag(1, .., 1, xi) R^T`` for one xi.

  Returns:
    ``(w, s)``: eigenvectors (r, r) and eigenvalues (r,), clipped at 0.
  """
  gram = problem.r_src @ problem.r_src.T + xi * jnp.outer(problem.r_delta, problem.r_delta)
  s, w = jnp.linalg.eigh(gram)
  return w, jnp.maximum(s, 0.0)


def xi_spectra(problem: Problem, xi: jax.Array, *, platform: str | None = None
               ) -> tuple[jax.Array, jax.Array]:
  """:func:`xi_spectrum` for a batch of xi values: ``w`` (B, r, r) and ``s`` (B, r).

  On the CPU the eigendecompositions run one at a time (``lax.map``). jaxlib's batched LAPACK
  eigh hands its batch items to XLA's intra-op thread pool and waits for them; when the
  devices of a sharded sweep (forced host devices) reach it together on pool threads, every
  thread of a small pool waits and none is left to do the items: a deadlock (seen with jax
  0.10.2 on 2 cores; ``mtl_flax.trace_norm`` avoids the same for its SVDs). Elsewhere the batch
  is one vmapped call.

  Args:
    problem, xi: as in :func:`xi_spectrum`, with xi of shape (B,).
    platform: the platform the computation runs on (default: JAX's default backend).
  """
  if (platform or jax.default_backend()) == "cpu":
    return jax.lax.map(functools.partial(xi_spectrum, problem), xi)
  return jax.vmap(xi_spectrum, in_axes=(None, 0))(problem, xi)


def d_step(problem: Problem, w: jax.Array, s: jax.Array, c: jax.Array, p: jax.Array,
           mu: jax.Array) -> jax.Array:
  """Closed-form D update ``(mu I + 2 X~ X~^T)^-1 (2 X~ L~^T + P + mu C)`` through the factors.

  Computed as ``E + Q W [(W^T a - 2 s * W^T Q^T E) / (mu + 2 s)]`` with ``E = C + P / mu`` (see the
  module docstring): two products with the shared ``Q`` and small ``r x r`` work.
  """
  e = c + p / mu
  we = w.T @ (problem.q.T @ e)
  correction = (w.T @ problem.a - 2.0 * s[:, None] * we) / (mu + 2.0 * s)[:, None]
  return e + problem.q @ (w @ correction)


def group_norms(v: jax.Array, segment_ids: jax.Array, layout: GroupLayout) -> jax.Array:
  """Frobenius norm of every group's rows of ``v`` (Kd, C) -> (K,)."""
  if layout.group_size is not None:
    squares = jnp.sum(jnp.square(v.reshape(layout.num_groups, layout.group_size, -1)), axis=(1, 2))
  else:
    squares = jax.ops.segment_sum(jnp.sum(jnp.square(v), axis=1), segment_ids,
                                  num_segments=layout.num_groups, indices_are_sorted=True)
  return jnp.sqrt(squares)


def group_shrink(v: jax.Array, kappa: jax.Array, segment_ids: jax.Array,
                 layout: GroupLayout) -> tuple[jax.Array, jax.Array]:
  """The C step (Eq. 13): keep the ``kappa`` groups of largest norm, shrunk by the next norm.

  With ``d_i`` the group norms and ``t`` the (kappa+1)-th largest of them (``t = 0`` when
  ``kappa >= K``), group ``i`` becomes ``v_i (d_i - t) / d_i`` if ``d_i > t`` and 0 otherwise.

  Args:
    v: (Kd, C) matrix ``D - P / mu``.
    kappa: scalar int, number of groups kept.
    segment_ids: (Kd,) sorted group ids.
    layout: static group structure.

  Returns:
    ``(c, scale)``: the shrunk matrix and the (K,) per-group scale factors.
  """
  norms = group_norms(v, segment_ids, layout)
  ordered = jnp.sort(norms)[::-1]
  k = layout.num_groups
  threshold = jnp.where(kappa < k, ordered[jnp.clip(kappa, 0, k - 1)], 0.0)
  safe = jnp.where(norms > 0, norms, 1.0)
  scale = jnp.where(norms > threshold, (norms - threshold) / safe, 0.0)
  if layout.group_size is not None:
    c = (v.reshape(k, layout.group_size, -1) * scale[:, None, None]).reshape(v.shape)
  else:
    c = v * scale[segment_ids][:, None]
  return c, scale


class AlmState(NamedTuple):
  c: jax.Array
  p: jax.Array
  mu: jax.Array
  iteration: jax.Array
  error: jax.Array


def init_state(problem: Problem, settings: Settings) -> AlmState:
  dtype = problem.q.dtype
  kd, num_classes = problem.q.shape[0], problem.a.shape[1]
  return AlmState(
      c=jnp.full((kd, num_classes), settings.init_value, dtype),
      p=jnp.zeros((kd, num_classes), dtype),
      mu=jnp.asarray(settings.mu0, dtype),
      iteration=jnp.asarray(0, jnp.int32),
      error=jnp.asarray(jnp.inf, dtype))


def alm_iteration(problem: Problem, w: jax.Array, s: jax.Array, kappa: jax.Array, state: AlmState,
                  *, layout: GroupLayout, rho: float, mu_max: float) -> AlmState:
  """One inexact-ALM iteration (D step, C step, multiplier and mu updates)."""
  d = d_step(problem, w, s, state.c, state.p, state.mu)
  c, _ = group_shrink(d - state.p / state.mu, kappa, problem.segment_ids, layout)
  p = state.p + state.mu * (c - d)
  error = jnp.max(jnp.abs(c - d))
  mu = jnp.minimum(rho * state.mu, mu_max)
  return AlmState(c=c, p=p, mu=mu, iteration=state.iteration + 1, error=error)


def alm_solve(problem: Problem, w: jax.Array, s: jax.Array, kappa: jax.Array, state: AlmState, *,
              layout: GroupLayout, settings: Settings, tol: float,
              iteration_limit: jax.Array | None = None) -> AlmState:
  """Runs ALM iterations from ``state`` until ``error < tol`` or an iteration limit.

  Args:
    problem, w, s: shared factors and the xi spectrum.
    kappa: number of groups kept.
    state: starting state (``init_state`` for a fresh fit; a partial state to continue).
    layout: static group structure.
    settings: ALM settings.
    tol: stopping tolerance.
    iteration_limit: optional absolute iteration count at which to pause (for chunked driving);
      ``settings.max_iterations`` always applies.

  Returns:
    The final (or paused) state.
  """
  limit = settings.max_iterations if iteration_limit is None else jnp.minimum(
      iteration_limit, settings.max_iterations)

  def running(st: AlmState) -> jax.Array:
    return (st.error >= tol) & (st.iteration < limit)

  step = functools.partial(alm_iteration, problem, w, s, kappa, layout=layout, rho=settings.rho,
                           mu_max=settings.mu_max)
  return jax.lax.while_loop(running, step, state)


@functools.partial(jax.jit, static_argnames=("layout", "settings", "tol"))
def _fit_jit(problem: Problem, kappa: jax.Array, xi: jax.Array, *, layout: GroupLayout,
             settings: Settings, tol: float) -> AlmState:
  w, s = xi_spectrum(problem, xi)
  return alm_solve(problem, w, s, kappa, init_state(problem, settings), layout=layout,
                   settings=settings, tol=tol)


@dataclasses.dataclass(frozen=True)
class FitResult:
  """One TGSR fit.

  Attributes:
    coef: (Kd, C) coefficient matrix in the caller's column order.
    iterations: ALM iterations used.
    converged: whether ``max|C - D| < tol`` was reached.
    error: the final ``max|C - D|``.
    selected: (K,) bool, the groups with non-zero coefficients.
  """
  coef: np.ndarray
  iterations: int
  converged: bool
  error: float
  selected: np.ndarray


def check_inputs(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, num_classes: int) -> None:
  """Raises ValueError for inputs the solver cannot use (names the argument)."""
  if xs.ndim != 2 or xt.ndim != 2:
    raise ValueError(f"xs and xt must be 2-D (samples x features), got {xs.shape} and {xt.shape}")
  if xs.shape[1] != xt.shape[1]:
    raise ValueError(f"source and target features have different widths: {xs.shape[1]} vs "
                     f"{xt.shape[1]}")
  if xt.shape[0] == 0:
    raise ValueError("the target has no samples")
  if ys.shape != (xs.shape[0],):
    raise ValueError(f"ys must have shape ({xs.shape[0]},) to match xs, got {ys.shape}")
  if ys.size and (ys.min() < 0 or ys.max() >= num_classes):
    raise ValueError(f"ys must hold labels in [0, {num_classes}), got range [{ys.min()}, {ys.max()}]")
  missing = np.setdiff1d(np.arange(num_classes), ys)
  if missing.size:
    raise ValueError(f"the source has no sample of class index(es) {missing.tolist()} (0-based "
                     "positions in the class list); every class needs "
                     "at least one source sample")
  for name, x in (("xs", xs), ("xt", xt)):
    if not np.all(np.isfinite(x)):
      raise ValueError(f"{name} contains NaN or inf")


def fit(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, *, groups: np.ndarray, kappa: int,
        xi: float, num_classes: int | None = None, precision: str = "float64",
        settings: Settings = Settings()) -> FitResult:
  """Fits TGSR for one (kappa, xi).

  Args:
    xs: (ns, Kd) source features, rows are samples.
    ys: (ns,) int source labels in [0, C).
    xt: (nt, Kd) unlabelled target features.
    groups: (Kd,) group id of every feature column (see :mod:`tgsr_jax.layout`).
    kappa: number of groups kept (1..K).
    xi: weight of the MMD term (>= 0).
    num_classes: C; defaults to ``max(ys) + 1``.
    precision: ``'float64'`` (reproduces the reference) or ``'float32'`` (fast path).
    settings: ALM settings.

  Returns:
    A :class:`FitResult`.
  """
  xs = np.asarray(xs)
  xt = np.asarray(xt)
  ys = np.asarray(ys).astype(np.int64).reshape(-1)
  num_classes = int(ys.max()) + 1 if num_classes is None else int(num_classes)
  check_inputs(xs, ys, xt, num_classes)
  perm, layout, sorted_groups = group_layout(groups, xs.shape[1])
  if not 1 <= kappa <= layout.num_groups:
    raise ValueError(f"kappa must be in [1, {layout.num_groups}], got {kappa}")
  if xi < 0:
    raise ValueError(f"xi must be >= 0, got {xi}")
  with jax.enable_x64(precision == "float64"):
    dtype = resolve_dtype(precision)
    problem = prepare_problem(jnp.asarray(xs[:, perm], dtype), jnp.asarray(ys),
                              jnp.asarray(xt[:, perm], dtype), jnp.asarray(sorted_groups),
                              num_classes=num_classes)
    tol = settings.resolved_tol(precision)
    state = _fit_jit(problem, jnp.asarray(kappa), jnp.asarray(xi, dtype), layout=layout,
                     settings=settings, tol=tol)
    coef_sorted = np.asarray(state.c)
    iterations = int(state.iteration)
    error = float(state.error)
  coef = np.empty_like(coef_sorted)
  coef[perm] = coef_sorted
  return FitResult(coef=coef, iterations=iterations, converged=bool(error < tol), error=error,
                   selected=selected_groups(coef, groups, layout.num_groups))


def selected_groups(coef: np.ndarray, groups: np.ndarray, num_groups: int | None = None) -> np.ndarray:
  """Bool (K,) mask of the groups whose coefficient rows are not all zero."""
  groups = np.asarray(groups)
  num_groups = int(groups.max()) + 1 if num_groups is None else num_groups
  energy = np.bincount(groups, weights=np.sum(np.square(np.asarray(coef, np.float64)), axis=1),
                       minlength=num_groups)
  return energy > 0


def project_simplex(v: jax.Array) -> jax.Array:
  """Euclidean projection of every row of ``v`` onto the probability simplex.

  Solves ``min_l ||v - l||^2`` s.t. ``l >= 0, sum(l) = 1`` for each row (last axis) with optax's
  sort-based projection (``optax.projections.projection_simplex``; Held et al., Duchi et al.
  2008), vmapped over the leading axes.
  """
  v = jnp.asarray(v)
  rows = v.reshape(-1, v.shape[-1])
  return jax.vmap(optax.projections.projection_simplex)(rows).reshape(v.shape)


def predict_label_vectors(coef: jax.Array, x: jax.Array) -> jax.Array:
  """The label vectors of Eq. 14: the simplex projection of ``C^T x`` for every row of ``x``."""
  return project_simplex(jnp.asarray(x) @ jnp.asarray(coef))


def predict(coef: jax.Array, x: jax.Array) -> jax.Array:
  """Predicted class (0-based) of every row of ``x``: the argmax of the Eq. 14 label vector.

  The simplex projection preserves the order of the entries, so this is ``argmax(x @ coef)``.
  """
  return jnp.argmax(jnp.asarray(x) @ jnp.asarray(coef), axis=-1)
