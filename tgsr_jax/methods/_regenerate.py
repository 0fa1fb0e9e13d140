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
eigendecomposition depends on lambda only (one ``n x n`` ``eigh`` per lambda); mu enters only the
soft threshold. The grid points run on a pool of lanes (as many as fit a memory budget: TSRG's
``P`` is n x d per point) inside one ``lax.while_loop`` per device: every iteration multiplies
each lane's ``A(kappa) = U diag(1 / (D + kappa/2)) U^T`` (its own lambda and kappa) with its
``(n, m)`` right-hand side as one batched product; a lane whose point meets the stopping rule
writes out that point's result (and iteration count) and restarts on the next queued point, so
the grid costs the sum of its points' iterations, not the slowest point's times the grid size.
The points are split over the local devices.

Column blocks (the default on a CPU when ``m > n``, i.e. TSRG): every column of ``P`` is its
own problem (the product, the threshold and the multiplier act column by column); only the
stopping rule, ``max |P - Q|`` over all columns, couples them. The lane pool streams each
lane's whole ``(n, m)`` iterate (8.5 MB in float32 on the CDMER features) from memory several
times an iteration, which bounds it by memory bandwidth on a CPU; the blocked path runs one
point at a time and lets each cache-sized block of columns iterate from cache, and finds the
reference's stopping iteration exactly (:func:`_blocked_point`). Its product per block is an
``n x n`` by ``n x w`` GEMM, close to the machine's GEMM peak. Accelerators keep the lane pool
(their memory bandwidth feeds the product, and many lanes fill them).

