"""TGSR as a comparison Method (tgsr_jax.methods.tgsr): predictions and the sweep's best."""
import numpy as np
import pytest

from tgsr_jax import layout
from tgsr_jax import methods
from tgsr_jax import solver
from tgsr_jax import sweep
from tgsr_jax.methods import tgsr


def _problem(seed=0, n_s=24, n_t=18, n_q=9, groups=6, width=4):
  rng = np.random.default_rng(seed)
  d = groups * width
  centres = rng.normal(size=(3, d)) * 1.5
  ys = np.concatenate([np.arange(3), rng.integers(0, 3, n_s - 3)])
  yt = rng.integers(0, 3, n_t)
  xs = np.abs(centres[ys] + rng.normal(size=(n_s, d)))
  xt = np.abs(centres[yt] + 0.5 + rng.normal(size=(n_t, d)))
  xq = np.abs(centres[rng.integers(0, 3, n_q)] + 0.5 + rng.normal(size=(n_q, d)))
  return xs, ys, xt, yt, xq


GRID = {"kappa": (1, 3, 6), "xi": (0.01, 1.0)}


def test_predictions_equal_solver_fit_and_predict():
  xs, ys, xt, _, xq = _problem()
  method = tgsr.make(kappas=GRID["kappa"], xis=GRID["xi"], num_groups=6, chunk_size=4)
  params = methods.grid_points(method.grid)
  out = method.fit_predict(xs, ys, xt, xq, params, num_classes=3, precision="float64")
  assert out.labels.shape == (6, len(xq)) and not out.failed.any() and out.converged.all()
  groups = layout.contiguous_groups(xs.shape[1], 6)
  for g in (0, 3, 5):
    fit = solver.fit(xs, ys, xt, groups=groups, kappa=int(params["kappa"][g]),
                     xi=float(params["xi"][g]), num_classes=3, precision="float64")
    np.testing.assert_array_equal(out.labels[g], np.asarray(solver.predict(fit.coef, xq)))
    np.testing.assert_allclose(out.scores[g], np.asarray(xq @ np.asarray(fit.coef)),
                               rtol=1e-6, atol=1e-8)
    assert out.iterations[g] == fit.iterations


def test_oracle_on_the_target_equals_the_sweeps_best():
  xs, ys, xt, yt, _ = _problem(seed=3)
  method = tgsr.make(kappas=GRID["kappa"], xis=GRID["xi"], num_groups=6)
  out = method.fit_predict(xs, ys, xt, xt, methods.grid_points(method.grid), num_classes=3,
                           precision="float64")
  mf1 = [np.mean([_f1(yt, p, c) for c in range(3)]) for p in out.labels]
  result = sweep.sweep(xs, ys, xt, yt, groups=layout.contiguous_groups(xs.shape[1], 6),
                       kappas=GRID["kappa"], xis=GRID["xi"], num_classes=3, precision="float64")
  np.testing.assert_allclose(mf1, result.mf1, atol=1e-12)
  assert int(np.argmax(mf1)) == result.best("mf1")


def _f1(y, p, c):
  tp = np.sum((y == c) & (p == c))
  denom = np.sum(y == c) + np.sum(p == c)
  return 2 * tp / denom if denom else 0.0


def test_a_source_missing_a_class_never_predicts_it():
  xs, ys, xt, _, xq = _problem(seed=1)
  keep = ys != 1
  out = tgsr.make(kappas=(6,), xis=(1.0,), num_groups=6).fit_predict(
      xs[keep], ys[keep], xt, xq, {"kappa": np.array([6]), "xi": np.array([1.0])}, num_classes=3)
  assert set(np.unique(out.labels)) <= {0, 2} and not out.failed.any()
  one = tgsr.make(kappas=(6,), xis=(1.0,), num_groups=6).fit_predict(
      xs, np.full(len(xs), 2), xt, xq, {"kappa": np.array([6]), "xi": np.array([1.0])},
      num_classes=3)
  assert (one.labels == 2).all()


def test_registry_and_bad_params_name_the_field():
  method = methods.get("tgsr")
  assert method.name == "TGSR" and len(method.grid["kappa"]) == 85
  assert len(method.grid["xi"]) == 271 and method.iterative
  xs, ys, xt, _, xq = _problem()
  with pytest.raises(ValueError, match="'kappa' must lie in"):
    tgsr.make(num_groups=6).fit_predict(xs, ys, xt, xq, {"kappa": np.array([7]),
                                                         "xi": np.array([1.0])}, num_classes=3)
  with pytest.raises(ValueError, match="need 'kappa' and 'xi'"):
    tgsr.fit_predict(xs, ys, xt, xq, {"kappa": np.array([1])}, num_classes=3, num_groups=6)
