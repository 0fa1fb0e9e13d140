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


@pytest.mark.parametrize("method", ["exact", "gram", "newton_schulz"])
@pytest.mark.parametrize("shape", [(40, 5), (5, 40), (7, 6), (6, 7), (3, 9, 4)])
def test_nuclear_norm_matches_numpy(shape, method):
  # exact: (40, 5) takes the QR path, (7, 6) the direct SVD; (3, 9, 4) is a batch.
  m = _rng(1).normal(size=shape).astype(np.float32)
  want = np.linalg.svd(m.astype(np.float64), compute_uv=False).sum(-1)
  if method == "newton_schulz":  # the smoothed value (the square (7, 6) has s_min ~ 0.1)
    want = np.array([_smoothed_reference(x, tn.NS_SMOOTHING)[0]
                     for x in m.reshape((-1,) + shape[-2:])]).reshape(shape[:-2])
  np.testing.assert_allclose(np.asarray(tn.nuclear_norm(jnp.asarray(m), method=method)), want,
                             rtol=1e-5)


# float64 Newton-Schulz with a 1e-14 shift converges to the unsmoothed norm and its gradient.
_NS64 = dict(method="newton_schulz", smoothing=1e-14, iterations=60)
_METHOD_KWARGS = {"exact": {}, "gram": {"method": "gram"}, "newton_schulz": _NS64}


@pytest.mark.parametrize("method", ["exact", "gram", "newton_schulz"])
@pytest.mark.parametrize("shape", [(30, 4), (4, 30), (6, 5)])
def test_gradient_matches_closed_form(shape, method):
  with jax.enable_x64(True):
    w = _rng(2).normal(size=shape)
    kwargs = _METHOD_KWARGS[method]
    grad = np.asarray(jax.grad(lambda x: tn.nuclear_norm(x, **kwargs))(jnp.asarray(w)))
    # d||W||_* = W (W^T W)^(-1/2) for full column rank, (W W^T)^(-1/2) W for full row rank.
    if shape[0] >= shape[1]:
      want = w @ np.linalg.inv(scipy.linalg.sqrtm(w.T @ w).real)
    else:
      want = np.linalg.inv(scipy.linalg.sqrtm(w @ w.T).real) @ w
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, want, atol=1e-10)


@pytest.mark.parametrize("method", ["exact", "gram", "newton_schulz"])
@pytest.mark.parametrize("kind", tn.KINDS)
def test_gradient_matches_finite_differences(kind, method):
  with jax.enable_x64(True):
    rng = _rng(3)
    t = jnp.asarray(rng.normal(size=(2, 3, 3, 2)))
    gammas = {"laf": None, "tucker": [1.0, 0.5, 2.0, 1.5], "tt": [0.7, 1.0, 1.3]}[kind]
    kwargs = _METHOD_KWARGS[method]
    f = jax.jit(lambda x: tn.tensor_trace_norm(x, kind, gammas, **kwargs))
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
      # (Newton-Schulz: the float32 rounding of the rank-1 Gram matrix, ~1e-7 of its norm,
      # gets a smoothed weight of ~1e-4.)
      want = w[..., 0] / (np.sqrt(2.0) * np.linalg.norm(w))
      atol = 1e-4 if method == "newton_schulz" else 1e-6
      np.testing.assert_allclose(np.asarray(grad[..., 0]), want, atol=atol)
      np.testing.assert_allclose(np.asarray(grad[..., 1]), want, atol=atol)


@pytest.mark.parametrize("method", tn.METHODS)
def test_zero_matrix_has_zero_gradient(method):
  value, grad = jax.value_and_grad(lambda x: tn.nuclear_norm(x, method=method, rank=2))(
      jnp.zeros((6, 3)))
  assert float(value) == 0.0
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def _with_spectrum(rng, n, p, s):
  u = np.linalg.qr(rng.normal(size=(n, len(s))))[0]
  v = np.linalg.qr(rng.normal(size=(p, len(s))))[0]
  return (u * s) @ v.T