Low rank: ``K~ K~^T`` has rank ``r <= n_s + 1``, so ``A(kappa) = (2/kappa) I + U_r diag(1 / (D_r
+ kappa/2) - 2/kappa) U_r^T``; but applying it still takes two products (``U_r^T X`` and ``U_r``
times that, ``4 r n m`` flops against ``2 n^2 m``), a gain only where ``2 r < n`` (n_t > n_s + 2),
none on V->N or N->V, a loss where the source is the larger set. It also drops the null
eigenvalues, which the reference iterates amplify (see :func:`lambda_spectrum`). Not used.

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
    column_block: None (automatic: on a CPU, points with ``m > n`` (TSRG) run one after another
      in cache-sized blocks of columns, elsewhere on the lane pool), 0 (always the lane pool)
      or a block width in columns (always blocked). Both give the reference's iterates.
  """
  kappa0: float = 1e-3
  rho: float = 1.1
  kappa_max: float = 1e15
  tol: float | None = None
  max_iterations: int = 2000
  init_value: float = 1.0
  column_block: int | None = None

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
                  point_lam: jax.Array, point_mu: jax.Array, point_b0: jax.Array,
                  point_readout: jax.Array, *, lanes: int, settings: Settings, tol: float
                  ) -> dict[str, jax.Array]:
  r"""Runs the ALM at every point of a queue on a pool of ``lanes`` lanes; returns ``P R``.

  The iterates are carried as one array per point, ``W_k = kappa_k Q_k - T_k``: the P step is
  ``P_{k+1} = soft(W_k, mu) / kappa_k`` and the multiplier step becomes
  ``T_{k+1} = T_k + kappa_k (P_{k+1} - Q_k) = -clip(W_k, -mu, mu)``, so

  * ``Q_{k+1} = A_{k+1} (K_s Y^T + (r_k soft(W_k, mu) - clip(W_k, mu)) / 2)``,
    ``r_k = kappa_{k+1} / kappa_k``;
  * ``W_{k+1} = kappa_{k+1} Q_{k+1} + clip(W_k, mu)``;
  * ``max |P_{k+1} - Q_k| = max |T_{k+1} - T_k| / kappa_k``.

  Algebraically the iteration of the module docstring (the start ``P = T = init`` is the state
  ``clip = -init``); only ``clip(W_k, mu)`` and the next right-hand side are carried, so an
  iteration is the product plus a few fused elementwise sweeps over them.

  Lane pool: each lane runs one grid point at its own iteration (its own kappa, lambda and
  ``A(kappa)``: formed per lane and iteration where ``m > n`` (TSRG: ``2 n^3`` flops against the
  product's ``2 n^2 m``), applied through its factors ``U`` where ``m <= n`` (DRLS)). When a
  lane's point stops, its ``P R`` is written out and the lane restarts on the next point of the
  queue, so no lane iterates past its point's stop (a chunk of points iterating together would run
  every point to the chunk's slowest). Lanes left without a point at the end of the queue idle
  until the last point stops.

  Args:
    u, dvals: (L, n, n) and (L, n): the spectrum of each distinct lambda.
    b0: (B, n, m) ``K_s Y^T`` of each distinct regression target.
    readout: (R, m, r) the matrices applied to a final ``P`` (what prediction needs).
    point_lam, point_b0, point_readout: (N,) int32 indices of each queued point's lambda,
      target and readout; ``point_lam < 0`` marks padding (never run).
    point_mu: (N,) the mu values.
    lanes: the pool size.
    settings: ALM settings; tol: the stopping tolerance.

  Returns:
    ``pr`` (N, n, r), ``iterations`` (N,), ``error`` (N,) the last ``max |P - Q|``.
  """
  num_b, n, m = b0.shape
  r = readout.shape[2]
  num_points = point_mu.shape[0]
  dtype = b0.dtype
  rho = jnp.asarray(settings.rho, dtype)
  kappa_max = jnp.asarray(settings.kappa_max, dtype)
  kappa0 = jnp.asarray(settings.kappa0, dtype)
  init = jnp.asarray(settings.init_value, dtype)
  runnable = point_lam >= 0
  queue = jnp.argsort(~runnable, stable=True)            # runnable points first, in order
  num_runnable = jnp.sum(runnable.astype(jnp.int32))

  def start_state(point):
    """(clip, rhs, kappa) of a point before its first iteration (P = T = init)."""
    rhs = b0[point_b0[point]] + 0.5 * (kappa0 * init + init)
    return jnp.full((n, m), -init, dtype), rhs, kappa0

  # Lane l starts on queue[l]; lanes beyond the queue hold no point (-1).
  first = jnp.arange(lanes)
  lane_point = jnp.where(first < num_runnable, queue[jnp.minimum(first, num_points - 1)], -1)
  safe = jnp.maximum(lane_point, 0)
  clipped, rhs, _ = jax.vmap(start_state)(safe)
  kappa = jnp.full((lanes,), kappa0)
  iterations = jnp.zeros((lanes,), jnp.int32)
  out = {"pr": jnp.zeros((num_points, n, r), dtype),
         "iterations": jnp.zeros((num_points,), jnp.int32),
         "error": jnp.full((num_points,), jnp.inf, dtype)}
  state = (clipped, rhs, kappa, iterations, lane_point, jnp.minimum(lanes, num_runnable), out)

  def running(state):
    return jnp.any(state[4] >= 0)

  def body(state):
    clipped, rhs, kappa, iterations, lane_point, next_in_queue, out = state
    safe = jnp.maximum(lane_point, 0)
    lam = point_lam[safe]
    mu = point_mu[safe][:, None, None]
    ul, scale = u[lam], 1.0 / (dvals[lam] + 0.5 * kappa[:, None])
    if m > n:
      # TSRG (m = d): form each lane's A (2 n^3 flops), then one product (2 n^2 m).
      a = jnp.einsum("lij,lj,lkj->lik", ul, scale, ul)
      product = jnp.einsum("lij,ljm->lim", a, rhs)
    else:
      # DRLS (m = C): through the factors (4 n^2 m flops), far below forming A.
      product = jnp.einsum("lij,ljm->lim", ul,
                           scale[:, :, None] * jnp.einsum("lji,ljm->lim", ul, rhs))
    w_new = kappa[:, None, None] * product + clipped
    clipped_new = jnp.clip(w_new, -mu, mu)
    error = jnp.max(jnp.abs(clipped_new - clipped), axis=(1, 2)) / kappa
    iterations = iterations + 1
    active = lane_point >= 0
    # A non-finite error also stops a point (it is reported failed); at the iteration cap a
    # running point is read out (and reported not converged).
    stopping = active & ((error < tol) | ~jnp.isfinite(error)
                         | (iterations >= settings.max_iterations))
    kappa_used = kappa
    kappa_next = jnp.minimum(rho * kappa, kappa_max)
    ratio = (kappa_next / kappa)[:, None, None]
    # One target (TSRG): broadcast it rather than gather a copy per lane.
    b0_lanes = b0[:1] if num_b == 1 else b0[point_b0[safe]]
    rhs = b0_lanes + 0.5 * (ratio * (w_new - clipped_new) - clipped_new)
    state = (clipped_new, rhs, kappa_next, iterations, lane_point, next_in_queue, out)

    def retire_and_refill(state):
      clipped, rhs, kappa, iterations, lane_point, next_in_queue, out = state
      # Write out the stopping points (P = soft(W, mu) / kappa, times their readout).
      p_final = (w_new - clipped_new) / kappa_used[:, None, None]
      pr = jnp.einsum("lnm,lmr->lnr", p_final, readout[point_readout[safe]])
      target = jnp.where(stopping, lane_point, num_points)          # out of range: dropped
      out = {"pr": out["pr"].at[target].set(pr, mode="drop"),
             "iterations": out["iterations"].at[target].set(iterations, mode="drop"),
             "error": out["error"].at[target].set(error, mode="drop")}
      # Stopping lanes take the next queued points, in lane order.
      rank = jnp.cumsum(stopping.astype(jnp.int32)) - 1
      slot = next_in_queue + rank
      refill = jnp.where(slot < num_runnable, queue[jnp.minimum(slot, num_points - 1)], -1)
      lane_point = jnp.where(stopping, refill, lane_point)
      fresh_clip, fresh_rhs, _ = jax.vmap(start_state)(jnp.maximum(lane_point, 0))
      restart = stopping[:, None, None]
      clipped = jnp.where(restart, fresh_clip, clipped)
      rhs = jnp.where(restart, fresh_rhs, rhs)
      kappa = jnp.where(stopping, kappa0, kappa)
      iterations = jnp.where(stopping, 0, iterations)
      next_in_queue = next_in_queue + jnp.sum(stopping.astype(jnp.int32))
      return clipped, rhs, kappa, iterations, lane_point, next_in_queue, out

    return jax.lax.cond(jnp.any(stopping), retire_and_refill, lambda s: s, state)

  *_, out = jax.lax.while_loop(running, body, state)
  return out


@functools.partial(jax.jit, static_argnames=("mesh", "lanes", "settings", "tol"))
def _iterate(u, dvals, b0, readout, point_lam, point_mu, point_b0, point_readout, *, mesh: Mesh,
             lanes: int, settings: Settings, tol: float):
  """:func:`_iterate_impl` with the point queue split over the devices of ``mesh``."""
  local = functools.partial(_iterate_impl, lanes=lanes, settings=settings, tol=tol)
  replicated, split = PartitionSpec(), PartitionSpec("lanes")
  return jax.shard_map(
      local, mesh=mesh, in_specs=(replicated,) * 4 + (split,) * 4,
      out_specs={"pr": split, "iterations": split, "error": split},
      check_vma=False)(u, dvals, b0, readout, point_lam, point_mu, point_b0, point_readout)


# Bytes of the per-block working set (b0, the clip, right-hand side and soft parts of one block
# of columns, about five n x w arrays) that the blocked path keeps in cache: a block iterates
# from the cache while a whole (n, m) iterate streams from memory every iteration.
BLOCK_CACHE_BYTES = 8 << 20


def column_blocks(n: int, m: int, itemsize: int, column_block: int | None, platform: str
                  ) -> tuple[int, int]:
  """``(number of blocks, block width)`` of the blocked path, or ``(0, 0)`` for the lane pool.

  ``column_block`` None picks: blocked on a CPU when ``m > n`` (TSRG), width from
  :data:`BLOCK_CACHE_BYTES`; the lane pool elsewhere (DRLS; accelerators, whose memory
  bandwidth feeds the product). 0 forces the lane pool, ``w > 0`` blocks of about ``w`` columns.
  """
  if column_block is None:
    if platform != "cpu" or m <= n:
      return 0, 0
    column_block = max(128, BLOCK_CACHE_BYTES // (5 * n * itemsize))
  if column_block <= 0:
    return 0, 0
  blocks = -(-m // min(int(column_block), m))
  width = -(-m // blocks)
  return blocks, -(-width // 8) * 8                      # widths a multiple of 8 (vector lanes)


def _blocked_point(u: jax.Array, dvals: jax.Array, b0: jax.Array, readout: jax.Array,
                   mu: jax.Array, *, columns: jax.Array, settings: Settings, tol: float
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""One grid point's ALM, column block by column block, with the reference's iterates.

  The columns of ``P`` are independent problems except for the stopping rule (``max |P - Q|``
  over all of them), so a block can run many iterations while it sits in cache. The stop is
  found exactly: each block advances from where it is to the first iteration ``k >= K`` at
  which its own error is below ``tol`` (``K`` the largest such ``k`` so far), and passes over
  the blocks repeat until every block sits at the same ``K`` and is below there. No iteration
  before ``K`` had every block below (the block that raised ``K`` was above at each), so ``K``
  is the reference's stopping iteration and every block's iterate is the reference's at ``K``.
  A non-finite error or the iteration cap also stops a block; a non-finite error anywhere
  marks the point failed.

  Args:
    u, dvals: (n, n) and (n,) this point's spectrum.
    b0: (B, n, w) ``K_s Y^T`` in column blocks (padding columns zero).
    readout: (B, w, r) the readout in the same blocks.
    mu: the point's mu.
    columns: (B, 1, w) 1 on real columns, 0 on padding (their iterates stay exactly 0).

  Returns:
    ``pr`` (n, r), ``iterations`` (scalar), ``error`` (scalar ``max |P - Q|`` at the stop).
  """
  num_blocks, n, width = b0.shape
  dtype = b0.dtype
  rho = jnp.asarray(settings.rho, dtype)
  kappa_max = jnp.asarray(settings.kappa_max, dtype)
  kappa0 = jnp.asarray(settings.kappa0, dtype)
  init = jnp.asarray(settings.init_value, dtype) * columns                        # (B, 1, w)

  def stop_ok(error, k):
    # k = 0: not started (the error there is a placeholder).
    return (k > 0) & ((error < tol) | ~jnp.isfinite(error) | (k >= settings.max_iterations))

  def iterate(b, block):
    clip, rhs, soft, kappa, kappa_used, k, _ = block
    scale = 1.0 / (dvals + 0.5 * kappa)
    product = ((u * scale) @ u.T) @ rhs          # A(kappa) formed (2 n^3) then applied
    w_new = kappa * product + clip
    clip_new = jnp.clip(w_new, -mu, mu)
    error = jnp.max(jnp.abs(clip_new - clip)) / kappa
    kappa_next = jnp.minimum(rho * kappa, kappa_max)
    soft = w_new - clip_new
    rhs = b0[b] + 0.5 * ((kappa_next / kappa) * soft - clip_new)
    return clip_new, rhs, soft, kappa_next, kappa, k + 1, error

  def advance(b, state):
    blocks, target = state
    block = jax.tree.map(lambda a: a[b], blocks)
    block = jax.lax.while_loop(
        lambda blk: ~((blk[5] >= target) & stop_ok(blk[6], blk[5])),
        functools.partial(iterate, b), block)
    blocks = jax.tree.map(lambda a, x: a.at[b].set(x), blocks, block)
    return blocks, jnp.maximum(target, block[5])

  def unfinished(state):
    blocks, target = state
    k, error = blocks[5], blocks[6]
    return ~(jnp.all(k == target) & jnp.all(stop_ok(error, k)))

  clip = jnp.broadcast_to(-init, b0.shape)
  rhs = b0 + 0.5 * (kappa0 * init + init)
  blocks = (clip, rhs, jnp.zeros_like(b0), jnp.full((num_blocks,), kappa0),
            jnp.full((num_blocks,), kappa0), jnp.zeros((num_blocks,), jnp.int32),
            jnp.full((num_blocks,), jnp.inf, dtype))
  blocks, target = jax.lax.while_loop(
      unfinished, lambda s: jax.lax.fori_loop(0, num_blocks, advance, s),
      (blocks, jnp.zeros((), jnp.int32)))
  _, _, soft, _, kappa_used, _, error = blocks
  p = soft / kappa_used[:, None, None]                                 # (B, n, w)
  pr = jnp.einsum("bnw,bwr->nr", p, readout)
  error = jnp.where(jnp.all(jnp.isfinite(error)), jnp.max(error), jnp.inf)
  return pr, target, error


def _iterate_blocked_impl(u, dvals, b0, readout, point_lam, point_mu, point_b0, point_readout,
                          *, columns, settings: Settings, tol: float) -> dict[str, jax.Array]:
  """The points of one device one after another, each by :func:`_blocked_point`."""
  n, r_out = b0.shape[2], readout.shape[3]

  def one(args):
    lam, mu, b, r = args
    safe = jnp.maximum(lam, 0)
    run = lambda: _blocked_point(  # noqa: E731
        u[safe], dvals[safe], b0[b], readout[r], mu.astype(b0.dtype), columns=columns,
        settings=settings, tol=tol)
    # Padding points (lam < 0) are skipped (lax.map's body is not batched: cond branches).
    skip = lambda: (jnp.zeros((n, r_out), b0.dtype), jnp.zeros((), jnp.int32),  # noqa: E731
                    jnp.asarray(jnp.inf, b0.dtype))
    return jax.lax.cond(lam >= 0, run, skip)

  pr, iterations, error = jax.lax.map(one, (point_lam, point_mu, point_b0, point_readout))
  return {"pr": pr, "iterations": iterations, "error": error}


@functools.partial(jax.jit, static_argnames=("mesh", "settings", "tol"))
def _iterate_blocked(u, dvals, b0, readout, columns, point_lam, point_mu, point_b0,
                     point_readout, *, mesh: Mesh, settings: Settings, tol: float):
  """:func:`_iterate_blocked_impl` with the point queue split over the devices of ``mesh``."""
  def local(u, dvals, b0, readout, columns, *points):
    return _iterate_blocked_impl(u, dvals, b0, readout, *points, columns=columns,
                                 settings=settings, tol=tol)
  replicated, split = PartitionSpec(), PartitionSpec("lanes")
  return jax.shard_map(
      local, mesh=mesh, in_specs=(replicated,) * 5 + (split,) * 4,
      out_specs={"pr": split, "iterations": split, "error": split},
      check_vma=False)(u, dvals, b0, readout, columns, point_lam, point_mu, point_b0,
                       point_readout)


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


def pool_lanes(num_points: int, bytes_per_lane: int, memory_budget: int) -> int:
  """Lanes of one device's pool: as many as the budget allows, at most its points."""
  return int(max(1, min(num_points, memory_budget // max(1, bytes_per_lane))))


def _padded(size: int) -> int:
  """``size`` rounded up to a power of two (repeated small calls reuse compiled shapes)."""
  return 1 << max(0, int(size) - 1).bit_length()


def solve_grid(kernels: Kernels, y: np.ndarray, readout: np.ndarray, lam: np.ndarray,
               mu: np.ndarray, *, y_index: np.ndarray | None = None,
               readout_index: np.ndarray | None = None, precision: str = "float64",
               settings: Settings = Settings(), memory_budget: int = 2 << 30,
               devices: list[jax.Device] | None = None) -> RegenerationResult:
  """Runs the ALM at every ``(lam[i], mu[i])``.

  The work shared by the points is done once: the kernels, ``K_s Y^T`` per distinct target,
  one ``n x n`` eigendecomposition per distinct lambda. The points are queued over the devices
  (round robin) and run on a pool of lanes per device (:func:`_iterate_impl`).

  Args:
    kernels: the shared kernels.
    y: (n_s, m) the regression target per source sample (rows): raw features (TSRG) or one-hot
      labels (DRLS); ``Y`` of the module docstring is its transpose. Or (B, n_s, m): several
      targets, point ``i`` regressing ``y[y_index[i]]``.
    readout: (m, r) applied to each final ``P`` before it is returned (bounded output memory), or
      (R, m, r) with point ``i`` read out by ``readout[readout_index[i]]``.
    lam, mu: (G,) the grid points (any set, any order).
    y_index, readout_index: (G,) indices into a stacked ``y`` / ``readout`` (default all 0).
    precision: ``'float64'`` (reference) or ``'float32'``.
    settings: ALM settings.
    memory_budget: bytes allowed for the iterates of one device's lanes (about eight (n, m)
      arrays per lane are live). The blocked path (``settings.column_block``) holds one point's
      iterates per device (four (n, m) arrays) whatever the budget.
    devices: devices to split the points over (default: all local devices).

  Returns:
    A :class:`RegenerationResult` in the order of ``lam``/``mu``.
  """
  lam = np.asarray(lam, np.float64).reshape(-1)
  mu = np.asarray(mu, np.float64).reshape(-1)
  if lam.shape != mu.shape:
    raise ValueError(f"lambda and mu must have the same length, got {lam.shape} and {mu.shape}")
  y = np.asarray(y, np.float64)
  readout = np.asarray(readout, np.float64)
  y = y[None] if y.ndim == 2 else y
  readout = readout[None] if readout.ndim == 2 else readout
  g = lam.shape[0]
  indices = {}
  for name, given, count in (("y_index", y_index, y.shape[0]),
                             ("readout_index", readout_index, readout.shape[0])):
    index = np.zeros(g, np.int64) if given is None else np.asarray(given, np.int64).reshape(-1)
    if index.shape != (g,) or (g and (index.min() < 0 or index.max() >= count)):
      raise ValueError(f"{name} must hold {g} indices in [0, {count}), got {index}")
    indices[name] = index
  devices = list(jax.local_devices()) if devices is None else list(devices)
  mesh = Mesh(np.asarray(devices), ("lanes",))
  n, m = kernels.k_s.shape[0], y.shape[2]
  b0 = np.matmul(kernels.k_s, y)                        # (B, n, m) = K_s Y^T per target
  lam_values, lam_index = np.unique(lam, return_inverse=True)
  spectra = [lambda_spectrum(kernels.k_s, kernels.k_delta, float(v)) for v in lam_values]
  num_devices = len(devices)
  per_device = _padded(max(1, -(-g // num_devices)))
  # Round robin: device k runs points k, k + D, ...; padding (lambda index -1) is never run.
  table = np.full((num_devices, per_device), -1, np.int64)
  order = np.arange(g)
  for k in range(num_devices):
    mine = order[k::num_devices]
    table[k, :mine.size] = mine
  flat = table.reshape(-1)
  real = flat >= 0
  safe = np.where(real, flat, 0)
  point_lam = np.where(real, lam_index[safe], -1).astype(np.int32)
  with jax.enable_x64(precision == "float64"):
    dtype = solver.resolve_dtype(precision)
    itemsize = np.dtype(dtype).itemsize
    tol = settings.resolved_tol(precision)
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("lanes"))
    put = lambda a, sharding, kind=dtype: jax.device_put(jnp.asarray(a, kind), sharding)  # noqa: E731
    spectra_u = put(np.stack([s[0] for s in spectra]), replicated)
    spectra_d = put(np.stack([s[1] for s in spectra]), replicated)
    points = (put(point_lam, split, jnp.int32), put(np.where(real, mu[safe], 0.0), split),
              put(indices["y_index"][safe], split, jnp.int32),
              put(indices["readout_index"][safe], split, jnp.int32))
    num_blocks, width = column_blocks(n, m, itemsize, settings.column_block,
                                      devices[0].platform)
    if num_blocks:
      # Columns in blocks: (B, n, m) -> (B, blocks, n, width), readout (R, blocks, width, r).
      pad = num_blocks * width - m
      blocked_b0 = np.pad(b0, ((0, 0), (0, 0), (0, pad))).reshape(
          b0.shape[0], n, num_blocks, width).transpose(0, 2, 1, 3)
      blocked_readout = np.pad(readout, ((0, 0), (0, pad), (0, 0))).reshape(
          readout.shape[0], num_blocks, width, readout.shape[2])
      columns = (np.arange(num_blocks * width) < m).reshape(num_blocks, 1, width)
      out = jax.device_get(_iterate_blocked(
          spectra_u, spectra_d, put(blocked_b0, replicated), put(blocked_readout, replicated),
          put(columns, replicated), *points, mesh=mesh, settings=settings, tol=tol))
    else:
      lanes = pool_lanes(-(-g // num_devices), 8 * n * m * itemsize, memory_budget)
      out = jax.device_get(_iterate(spectra_u, spectra_d, put(b0, replicated),
                                    put(readout, replicated), *points, mesh=mesh, lanes=lanes,
                                    settings=settings, tol=tol))
  pr = np.zeros((g, n, readout.shape[2]))
  pr[flat[real]] = np.asarray(out["pr"], np.float64)[real]
  iterations = np.zeros(g, np.int64)
  iterations[flat[real]] = np.asarray(out["iterations"])[real]
  error = np.full(g, np.inf)
  error[flat[real]] = np.asarray(out["error"], np.float64)[real]
  failed = ~np.isfinite(error) | ~np.isfinite(pr).all(axis=(1, 2))
  return RegenerationResult(lam=lam, mu=mu, pr=pr, iterations=iterations,
                            converged=(error < tol) & ~failed, failed=failed)


def grid_arrays(params: Mapping[str, np.ndarray], method: str) -> tuple[np.ndarray, np.ndarray]:
  """``(lambda, mu)`` from a params mapping, checking both are present with equal length."""
  return methods.param_arrays(params, ("lambda", "mu"), method)


def check_inputs(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, xq: np.ndarray,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Validates a method's inputs; returns them as float64 features and int64 labels.

  ``ys`` is (n_s,) (one labelling for every grid point) or (G, n_s) (one per grid point).

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
  ys = np.asarray(ys)
  ys = ys.reshape(-1) if ys.ndim <= 1 else ys
  if ys.ndim > 2 or ys.shape[-1] != arrays["xs"].shape[0]:
    raise ValueError(f"ys must hold one label per row of xs ({arrays['xs'].shape[0]}), as "
                     f"(n_s,) or (G, n_s), got shape {ys.shape}")
  if ys.size and (ys.min() < 0 or ys.max() >= num_classes):
    raise ValueError(f"ys must hold class indices in [0, {num_classes}), got "
                     f"[{ys.min()}, {ys.max()}]")
  return arrays["xs"], ys.astype(np.int64), arrays["xt"], arrays["xq"]


def labellings(ys: np.ndarray, num_points: int) -> tuple[np.ndarray, np.ndarray]:
  """The distinct labellings of ``ys`` ((n_s,) or (G, n_s)) and each grid point's index.

  Returns:
    ``(distinct, index)``: (L, n_s) labellings and (G,) the labelling of each point.
  """
  if ys.ndim == 1:
    return ys[None], np.zeros(num_points, np.int64)
  if ys.shape[0] != num_points:
    raise ValueError(f"ys of shape (G, n_s) must have one row per grid point ({num_points}), "
                     f"got {ys.shape[0]}")
  distinct, index = np.unique(ys, axis=0, return_inverse=True)
  return distinct, np.asarray(index).reshape(-1)
