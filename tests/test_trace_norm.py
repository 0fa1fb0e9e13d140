"""Tensor trace norms: values vs NumPy SVDs, U V^T gradients, unfoldings vs index loops."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from mtl_flax import trace_norm as tn


def _rng(seed=0):
  return np.random.default_rng(seed)


# Independent unfoldings: one entry at a time, columns numbered by explicit mixed-radix loops.
def _col_index(idx, axes, shape):
  col = 0
  for a in axes:
    col = col * shape[a] + idx[a]
  return col


def _loop_unfold(t, mode):
  shape = t.shape
  rest = [a for a in range(t.ndim) if a != mode]
  out = np.zeros((shape[mode], int(np.prod([shape[a] for a in rest]))), t.dtype)
  for idx in itertools.product(*[range(n) for n in shape]):
    out[idx[mode], _col_index(idx, rest, shape)] = t[idx]
  return out


def _loop_tt(t, k):
  shape = t.shape
  rows, cols = list(range(k)), list(range(k, t.ndim))
  out = np.zeros((int(np.prod(shape[:k])), int(np.prod(shape[k:]))), t.dtype)
  for idx in itertools.product(*[range(n) for n in shape]):
    out[_col_index(idx, rows, shape), _col_index(idx, cols, shape)] = t[idx]
  return out


def _np_nuclear(m):
  return np.linalg.svd(np.asarray(m, np.float64), compute_uv=False).sum()


def test_unfoldings_match_index_loops():
  t = _rng().normal(size=(2, 3, 4, 2)).astype(np.float32)
  for mode in range(t.ndim):
    np.testing.assert_array_equal(np.asarray(tn.unfold(jnp.asarray(t), mode)),
                                  _loop_unfold(t, mode))
  for k in range(1, t.ndim):
    np.testing.assert_array_equal(np.asarray(tn.tt_unfolding(jnp.asarray(t), k)), _loop_tt(t, k))
  np.testing.assert_array_equal(np.asarray(tn.laf_unfolding(jnp.asarray(t))), _loop_unfold(t, 3))
  with pytest.raises(ValueError, match="k="):
    tn.tt_unfolding(jnp.asarray(t), 4)


@pytest.mark.parametrize("shape", [(40, 5), (5, 40), (7, 6), (6, 7), (3, 9, 4)])
def test_nuclear_norm_matches_numpy(shape):
  # (40, 5) takes the QR path, (7, 6) the direct SVD, (3, 9, 4) is a batch.
  m = _rng(1).normal(size=shape).astype(np.float32)
  want = np.linalg.svd(m.astype(np.float64), compute_uv=False).sum(-1)
  np.testing.assert_allclose(np.asarray(tn.nuclear_norm(jnp.asarray(m))), want, rtol=1e-5)


@pytest.mark.parametrize("shape", [(30, 4), (4, 30), (6, 5)])
def test_gradient_matches_closed_form(shape):
  with jax.enable_x64(True):
    w = _rng(2).normal(size=shape)
    grad = np.asarray(jax.grad(tn.nuclear_norm)(jnp.asarray(w)))
    # d||W||_* = W (W^T W)^(-1/2) for full column rank, (W W^T)^(-1/2) W for full row rank.
    if shape[0] >= shape[1]:
      want = w @ np.linalg.inv(scipy.linalg.sqrtm(w.T @ w).real)
    else:
      want = np.linalg.inv(scipy.linalg.sqrtm(w @ w.T).real) @ w
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, want, atol=1e-10)


@pytest.mark.parametrize("kind", tn.KINDS)
def test_gradient_matches_finite_differences(kind):
  with jax.enable_x64(True):
    rng = _rng(3)
    t = jnp.asarray(rng.normal(size=(2, 3, 3, 2)))
    gammas = {"laf": None, "tucker": [1.0, 0.5, 2.0, 1.5], "tt": [0.7, 1.0, 1.3]}[kind]
    f = lambda x: tn.tensor_trace_norm(x, kind, gammas)
    grad = jax.grad(f)(t)
    eps = 1e-6
    for _ in range(4):
      d = jnp.asarray(rng.normal(size=t.shape))
      fd = (f(t + eps * d) - f(t - eps * d)) / (2 * eps)
      np.testing.assert_allclose(float(jnp.vdot(grad, d)), float(fd), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", tn.KINDS)
def test_tensor_trace_norm_values(kind):
  t = _rng(4).normal(size=(2, 2, 3, 4, 2)).astype(np.float32)
  gammas = {"laf": [0.5], "tucker": [1.0, 2.0, 0.5, 1.0, 3.0], "tt": [1.0, 0.25, 2.0, 1.0]}[kind]
  if kind == "laf":
    want = 0.5 * _np_nuclear(_loop_unfold(t, 4))
  elif kind == "tucker":
    want = sum(g * _np_nuclear(_loop_unfold(t, i)) for i, g in enumerate(gammas))
  else:
    want = sum(g * _np_nuclear(_loop_tt(t, k + 1)) for k, g in enumerate(gammas))
  got = tn.tensor_trace_norm(jnp.asarray(t), kind, gammas)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  with pytest.raises(ValueError, match="gammas"):
    tn.tensor_trace_norm(jnp.asarray(t), kind, [1.0] * 7)


def test_identical_task_kernels_give_finite_gradients():
  w = _rng(5).normal(size=(2, 2, 3, 4, 1)).astype(np.float32)
  t = jnp.asarray(np.concatenate([w, w], axis=-1))  # rank-1 task unfolding

  @jax.jit
  def grads(x):
    return {(kind, method): jax.grad(lambda y: tn.tensor_trace_norm(
        y, kind, method=method, rank=2, oversample=1))(x)
            for kind in tn.KINDS for method in tn.METHODS}

  for (kind, method), grad in grads(t).items():
    assert np.all(np.isfinite(np.asarray(grad))), (kind, method)
    if kind == "laf":
      # Rows of the unfolding are both w: U V^T = (1/sqrt 2) [1, 1]^T w^T / ||w||.
      want = w[..., 0] / (np.sqrt(2.0) * np.linalg.norm(w))
      np.testing.assert_allclose(np.asarray(grad[..., 0]), want, atol=1e-6)
      np.testing.assert_allclose(np.asarray(grad[..., 1]), want, atol=1e-6)


def test_zero_matrix_has_zero_gradient():
  grad = jax.grad(tn.nuclear_norm)(jnp.zeros((6, 3)))
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_randomized_matches_exact_on_low_rank():
  rng = _rng(6)
  m = jnp.asarray((rng.normal(size=(120, 4)) @ rng.normal(size=(4, 90))).astype(np.float32))
  kwargs = dict(method="randomized", rank=6, oversample=4, power_iters=1, key=jax.random.key(7))
  np.testing.assert_allclose(float(tn.nuclear_norm(m, **kwargs)), _np_nuclear(m), rtol=1e-4)
  g_rand = jax.grad(lambda x: tn.nuclear_norm(x, **kwargs))(m)
  g_exact = jax.grad(tn.nuclear_norm)(m)
  np.testing.assert_allclose(np.asarray(g_rand), np.asarray(g_exact), atol=1e-4)
  # Full rank: the randomized estimate is the sum of the leading `rank` singular values.
  full = rng.normal(size=(80, 60)).astype(np.float32)
  s = np.linalg.svd(full.astype(np.float64), compute_uv=False)
  got = tn.nuclear_norm(jnp.asarray(full), method="randomized", rank=5, oversample=10,
                        power_iters=4, key=jax.random.key(0))
  np.testing.assert_allclose(float(got), s[:5].sum(), rtol=2e-2)
  with pytest.raises(ValueError, match="method"):
    tn.nuclear_norm(m, method="lanczos")


def test_penalty_sums_layers_and_groups_shapes():
  rng = _rng(8)
  kernels = {"a": rng.normal(size=(2, 2, 2, 3, 2)), "b": rng.normal(size=(2, 2, 2, 3, 2)),
             "c": rng.normal(size=(1, 1, 3, 2, 2))}
  kernels = {k: jnp.asarray(v, jnp.float32) for k, v in kernels.items()}

  @jax.jit
  def compute(ks, strength):
    out = {}
    for kind in ("tucker", "tt"):  # LAF is one of Tucker's unfoldings
      # Layers "a" and "b" share a shape: batched into one factorisation when batch_layers.
      penalty_fn = lambda k: tn.trace_norm_penalty(k, kind=kind, strength=strength,
                                                   batch_layers=True)
      out[kind] = (tn.trace_norm_per_layer(ks, kind), penalty_fn(ks), jax.grad(penalty_fn)(ks),
                   jax.grad(lambda x: tn.tensor_trace_norm(x, kind))(ks["b"]),
                   tn.trace_norm_penalty(ks, kind=kind, strength=strength, batch_layers=False))
    return out

  for kind, (per_layer, penalty, g, g_b, unbatched) in compute(kernels, jnp.float32(0.3)).items():
    assert sorted(per_layer) == ["a", "b", "c"]
    np.testing.assert_allclose(float(per_layer["c"]),
                               float(tn.tensor_trace_norm(kernels["c"], kind)), rtol=1e-5)
    np.testing.assert_allclose(float(penalty), 0.3 * sum(float(v) for v in per_layer.values()),
                               rtol=1e-5)
    np.testing.assert_allclose(float(unbatched), float(penalty), rtol=1e-5)
    # Gradient of the batched (grouped) penalty = the per-layer gradient.
    np.testing.assert_allclose(np.asarray(g["b"]), 0.3 * np.asarray(g_b), atol=1e-5)
  with pytest.raises(ValueError, match="kind"):
    tn.trace_norm_penalty(kernels, kind="cp", strength=1.0)