def _reference_uv(m):
  """float64 U V^T with the float32 mask (singular values above 1e3 eps32 s_max)."""
  u, s, vt = np.linalg.svd(m, full_matrices=False)
  keep = s > 1e3 * np.finfo(np.float32).eps * s[0]
  return s.sum(), u[:, keep] @ vt[keep]


@pytest.mark.parametrize("case", ["conditioned", "graded", "low_rank", "tall_graded"])
def test_gram_matches_float64_svd_in_float32(case):
  # 'conditioned' (kappa 100, above the 10 sqrt(eps) threshold) runs the Gram path; 'graded'
  # (singular values down to 1e-6 s_max, where squaring mixes eigenvectors) falls back to the
  # exact factorisation; 'low_rank' has exact zeros, which are masked and keep the Gram path.
  rng = _rng(11)
  m, fast = {
      "conditioned": (_with_spectrum(rng, 48, 300, np.logspace(0, -2, 48)), True),
      "graded": (_with_spectrum(rng, 48, 300, np.logspace(0, -6, 48)), False),
      "low_rank": (_with_spectrum(rng, 48, 300, np.r_[np.linspace(1, 0.5, 6), np.zeros(42)]),
                   True),
      "tall_graded": (_with_spectrum(rng, 300, 40, np.logspace(0, -5, 40)), False),
  }[case]
  m32 = jnp.asarray(m, jnp.float32)
  s32 = jnp.linalg.svd(m32, compute_uv=False)
  assert bool(tn._gram_unreliable(s32)) == (not fast)  # pylint: disable=protected-access
  want_value, want_grad = _reference_uv(m)
  value, grad = jax.value_and_grad(lambda x: tn.nuclear_norm(x, method="gram"))(m32)
  np.testing.assert_allclose(float(value), want_value, rtol=2e-6)
  # The exact float32 factorisation is itself accurate to ~1e-4 here (singular values near the
  # mask threshold); 'gram' must be as good.
  exact_grad = jax.grad(tn.nuclear_norm)(m32)
  tol = max(2e-5, 2 * float(np.abs(np.asarray(exact_grad) - want_grad).max()))
  np.testing.assert_allclose(np.asarray(grad), want_grad, atol=tol)


def _smoothed_reference(m, smoothing):
  """float64 value sum s^2 / sqrt(s^2 + eps) and gradient sum s / sqrt(s^2 + eps) u v^T, with
  eps = smoothing ||G^2||_F^(1/2), G the smaller Gram matrix (the 'newton_schulz' definition)."""
  m = np.asarray(m, np.float64)
  a = m if m.shape[0] <= m.shape[1] else m.T
  gram = a @ a.T
  eps = smoothing * np.sqrt(np.linalg.norm(gram @ gram))
  u, s, vt = np.linalg.svd(m, full_matrices=False)
  return (s**2 / np.sqrt(s**2 + eps)).sum(), (u * (s / np.sqrt(s**2 + eps))) @ vt


def _ns_converged(m, **kwargs):
  wide = m.shape[-2] <= m.shape[-1]
  a = m if wide else jnp.swapaxes(m, -1, -2)
  kwargs = {"iterations": tn.NS_ITERATIONS, "smoothing": tn.NS_SMOOTHING, **kwargs}
  return bool(tn._newton_schulz(a, **kwargs)[3])  # pylint: disable=protected-access


