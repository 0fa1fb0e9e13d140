r"""Domain regeneration in kernel form (TSRG, DRLS): the shared inexact ALM, batched over the grid.

Both methods (the CDMER benchmark's domain-regeneration code, ``../shared/cdmer/METHODS.md``) learn
a regenerator ``P`` (n x m) acting on the linear kernel of all training samples. With samples as
columns, ``X_s`` (d x n_s), ``X_t`` (d x n_t), ``X = [X_s, X_t]`` (d x n), ``K_s = X^T X_s``,
``K_t = X^T X_t`` and ``k_delta = K_s 1 / n_s - K_t 1 / n_t``:

.. math::
   \min_P \|Y - P^\top K_s\|_F^2 + \lambda \|P^\top k_\delta\|^2 + \mu \|P\|_1,

with ``Y`` (m x n_s) the raw source features (TSRG, m = d) or its one-hot labels (DRLS, m = c).
The inexact ALM splits ``P = Q`` (kappa the penalty, T the multiplier); with
``U diag(D) U^T = K~ K~^T`` and ``K~ = [K_s, sqrt(lambda) k_delta]``:

.. math::
   Q &= U \operatorname{diag}\big(1 / (D + \kappa/2)\big) U^\top
        \big(K_s Y^\top + (\kappa P + T) / 2\big) \\
   P &= \operatorname{soft}(Q - T / \kappa, \mu / \kappa) \\
   T &= T + \kappa (P - Q), \qquad \kappa = \min(1.1 \kappa, 10^{15}),

from ``kappa = 1e-3``, ``P = T = 1`` (all ones), until ``max |P - Q| < 1e-8``.

Work shared by the grid: the kernels and ``K_s Y^T`` are computed once (float64, on the host); the
eigendecomposition depends on lambda only (one ``n x n`` ``eigh`` per lambda); the kappa schedule is
the same for every point, and mu enters only the soft threshold. So all mu values of one lambda
iterate together: their ``P`` and ``T`` are stacked as ``(n, G, m)`` and ``Q`` of all of them is one
matrix product of the shared ``A(kappa) = U diag(1 / (D + kappa/2)) U^T`` with an ``(n, G m)``
matrix. One ``lax.while_loop`` runs a chunk; a point that meets the stopping rule has its output
(and iteration count) recorded at that iteration, and the loop ends when every point of the chunk
has stopped or at the iteration cap. The mu axis is split into chunks that fit a memory budget
(TSRG's ``P`` is n x d per point), and a chunk's points are sharded over the local devices.

Precision: ``'float64'`` is the reference. ``'float32'`` iterates in single precision (the
kernels and eigendecompositions stay float64) with the stopping tolerance 1e-6; the problem
amplifies rounding (see :func:`lambda_spectrum`), so float32 scores move by about 1% of their
scale and a few predictions change.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tgsr_jax import methods
from tgsr_jax import solver

# The benchmark's grid (METHODS.md): lambda in 7 decades, mu in 37 values from 0.001 to 10.
LAMBDAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)
MUS = tuple(np.round(np.concatenate([np.arange(1, 10) * 1e-3, np.arange(1, 10) * 1e-2,
                                     np.arange(1, 11) * 0.1, np.arange(2, 11) * 1.0]),
                     10).tolist())
GRID = {"lambda": LAMBDAS, "mu": MUS}
GRID_SOURCE = ("the CDMER benchmark's grid (METHODS.md): lambda in {1e-3, ..., 1000} (7) x mu in "
               "{0.001..0.009, 0.01..0.09, 0.1..1.0, 2..10} (37), 259 points")

# Stopping tolerance on max|P - Q|: the authors' absolute 1e-8 in float64. float32 cannot resolve
# 1e-8 next to entries of P of order 1e-2 (its rounding step there is ~1e-9 per operation, and
# Q is a sum of n such terms), so its default is looser.
DEFAULT_TOL = {"float64": 1e-8, "float32": 1e-6}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Inexact-ALM settings; the defaults are the authors' code's.

  Attributes:
    kappa0: initial penalty.
    rho: growth factor of the penalty per iteration.
    kappa_max: cap on the penalty (reached after 435 iterations from the defaults).
    tol: stopping tolerance on ``max |P - Q|``; None picks ``DEFAULT_TOL[precision]``.
    max_iterations: iteration cap (a point still running there is reported not converged).
    init_value: initial value of every entry of P and T.
  """
  kappa0: float = 1e-3
  rho: float = 1.1
  kappa_max: float = 1e15
  tol: float | None = None
  max_iterations: int = 2000
  init_value: float = 1.0

  def resolved_tol(self, precision: str) -> float:
    return DEFAULT_TOL[precision] if self.tol is None else float(self.tol)


