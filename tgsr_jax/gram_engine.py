r"""A fast, exact engine for TGSR sweeps: the ALM iterations in group-wise coordinates.

Every matrix the inexact ALM touches lives, group by group, in ``span{1, Q_g}``: with ``Q`` the
thin-QR basis of ``[Xs^T, d]`` (see :mod:`tgsr_jax.solver`) and ``Q_g`` its rows of group ``g``,

  V_g = a_g 1 + Q_g v_g,   C_g = s'_g V'_g,   P_g = mu' (s'_g - 1) V'_g,

where primes mark the previous iteration and ``s_g`` is the group's shrinkage factor. (The
initial ``C = 1, P = 0`` is ``V' = 1, s' = 1``.) One iteration of the reference algorithm then
needs only ``r x C`` coordinates per group:

* ``E = C + P / mu = e_g V'_g`` with ``e_g = s'_g + (mu' / mu)(s'_g - 1)``, so
  ``Q^T E = sum_g e_g (a'_g o_g + H_g v'_g)`` with ``H_g = Q_g^T Q_g`` and ``o_g = Q_g^T 1``;
* the D step gives ``V = C + Q g`` for a small ``g`` (r x C); hence ``a = s' a'``,
  ``v = s' v' + g`` and ``H v = s' H v' + H g``: the product ``H_g g`` over all groups is the only
  sizeable work of an iteration (``K r^2 C`` instead of the ``2 Kd r C`` of two products with Q);
* group norms ``||V_g||^2 = a^2 |g| + 2 a <o_g, v 1> + <v, H v>`` give the shrinkage exactly;
* the stopping rule ``max |C_new - D| < tol`` is evaluated on
  ``C_new - D = (s - 1) V - (mu' / mu)(s' - 1) V'``. A lower bound (the exact entries of a few
  "probe" rows per group: the rows of ``Q_g`` of largest norm) and a row-norm upper bound decide
  it without leaving the coordinates; only when the bounds straddle ``tol`` are all entries
  ``a 1 + Q_g x`` formed (one block product, skipped by ``lax.cond`` when no grid point of the
  chunk needs it).

The iterates are those of the reference algorithm up to rounding, and the stopping decision is
exact, so iteration counts, selected groups and scores match the dense solver. Requires groups of
equal size (after sorting columns by group), which covers both the benchmark's chunks and the
85 facial regions.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tgsr_jax import solver


class GramFactors(NamedTuple):
  """Group-wise factors shared by every grid point (K groups of m columns, basis rank r)."""
  h: jax.Array      # (K, r, r)  Q_g^T Q_g
  o: jax.Array      # (K, r)     Q_g^T 1
  qb: jax.Array     # (K, m, r)  Q_g, for exact stopping checks
  row_max: jax.Array  # (K,)     max row norm of Q_g
  probe: jax.Array  # (K, p, r)  the p rows of Q_g of largest norm (cheap exact lower bounds)
  xq: jax.Array     # (K, nt, r) Xt_g Q_g, for target logits
  xo: jax.Array     # (K, nt)    Xt_g 1


@functools.partial(jax.jit, static_argnames=("num_groups", "num_probes"))
def gram_factors(problem: solver.Problem, xt: jax.Array, *, num_groups: int,
                 num_probes: int = 8) -> GramFactors:
  """Builds :class:`GramFactors` from a prepared problem with equal, contiguous groups."""
  kd, r = problem.q.shape
  m = kd // num_groups
  qb = problem.q.reshape(num_groups, m, r)
  xtb = xt.reshape(xt.shape[0], num_groups, m)
  row_norms = jnp.sum(qb * qb, axis=2)                                  # (K, m)
  _, probe_rows = jax.lax.top_k(row_norms, min(num_probes, m))
  return GramFactors(
      h=jnp.einsum("kmi,kmj->kij", qb, qb),
      o=qb.sum(axis=1),
      qb=qb,
      row_max=jnp.sqrt(jnp.max(row_norms, axis=1)),
      probe=jnp.take_along_axis(qb, probe_rows[:, :, None], axis=1),
      xq=jnp.einsum("nkm,kmr->knr", xtb, qb),
      xo=xtb.sum(axis=2).T)


class GramState(NamedTuple):
  """Per-lane iteration state; lanes (grid points) on the last axis."""
  a: jax.Array      # (K, G)        ones-coefficient of V'
  v: jax.Array      # (K, r, C, G)  Q_g-coordinates of V'
  hv: jax.Array     # (K, r, C, G)  H_g v
  s: jax.Array      # (K, G)        shrinkage factors s' of the last iteration
  mu_prev: jax.Array  # (G,)
  mu: jax.Array     # (G,)
  iteration: jax.Array  # (G,) int32
  error: jax.Array  # (G,)
  exact_checks: jax.Array  # () int32, iterations that needed the exact stopping check


def init_state(f: GramFactors, num_classes: int, lanes: int, settings: solver.Settings) -> GramState:
  k, r = f.o.shape
  dtype = f.h.dtype
  return GramState(
      a=jnp.full((k, lanes), settings.init_value, dtype),
      v=jnp.zeros((k, r, num_classes, lanes), dtype),
      hv=jnp.zeros((k, r, num_classes, lanes), dtype),
      s=jnp.ones((k, lanes), dtype),
      mu_prev=jnp.full((lanes,), settings.mu0, dtype),
      mu=jnp.full((lanes,), settings.mu0, dtype),
      iteration=jnp.zeros((lanes,), jnp.int32),
      error=jnp.full((lanes,), jnp.inf, dtype),
      exact_checks=jnp.zeros((), jnp.int32))


def _quad(f: GramFactors, a: jax.Array, x: jax.Array, hx: jax.Array, m: int) -> jax.Array:
  """``||a 1 + Q_g x||_F^2`` per group and lane from coordinates: (K, G)."""
  num_classes = x.shape[2]
  ox = jnp.einsum("kr,krcg->kg", f.o, x)
  return a * a * (m * num_classes) + 2.0 * a * ox + jnp.sum(x * hx, axis=(1, 2))


def iterate(problem: solver.Problem, f: GramFactors, w: jax.Array, s_eig: jax.Array,
            kappa: jax.Array, state: GramState, *, num_groups: int, settings: solver.Settings,
            tol: float, iteration_limit: int) -> GramState:
  """Runs ALM iterations on a batch of lanes until each has converged or hit a limit.

  Args:
    problem: the shared problem (``a`` = Q^T 2 Xs^T Y).
    f: group-wise factors.
    w, s_eig: per-lane xi spectra, (G, r, r) and (G, r).
    kappa: (G,) groups kept per lane.
    state: the starting state.
    num_groups: K.
    settings: ALM settings.
    tol: stopping tolerance.
    iteration_limit: iteration cap.

  Returns:
    The final state.
  """
  k, m, r = f.qb.shape
  dtype = f.h.dtype
  eps = jnp.finfo(dtype).eps
  wt_a = jnp.einsum("gji,jc->gic", w, problem.a)  # (G, r, C): W^T a per lane

  def active(st: GramState) -> jax.Array:
    return (st.error >= tol) & (st.iteration < iteration_limit)

  def body(st: GramState) -> GramState:
    run = active(st)
    # E = e_g V', z = Q^T E.
    e = st.s + (st.mu_prev / st.mu)[None, :] * (st.s - 1.0)             # (K, G)
    z = jnp.einsum("kg,kr,kg->rg", e, f.o, st.a)[:, None, :] + jnp.einsum("kg,krcg->rcg", e, st.hv)
    # D step correction g = W [(W^T a - 2 s W^T z) / (mu + 2 s)], per lane.
    wz = jnp.einsum("gji,jcg->icg", w, z)
    corr = (jnp.moveaxis(wt_a, 0, -1) - 2.0 * s_eig.T[:, None, :] * wz) / (
        st.mu[None, None, :] + 2.0 * s_eig.T[:, None, :])
    g = jnp.einsum("gij,jcg->icg", w, corr)                             # (r, C, G)
    hg = jnp.einsum("kij,jcg->kicg", f.h, g)                            # the main product
    a_new = st.s * st.a
    v_new = st.s[:, None, None, :] * st.v + g[None]
    hv_new = st.s[:, None, None, :] * st.hv + hg
    norms = jnp.sqrt(jnp.maximum(_quad(f, a_new, v_new, hv_new, m), 0.0))  # (K, G)
    ordered = -jnp.sort(-norms, axis=0)
    thr = jnp.where(kappa < num_groups,
                    jnp.take_along_axis(ordered, jnp.clip(kappa, 0, num_groups - 1)[None, :], 0)[0],
                    0.0)
    safe = jnp.where(norms > 0, norms, 1.0)
    s_new = jnp.where(norms > thr[None, :], (norms - thr[None, :]) / safe, 0.0)
    # C_new - D = c1 V + c2 V' with c1 = s - 1, c2 = -(mu' / mu)(s' - 1).
    c1 = s_new - 1.0
    c2 = -(st.mu_prev / st.mu)[None, :] * (st.s - 1.0)
    ax = c1 * a_new + c2 * st.a
    x = c1[:, None, None, :] * v_new + c2[:, None, None, :] * st.v
    probed = jnp.einsum("kpr,krcg->kpcg", f.probe, x) + ax[:, None, None, :]
    lower = jnp.max(jnp.abs(probed), axis=(0, 1, 2))                                # (G,)
    col_norm = jnp.sqrt(jnp.sum(x * x, axis=1)).max(axis=1)                          # (K, G)
    upper = (jnp.abs(ax) + f.row_max[:, None] * col_norm).max(axis=0) * (1.0 + 16.0 * eps)
    ambiguous = run & (lower < tol) & (upper >= tol)

    def exact(_):
      entries = jnp.einsum("kmr,krcg->kmcg", f.qb, x) + ax[:, None, None, :]
      return jnp.max(jnp.abs(entries), axis=(0, 1, 2))

    error_exact = jax.lax.cond(jnp.any(ambiguous), exact, lambda _: upper, None)
    error = jnp.where(lower >= tol, lower, jnp.where(upper < tol, upper, error_exact))
    # Lanes that already stopped keep their state.
    keep = lambda new, old: jnp.where(run, new, old)  # noqa: E731
    keep_k = lambda new, old: jnp.where(run[None, :], new, old)  # noqa: E731
    keep_v = lambda new, old: jnp.where(run[None, None, None, :], new, old)  # noqa: E731
    return GramState(
        a=keep_k(a_new, st.a), v=keep_v(v_new, st.v), hv=keep_v(hv_new, st.hv),
        s=keep_k(s_new, st.s), mu_prev=keep(st.mu, st.mu_prev),
        mu=keep(jnp.minimum(settings.rho * st.mu, settings.mu_max), st.mu),
        iteration=st.iteration + run.astype(jnp.int32), error=keep(error, st.error),
        exact_checks=st.exact_checks + jnp.any(ambiguous).astype(jnp.int32))

  return jax.lax.while_loop(lambda st: jnp.any(active(st)), body, state)


def target_logits(f: GramFactors, state: GramState) -> jax.Array:
  """``Xt C`` for every lane, (G, nt, C), from the final coordinates (C = s V)."""
  sa = state.s * state.a                                   # (K, G)
  ones_part = jnp.einsum("kn,kg->gn", f.xo, sa)[:, :, None]
  coord_part = jnp.einsum("knr,krcg,kg->gnc", f.xq, state.v, state.s)
  return ones_part + coord_part


def coefficients(f: GramFactors, state: GramState) -> jax.Array:
  """The coefficient matrices C (Kd, C, G) in group-sorted column order."""
  entries = jnp.einsum("kmr,krcg->kmcg", f.qb, state.v) + state.a[:, None, None, :]
  c = entries * state.s[:, None, None, :]
  k, m, num_classes, lanes = c.shape
  return c.reshape(k * m, num_classes, lanes)