@pytest.mark.parametrize("case", ["conditioned", "graded", "low_rank", "rank_one", "tall"])
def test_newton_schulz_matches_float64_smoothed_norm(case):
  # In float32 at the default smoothing every case converges in the default 24 steps (no
  # fallback), and value and gradient are the smoothed ones. What is left is the rounding of the
  # float32 Gram matrix (~1e-7 s_max^2) against the shift (1e-6 s_max^2): nothing for a
  # well-conditioned matrix, up to a few per cent of U V^T's scale along the directions whose
  # singular values lie near sqrt(eps), where the smoothed weight s / sqrt(s^2 + eps) is steep.
  rng = _rng(12)
  m, value_rtol, grad_atol = {
      "conditioned": (rng.normal(size=(64, 600)), 1e-6, 1e-5),
      "graded": (_with_spectrum(rng, 64, 600, np.logspace(0, -6, 64)), 1e-4, 3e-2),
      "low_rank": (_with_spectrum(rng, 64, 600, np.r_[np.linspace(1, 0.5, 6), np.zeros(58)]),
                   2e-4, 2e-3),
      "rank_one": (_with_spectrum(rng, 2, 600, np.array([3.0, 0.0])), 1e-3, 1e-3),
      "tall": (_with_spectrum(rng, 500, 40, np.logspace(0, -3, 40)), 1e-4, 1e-2),
  }[case]
  m32 = jnp.asarray(m, jnp.float32)
  assert _ns_converged(m32)
  value, grad = jax.value_and_grad(lambda x: tn.nuclear_norm(x, method="newton_schulz"))(m32)
  want_value, want_grad = _smoothed_reference(np.asarray(m32), tn.NS_SMOOTHING)
  scale = np.abs(want_grad).max()
  np.testing.assert_allclose(float(value), want_value, rtol=value_rtol)
  np.testing.assert_allclose(np.asarray(grad), want_grad, atol=grad_atol * scale)
  # Against the unsmoothed norm: the value differs by about eps / (2 s) per singular value.
  _, s, _ = np.linalg.svd(np.asarray(m32, np.float64), full_matrices=False)
  assert abs(s.sum() - float(value)) <= 1e-3 * s.sum()
  exact_grad = np.asarray(jax.grad(tn.nuclear_norm)(m32))
  if case == "conditioned":  # kappa ~ 2: the exact U V^T to float precision
    np.testing.assert_allclose(np.asarray(grad), exact_grad, atol=1e-5)
  if case in ("graded", "tall"):  # it is the smoothed gradient, not the hard-masked one
    smoothing_effect = np.abs(exact_grad - want_grad).max()
    assert np.abs(np.asarray(grad) - want_grad).max() < 0.1 * smoothing_effect


def test_newton_schulz_falls_back_to_exact_when_not_converged():
  rng = _rng(13)
  m = jnp.asarray(_with_spectrum(rng, 20, 80, np.logspace(0, -3, 20)), jnp.float32)
  kwargs = dict(method="newton_schulz", iterations=3)  # far too few steps for 1e-6
  assert not _ns_converged(m, iterations=3)
  value, grad = jax.value_and_grad(lambda x: tn.nuclear_norm(x, **kwargs))(m)
  want_value, want_grad = jax.value_and_grad(tn.nuclear_norm)(m)
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), atol=1e-6)
  # A batch falls back as a whole and still matches the exact norms of its members.
  batch = jnp.stack([m, 2.0 * m])
  np.testing.assert_allclose(np.asarray(tn.nuclear_norm(batch, **kwargs)),
                             np.asarray(tn.nuclear_norm(batch)), rtol=1e-6)
  with pytest.raises(ValueError, match="iterations"):
    tn.nuclear_norm(m, method="newton_schulz", iterations=0)
  with pytest.raises(ValueError, match="smoothing"):
    tn.nuclear_norm(m, method="newton_schulz", smoothing=0.0)


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


@pytest.mark.parametrize("method", ["exact", "gram", "newton_schulz"])
def test_penalty_sums_layers_and_groups_shapes(method):
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
                                                   method=method, batch_layers=True)
      out[kind] = (tn.trace_norm_per_layer(ks, kind, method=method), penalty_fn(ks),
                   jax.grad(penalty_fn)(ks),
                   jax.grad(lambda x: tn.tensor_trace_norm(x, kind, method=method))(ks["b"]),
                   tn.trace_norm_penalty(ks, kind=kind, strength=strength, method=method,
                                         batch_layers=False))
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