class Kernels:
  """The linear kernels shared by every grid point (float64, host).

  Attributes:
    k_s: (n, n_s) ``X^T X_s``.
    k_delta: (n,) ``K_s 1 / n_s - K_t 1 / n_t``.
    k_q: (n, Q) ``X^T X_q`` of the query samples.
  """

  def __init__(self, xs: np.ndarray, xt: np.ndarray, xq: np.ndarray):
    x = np.concatenate([xs, xt], axis=0)          # (n, d), rows are samples
    self.k_s = x @ xs.T
    k_t = x @ xt.T
    self.k_delta = self.k_s.mean(axis=1) - k_t.mean(axis=1)
    self.k_q = x @ xq.T


def lambda_spectrum(k_s: np.ndarray, k_delta: np.ndarray, lam: float
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Eigendecomposition ``U diag(D) U^T`` of ``K~ K~^T``, ``K~ = [K_s, sqrt(lambda) k_delta]``.

  Computed in float64 whatever the working precision (it is ``n x n``). The eigenvalues are used
  as computed, as the authors' code does: the null eigenvalues come out as rounding noise of either
  sign (~1e-11 relative to the largest), far below ``kappa / 2 >= 5e-4``. (Clipping them at 0
  moves the float64 solution by ~1e-6 relative at the smallest mu: the ALM amplifies them.)

  Returns:
    ``(u, d)``: (n, n) eigenvectors and (n,) eigenvalues.
  """
  gram = k_s @ k_s.T + lam * np.outer(k_delta, k_delta)
  d, u = np.linalg.eigh(gram)
  return u, d


def _iterate_impl(u: jax.Array, dvals: jax.Array, b0: jax.Array, readout: jax.Array,
                  mus: jax.Array, *, settings: Settings, tol: float
                  ) -> dict[str, jax.Array]:
  r"""Runs the ALM for the mu values of one lambda; returns ``P R`` and the convergence record.

  The iterates are carried as one array per point, ``W_k = kappa_k Q_k - T_k``: the P step is
  ``P_{k+1} = soft(W_k, mu) / kappa_k`` and the multiplier step becomes
  ``T_{k+1} = T_k + kappa_k (P_{k+1} - Q_k) = -clip(W_k, -mu, mu)``, so

  * ``Q_{k+1} = A_{k+1} (K_s Y^T + (r_k soft(W_k, mu) - clip(W_k, mu)) / 2)``,
    ``r_k = kappa_{k+1} / kappa_k``;
  * ``W_{k+1} = kappa_{k+1} Q_{k+1} + clip(W_k, mu)``;
  * ``max |P_{k+1} - Q_k| = max |T_{k+1} - T_k| / kappa_k``.

  Algebraically the iteration of the module docstring; only ``clip(W_k, mu)`` and the next
  right-hand side are carried, so an iteration is the product plus a few fused elementwise sweeps
  over them (next to the product the iterations are bound by memory traffic).

  Args:
    u, dvals: the lambda's spectrum, (n, n) and (n,).
    b0: (n, m) ``K_s Y^T``.
    readout: (m, r) the matrix applied to each final ``P`` (what prediction needs).
    mus: (G,) the mu values.
    settings: ALM settings; tol: the stopping tolerance.

  Returns:
    ``pr`` (n, G, r), ``iterations`` (G,), ``error`` (G,) the last ``max |P - Q|``.
  """
  n, m = b0.shape
  g = mus.shape[0]
  dtype = b0.dtype
  rho = jnp.asarray(settings.rho, dtype)
  kappa_max = jnp.asarray(settings.kappa_max, dtype)
  mu3 = mus[None, :, None]

  def product(kappa, rhs):
    a = (u * (1.0 / (dvals + 0.5 * kappa))) @ u.T
    return (a @ rhs.reshape(n, g * m)).reshape(n, g, m)

  def next_rhs(w, kappa, kappa_next):
    clipped = jnp.clip(w, -mu3, mu3)
    return b0[:, None, :] + 0.5 * ((kappa_next / kappa) * (w - clipped) - clipped)

  def readout_of(w, clipped, kappa):
    return jnp.einsum("ngm,mr->ngr", (w - clipped) / kappa, readout)  # P = soft(W, mu) / kappa

  # Iteration 0 from P = T = init (T_0 is not a clip of anything, so it is peeled off).
  init = jnp.asarray(settings.init_value, dtype)
  kappa = jnp.asarray(settings.kappa0, dtype)
  rhs = jnp.broadcast_to(b0[:, None, :] + 0.5 * (kappa * init + init), (n, g, m))
  w = kappa * product(kappa, rhs) - init
  clipped = jnp.clip(w, -mu3, mu3)
  error = jnp.max(jnp.abs(clipped + init), axis=(0, 2)) / kappa
  done = (error < tol) | ~jnp.isfinite(error)
  pr = readout_of(w, clipped, kappa)
  kappa_next = jnp.minimum(rho * kappa, kappa_max)
  state = (clipped, next_rhs(w, kappa, kappa_next), pr, kappa_next, jnp.ones((g,), jnp.int32),
           error, done, jnp.asarray(1, jnp.int32))

  def running(state):
    *_, done, step = state
    return (~jnp.all(done)) & (step < settings.max_iterations)

  # Points that have stopped keep iterating (their columns of the product are independent of the
  # others'), but their outputs were recorded when they stopped: nothing full-size is masked, and
  # the readout runs only in the iterations where some point stops.
  def body(state):
    clipped, rhs, pr, kappa, iterations, error, done, step = state
    w_new = kappa * product(kappa, rhs) + clipped
    clipped_new = jnp.clip(w_new, -mu3, mu3)
    error_new = jnp.max(jnp.abs(clipped_new - clipped), axis=(0, 2)) / kappa
    active = ~done
    # A non-finite error also stops a point (it is reported failed); at the iteration cap every
    # running point is read out (and reported not converged).
    last = step + 1 >= settings.max_iterations
    stopping = active & ((error_new < tol) | ~jnp.isfinite(error_new) | last)
    pr = jax.lax.cond(
        jnp.any(stopping),
        lambda: jnp.where(stopping[None, :, None], readout_of(w_new, clipped_new, kappa), pr),
        lambda: pr)
    error = jnp.where(active, error_new, error)
    iterations = iterations + active.astype(iterations.dtype)
    kappa_next = jnp.minimum(rho * kappa, kappa_max)
    return (clipped_new, next_rhs(w_new, kappa, kappa_next), pr, kappa_next, iterations, error,
            done | stopping, step + 1)

  _, _, pr, _, iterations, error, _, _ = jax.lax.while_loop(running, body, state)
  return {"pr": pr, "iterations": iterations, "error": error}


@functools.partial(jax.jit, static_argnames=("mesh", "settings", "tol"))
def _iterate(u, dvals, b0, readout, mus, *, mesh: Mesh, settings: Settings, tol: float):
  """:func:`_iterate_impl` with the mu values split over the devices of ``mesh``."""
  local = functools.partial(_iterate_impl, settings=settings, tol=tol)
  replicated, lanes = PartitionSpec(), PartitionSpec("lanes")
  return jax.shard_map(
      local, mesh=mesh, in_specs=(replicated, replicated, replicated, replicated, lanes),
      out_specs={"pr": PartitionSpec(None, "lanes"), "iterations": lanes, "error": lanes},
      check_vma=False)(u, dvals, b0, readout, mus)


@dataclasses.dataclass(frozen=True)
class RegenerationResult:
  """The ALM's outcome at every grid point (rows of ``lam``/``mu``).

  Attributes:
    lam, mu: (G,) the grid points.
    pr: (G, n, r) ``P R``: the final regenerator times the readout matrix.
    iterations: (G,) ALM iterations.
    converged: (G,) whether ``max |P - Q| < tol`` was met.
    failed: (G,) whether the iterates became non-finite.
  """
  lam: np.ndarray
  mu: np.ndarray
  pr: np.ndarray
  iterations: np.ndarray
  converged: np.ndarray
  failed: np.ndarray


def chunk_lanes(num_points: int, bytes_per_point: int, memory_budget: int, num_devices: int) -> int:
  """Points per chunk: as many as the budget allows, a multiple of the device count, balanced."""
  fit = max(1, memory_budget // max(1, bytes_per_point))
  fit = max(num_devices, fit - fit % num_devices)
  num_chunks = -(-num_points // fit)
  per_chunk = -(-num_points // num_chunks)
  return -(-per_chunk // num_devices) * num_devices


def solve_grid(kernels: Kernels, y: np.ndarray, readout: np.ndarray, lam: np.ndarray,
               mu: np.ndarray, *, precision: str = "float64", settings: Settings = Settings(),
               memory_budget: int = 2 << 30, devices: list[jax.Device] | None = None
               ) -> RegenerationResult:
  """Runs the ALM at every ``(lam[i], mu[i])``.

  Args:
    kernels: the shared kernels.
    y: (n_s, m) the regression target per source sample (rows): raw features (TSRG) or one-hot
      labels (DRLS); ``Y`` of the module docstring is its transpose.
    readout: (m, r) applied to each final ``P`` before it is returned (bounded output memory).
    lam, mu: (G,) the grid points (any set; points sharing a lambda iterate together).
    precision: ``'float64'`` (reference) or ``'float32'``.
    settings: ALM settings.
    memory_budget: bytes allowed for the iterates of one chunk (about eight (n, m) arrays per
      point are live).
    devices: devices to shard a chunk's points over (default: all local devices).

  Returns:
    A :class:`RegenerationResult` in the order of ``lam``/``mu``.
  """
  lam = np.asarray(lam, np.float64).reshape(-1)
  mu = np.asarray(mu, np.float64).reshape(-1)
  if lam.shape != mu.shape:
    raise ValueError(f"lambda and mu must have the same length, got {lam.shape} and {mu.shape}")
  devices = list(jax.local_devices()) if devices is None else list(devices)
  mesh = Mesh(np.asarray(devices), ("lanes",))
  n, m = kernels.k_s.shape[0], y.shape[1]
  b0 = kernels.k_s @ y                               # (n, m) = K_s Y^T
  g = lam.shape[0]
  pr = np.zeros((g, n, readout.shape[1]))
  iterations = np.zeros(g, np.int64)
  error = np.full(g, np.inf)
  with jax.enable_x64(precision == "float64"):
    dtype = solver.resolve_dtype(precision)
    itemsize = np.dtype(dtype).itemsize
    tol = settings.resolved_tol(precision)
    replicated = NamedSharding(mesh, PartitionSpec())
    b0_d = jax.device_put(jnp.asarray(b0, dtype), replicated)
    readout_d = jax.device_put(jnp.asarray(readout, dtype), replicated)
    for value in np.unique(lam):
      u, dvals = lambda_spectrum(kernels.k_s, kernels.k_delta, float(value))
      u_d = jax.device_put(jnp.asarray(u, dtype), replicated)
      d_d = jax.device_put(jnp.asarray(dvals, dtype), replicated)
      rows = np.flatnonzero(lam == value)
      lanes = chunk_lanes(rows.size, 8 * n * m * itemsize, memory_budget, len(devices))
      for start in range(0, rows.size, lanes):
        idx = rows[start:start + lanes]
        padded = np.concatenate([mu[idx], np.full(lanes - idx.size, mu[idx[-1]])])
        mus_d = jax.device_put(jnp.asarray(padded, dtype), NamedSharding(mesh, PartitionSpec("lanes")))
        out = jax.device_get(_iterate(u_d, d_d, b0_d, readout_d, mus_d, mesh=mesh,
                                      settings=settings, tol=tol))
        pr[idx] = np.moveaxis(np.asarray(out["pr"], np.float64), 1, 0)[:idx.size]
        iterations[idx] = out["iterations"][:idx.size]
        error[idx] = out["error"][:idx.size]
  failed = ~np.isfinite(error) | ~np.isfinite(pr).all(axis=(1, 2))
  return RegenerationResult(lam=lam, mu=mu, pr=pr, iterations=iterations,
                            converged=(error < tol) & ~failed, failed=failed)


def grid_arrays(params: Mapping[str, np.ndarray], method: str) -> tuple[np.ndarray, np.ndarray]:
  """``(lambda, mu)`` from a params mapping, checking both are present with equal length."""
  return methods.param_arrays(params, ("lambda", "mu"), method)


def check_inputs(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, xq: np.ndarray,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Validates a method's inputs; returns them as float64 features and int64 labels.

  Raises:
    ValueError: naming the argument that does not fit (shape, label range, non-finite values).
  """
  arrays = {}
  for name, a in (("xs", xs), ("xt", xt), ("xq", xq)):
    a = np.asarray(a, np.float64)
    if a.ndim != 2:
      raise ValueError(f"{name} must be a 2-D (samples, features) array, got shape {a.shape}")
    if not np.isfinite(a).all():
      raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    arrays[name] = a
  d = arrays["xs"].shape[1]
  for name in ("xt", "xq"):
    if arrays[name].shape[1] != d:
      raise ValueError(f"{name} has {arrays[name].shape[1]} features, xs has {d}")
  ys = np.asarray(ys).reshape(-1)
  if ys.shape[0] != arrays["xs"].shape[0]:
    raise ValueError(f"ys must hold one label per row of xs ({arrays['xs'].shape[0]}), got "
                     f"{ys.shape[0]}")
  if ys.size and (ys.min() < 0 or ys.max() >= num_classes):
    raise ValueError(f"ys must hold class indices in [0, {num_classes}), got "
                     f"[{ys.min()}, {ys.max()}]")
  return arrays["xs"], ys.astype(np.int64), arrays["xt"], arrays["xq"]
