"""TGSR solver against the NumPy port of the published algorithm and direct formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from tgsr_jax import layout
from tgsr_jax import metrics
from tgsr_jax import reference
from tgsr_jax import solver


def _problem(seed=0, ns=24, nt=18, groups=6, size=10, classes=3):
  rng = np.random.default_rng(seed)
  xs = rng.random((ns, groups * size))
  ys = np.arange(ns) % classes
  # Class signal in groups 1 and 4, a shift between source and target.
  xs[:, size:2 * size] += 0.8 * ys[:, None]
  xs[:, 4 * size:5 * size] -= 0.5 * (ys[:, None] == 2)
  yt = rng.integers(0, classes, nt)
  xt = rng.random((nt, groups * size)) + 0.3
  xt[:, size:2 * size] += 0.8 * yt[:, None]
  xt[:, 4 * size:5 * size] -= 0.5 * (yt[:, None] == 2)
  return xs, ys, xt, yt, layout.contiguous_groups(groups * size, groups)


@pytest.mark.parametrize("kappa,xi", [(1, 0.5), (2, 10.0), (4, 0.0), (6, 3.0)])
def test_fit_matches_reference_port(kappa, xi):
  xs, ys, xt, _, groups = _problem()
  ref = reference.fit_reference(xs, ys, xt, 10, kappa, xi, num_classes=3)
  got = solver.fit(xs, ys, xt, groups=groups, kappa=kappa, xi=xi, num_classes=3)
  assert got.converged and ref.converged
  assert got.iterations == ref.iterations
  np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-6, atol=1e-7)
  assert got.selected.sum() == kappa
  if kappa == 6:
    assert got.iterations == 1  # kappa = K: C = D after the first step


def test_d_step_equals_direct_inverse():
  rng = np.random.default_rng(1)
  xs, ys, xt, _, groups = _problem(seed=1)
  xi, mu = 2.5, 0.37
  c = rng.standard_normal((xs.shape[1], 3))
  p = rng.standard_normal((xs.shape[1], 3))
  with jax.enable_x64(True):
    problem = solver.prepare_problem(jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(xt),
                                     jnp.asarray(groups), num_classes=3)
    w, s = solver.xi_spectrum(problem, jnp.asarray(xi))
    d = np.asarray(solver.d_step(problem, w, s, jnp.asarray(c), jnp.asarray(p), jnp.asarray(mu)))
  x_tilde = np.concatenate([xs.T, np.sqrt(xi) * (xs.mean(0) - xt.mean(0))[:, None]], axis=1)
  l_tilde = np.concatenate([np.eye(3)[ys].T, np.zeros((3, 1))], axis=1)
  kd = xs.shape[1]
  expected = np.linalg.solve(mu * np.eye(kd) + 2 * x_tilde @ x_tilde.T,
                             2 * x_tilde @ l_tilde.T + p + mu * c)
  np.testing.assert_allclose(d, expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kappa", [1, 3, 5])
def test_group_shrink_against_numpy(kappa):
  rng = np.random.default_rng(kappa)
  v = rng.standard_normal((5 * 4, 3))
  groups = layout.contiguous_groups(20, 5)
  with jax.enable_x64(True):
    c, scale = solver.group_shrink(jnp.asarray(v), jnp.asarray(kappa), jnp.asarray(groups),
                                   solver.GroupLayout(5, 4))
  norms = np.linalg.norm(v.reshape(5, 4, 3), axis=(1, 2))
  threshold = np.sort(norms)[::-1][kappa] if kappa < 5 else 0.0
  expected = v.reshape(5, 4, 3) * np.where(norms > threshold, 1 - threshold / norms, 0)[:, None, None]
  np.testing.assert_allclose(np.asarray(c), expected.reshape(20, 3), atol=1e-12)
  assert int(np.sum(np.asarray(scale) > 0)) == kappa


def test_arbitrary_groups_equal_permuted_contiguous_groups():
  xs, ys, xt, _, _ = _problem(seed=3)
  rng = np.random.default_rng(3)
  # Unequal, interleaved groups: the solver must sort them and use the segment path.
  groups = rng.integers(0, 7, xs.shape[1])
  groups[:7] = np.arange(7)
  got = solver.fit(xs, ys, xt, groups=groups, kappa=3, xi=1.0, num_classes=3)
  order = np.argsort(groups, kind="stable")
  ref = reference.fit_reference(xs[:, order], ys, xt[:, order], 1, 3, 1.0, num_classes=3,
                                group_ids=groups[order])
  np.testing.assert_allclose(got.coef[order], ref.coef, atol=1e-9)
  energy = np.array([np.sum(got.coef[groups == g] ** 2) for g in range(7)])
  assert got.selected.sum() == 3 and np.array_equal(energy > 0, got.selected)
  # Equal-size groups given in a scrambled column order give the permuted reference solution.
  perm = rng.permutation(xs.shape[1])
  contiguous = layout.contiguous_groups(xs.shape[1], 6)
  ref = solver.fit(xs, ys, xt, groups=contiguous, kappa=2, xi=1.0, num_classes=3)
  scrambled = solver.fit(xs[:, perm], ys, xt[:, perm], groups=contiguous[perm], kappa=2, xi=1.0,
                         num_classes=3)
  np.testing.assert_allclose(scrambled.coef, ref.coef[perm], rtol=1e-7, atol=1e-9)


def test_float32_close_to_float64():
  xs, ys, xt, _, groups = _problem(seed=4)
  f64 = solver.fit(xs, ys, xt, groups=groups, kappa=2, xi=1.0, num_classes=3, precision="float64")
  f32 = solver.fit(xs, ys, xt, groups=groups, kappa=2, xi=1.0, num_classes=3, precision="float32")
  assert f32.converged
  assert np.array_equal(f32.selected, f64.selected)
  np.testing.assert_allclose(f32.coef, f64.coef, atol=2e-3 * np.abs(f64.coef).max())
  assert np.array_equal(np.asarray(solver.predict(f32.coef, xt)),
                        np.asarray(solver.predict(f64.coef, xt)))


def _simplex_bisection(v):
  lo, hi = v.min() - 1.0, v.max()
  for _ in range(200):
    theta = 0.5 * (lo + hi)
    if np.maximum(v - theta, 0).sum() > 1:
      lo = theta
    else:
      hi = theta
  return np.maximum(v - 0.5 * (lo + hi), 0)


def test_project_simplex_against_bisection_and_argmax():
  rng = np.random.default_rng(5)
  v = rng.standard_normal((50, 4)) * 2
  with jax.enable_x64(True):
    proj = np.asarray(solver.project_simplex(jnp.asarray(v)))
  expected = np.stack([_simplex_bisection(row) for row in v])
  np.testing.assert_allclose(proj, expected, atol=1e-9)
  np.testing.assert_allclose(proj.sum(1), 1.0, atol=1e-12)
  assert np.all(proj >= 0)
  coef = rng.standard_normal((6, 4))
  x = rng.standard_normal((30, 6))
  vectors = np.asarray(solver.predict_label_vectors(coef, x))
  np.testing.assert_array_equal(np.argmax(vectors, 1), np.asarray(solver.predict(coef, x)))


def test_scores_against_sklearn():
  rng = np.random.default_rng(6)
  for trial in range(5):
    y = rng.integers(0, 3, 40)
    p = rng.integers(0, 3 if trial else 2, 40)  # trial 0: class 2 never predicted
    got = metrics.classification_scores(jnp.asarray(y), jnp.asarray(p), 3)
    assert float(got["acc"]) == pytest.approx(skm.accuracy_score(y, p))
    assert float(got["mf1"]) == pytest.approx(
        skm.f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0))
    assert float(got["uar"]) == pytest.approx(skm.balanced_accuracy_score(y, p))
    np.testing.assert_array_equal(np.asarray(got["confusion"]),
                                  skm.confusion_matrix(y, p, labels=[0, 1, 2]))


def test_bad_inputs_raise_clear_errors():
  xs, ys, xt, _, groups = _problem()
  with pytest.raises(ValueError, match="different widths"):
    solver.fit(xs, ys, xt[:, :-1], groups=groups, kappa=1, xi=1.0)
  with pytest.raises(ValueError, match="no samples"):
    solver.fit(xs, ys, xt[:0], groups=groups, kappa=1, xi=1.0)
  with pytest.raises(ValueError, match="no sample of class"):
    solver.fit(xs, np.where(ys == 2, 0, ys), xt, groups=groups, kappa=1, xi=1.0, num_classes=3)
  bad = xs.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="xs contains NaN"):
    solver.fit(bad, ys, xt, groups=groups, kappa=1, xi=1.0)
  with pytest.raises(ValueError, match="kappa"):
    solver.fit(xs, ys, xt, groups=groups, kappa=7, xi=1.0)
  with pytest.raises(ValueError, match="one id per feature"):
    solver.fit(xs, ys, xt, groups=groups[:-1], kappa=1, xi=1.0)
  with pytest.raises(ValueError, match="precision"):
    solver.fit(xs, ys, xt, groups=groups, kappa=1, xi=1.0, precision="float16")
