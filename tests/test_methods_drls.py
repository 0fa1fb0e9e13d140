"""DRLS and the shared domain-regeneration ALM (tgsr_jax.methods.drls, methods._regenerate)."""
import jax
import numpy as np
import pytest

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import metrics
from tgsr_jax import reference
from tgsr_jax.methods import _regenerate
from tgsr_jax.methods import drls


def small_problem(seed=0, n_s=14, n_t=11, d=24, shift=0.7):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 1.5
  ys = np.concatenate([np.arange(3), rng.integers(0, 3, n_s - 3)])
  yt = rng.integers(0, 3, n_t)
  xs = np.abs(centres[ys] + rng.normal(size=(n_s, d)))
  xt = np.abs(centres[yt] + shift + rng.normal(size=(n_t, d)))
  return xs, ys, xt, yt


def test_batched_grid_equals_a_numpy_loop_of_the_alm():
  xs, ys, xt, _ = small_problem()
  y = np.eye(3)[ys]
  lam = np.array([0.01, 0.01, 0.01, 10.0, 10.0, 10.0])
  mu = np.array([0.001, 0.3, 5.0, 0.001, 0.3, 5.0])
  kernels = _regenerate.Kernels(xs, xt, xt)
  # A budget of two lanes per device: the six points are queued over the two (forced) host
  # devices, three each, so a lane that stops restarts on a queued point (of either lambda).
  budget = 2 * 8 * kernels.k_s.shape[0] * 3 * 8
  out = _regenerate.solve_grid(kernels, y, np.eye(3), lam, mu, memory_budget=budget)
  assert out.converged.all() and not out.failed.any()
  for i in range(lam.size):
    p, iterations = reference.regeneration_alm(xs, xt, y, lam[i], mu[i])
    assert out.iterations[i] == iterations
    # The ALM fixes P to about its stopping tolerance (1e-8): at the smallest mu rounding
    # differences between the two loops move P by up to ~7e-9, elsewhere by < 1e-11.
    np.testing.assert_allclose(out.pr[i], p, rtol=0, atol=2e-8)
  assert len(set(out.iterations.tolist())) > 1


def test_fit_predict_predicts_the_argmax_of_the_regenerated_query_kernel():
  xs, ys, xt, _ = small_problem(seed=1)
  xq = np.abs(np.random.default_rng(2).normal(size=(7, xs.shape[1])))
  params = {"lambda": np.array([1.0, 100.0]), "mu": np.array([0.05, 0.05])}
  out = drls.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  x = np.concatenate([xs, xt])
  for i in range(2):
    p, iterations = reference.regeneration_alm(xs, xt, np.eye(3)[ys], params["lambda"][i],
                                               params["mu"][i])
    scores = (p.T @ (x @ xq.T)).T                      # (Q, C) = (P^T K_q)^T
    np.testing.assert_allclose(out.scores[i], scores, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(out.labels[i], np.argmax(scores, axis=1))
    assert out.iterations[i] == iterations
  np.testing.assert_array_equal(out.params["lambda"], params["lambda"])


def test_float32_agrees_with_float64():
  xs, ys, xt, _ = small_problem(seed=3)
  params = methods.grid_points({"lambda": (0.1, 10.0), "mu": (0.01, 1.0)})
  ref = drls.fit_predict(xs, ys, xt, xt, params, num_classes=3)
  out = drls.fit_predict(xs, ys, xt, xt, params, num_classes=3, precision="float32")
  assert out.converged.all()
  # float32 rounding is amplified like the null eigenvalues are (see _regenerate): scores agree
  # to about 2% of their scale, the labels almost everywhere.
  np.testing.assert_allclose(out.scores, ref.scores, atol=0.05 * np.abs(ref.scores).max())
  assert (out.labels == ref.labels).mean() > 0.9


def test_registry_and_grid():
  method = methods.get("drls")
  assert method is drls.METHOD and method.iterative
  points = methods.grid_points(method.grid)
  assert points["lambda"].size == 259
  assert np.unique(points["mu"]).size == 37
  np.testing.assert_allclose(np.unique(points["mu"])[[0, 8, 9, 18, 27, 28, 36]],
                             [0.001, 0.009, 0.01, 0.1, 1.0, 2.0, 10.0])


def test_iteration_cap_reports_not_converged_and_bad_params_name_the_field():
  xs, ys, xt, _ = small_problem(seed=4)
  settings = _regenerate.Settings(max_iterations=5)
  out = drls.fit_predict(xs, ys, xt, xt, {"lambda": np.array([1.0]), "mu": np.array([0.1])},
                         num_classes=3, settings=settings)
  assert out.iterations[0] == 5 and not out.converged[0] and not out.failed[0]
  with pytest.raises(ValueError, match="'mu'"):
    drls.fit_predict(xs, ys, xt, xt, {"lambda": np.array([1.0])}, num_classes=3)


def test_float64_without_x64_is_enabled_locally():
  # fit_predict enables 64-bit JAX itself; the global flag is left as it was.
  before = jax.config.jax_enable_x64
  xs, ys, xt, _ = small_problem(seed=5)
  drls.fit_predict(xs, ys, xt, xt, {"lambda": np.array([1.0]), "mu": np.array([0.1])},
                   num_classes=3)
  assert jax.config.jax_enable_x64 == before


def test_published_drls_cell_c_to_v(shared):
  """DRLS C->V: best M-F1 0.5757 / ACC 57.75 at lambda = 10, mu = 0.6 (TGSR paper, METHODS.md)."""
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path("CASME2"), "CASME2")
  tgt = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
  out = drls.fit_predict(src.features, src.labels - 1, tgt.features, tgt.features,
                         methods.grid_points(drls.METHOD.grid), num_classes=3)
  assert out.converged.all() and not out.failed.any()
  conf = np.stack([np.asarray(metrics.confusion_matrix(tgt.labels - 1, l, 3)) for l in out.labels])
  scores = metrics.scores_from_confusion(conf)
  best = int(np.argmax(scores["mf1"]))
  assert round(float(scores["mf1"][best]), 4) == 0.5757
  assert round(100 * float(scores["acc"][best]), 2) == 57.75
  assert out.params["lambda"][best] == 10.0 and np.isclose(out.params["mu"][best], 0.6)


def test_one_labelling_per_grid_point_equals_one_call_per_labelling():
  xs, ys, xt, _ = small_problem(seed=6)
  params = {"lambda": np.array([0.1, 0.1, 10.0]), "mu": np.array([0.05, 0.05, 0.5])}
  ys_grid = np.stack([ys, np.roll(ys, 2), ys])
  out = drls.fit_predict(xs, ys_grid, xt, xt, params, num_classes=3)
  for g in range(3):
    single = drls.fit_predict(xs, ys_grid[g], xt, xt, {k: v[g:g + 1] for k, v in params.items()},
                              num_classes=3)
    np.testing.assert_allclose(out.scores[g], single.scores[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(out.labels[g], single.labels[0])
  assert not np.allclose(out.scores[0], out.scores[1])       # the labellings matter
