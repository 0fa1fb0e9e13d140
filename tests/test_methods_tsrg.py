"""TSRG (tgsr_jax.methods.tsrg): the regenerator's ALM and the linear SVM on regenerated queries."""
import numpy as np
import pytest

from benchmarks import regeneration_speed
from tgsr_jax import methods
from tgsr_jax import reference
from tgsr_jax.methods import _regenerate
from tgsr_jax.methods import svm
from tgsr_jax.methods import tsrg


def small_problem(seed=0, n_s=15, n_t=12, d=18):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 1.2
  ys = np.concatenate([np.array([2, 0, 1]), rng.integers(0, 3, n_s - 3)])
  xs = np.abs(centres[ys] + rng.normal(size=(n_s, d)))
  xt = np.abs(centres[rng.integers(0, 3, n_t)] + 0.8 + rng.normal(size=(n_t, d)))
  xq = np.abs(centres[rng.integers(0, 3, 9)] + 0.8 + rng.normal(size=(9, d)))
  return xs, ys, xt, xq


def test_primal_machines_equal_libsvm_decision_values():
  xs, ys, _, xq = small_problem(seed=1)
  order, w, b = tsrg.linear_ovo_machines(xs, ys)
  _, decisions = svm.linear_svm(xs, ys, xq, num_classes=3)
  np.testing.assert_array_equal(order, [2, 0, 1])
  np.testing.assert_allclose(xq @ w + b, decisions, rtol=1e-9, atol=1e-9)


def test_fit_predict_equals_a_numpy_alm_and_libsvm_on_regenerated_queries():
  xs, ys, xt, xq = small_problem()
  params = {"lambda": np.array([0.01, 10.0, 10.0]), "mu": np.array([0.02, 0.02, 2.0])}
  out = tsrg.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  assert out.converged.all() and not out.failed.any()
  x = np.concatenate([xs, xt])
  agree = 0
  for i in range(3):
    p, iterations = reference.regeneration_alm(xs, xt, xs, params["lambda"][i], params["mu"][i])
    assert out.iterations[i] == iterations
    regenerated = (p.T @ (x @ xq.T)).T                   # (Q, d): rows are P^T K_q columns
    labels, decisions = svm.linear_svm(xs, ys, regenerated, num_classes=3)
    np.testing.assert_array_equal(out.labels[i], labels)
    agree += np.mean(labels == svm.linear_svm(xs, ys, xq, num_classes=3)[0])
  # Regeneration changes the predictions somewhere (the test is not the plain SVM's).
  assert agree < 3


# d < n applies A(kappa) through its factors, d > n forms it per lane (TSRG's real sizes).
@pytest.mark.parametrize("d", [18, 40])
def test_regenerator_equals_the_numpy_alm(d):
  xs, ys, xt, _ = small_problem(seed=2, d=d)
  lam, mu = np.array([1.0, 1.0]), np.array([0.005, 0.5])
  out = _regenerate.solve_grid(_regenerate.Kernels(xs, xt, xt), xs, np.eye(xs.shape[1]), lam, mu)
  for i in range(2):
    p, iterations = reference.regeneration_alm(xs, xt, xs, lam[i], mu[i])
    assert out.iterations[i] == iterations
    # The ALM fixes P to about its tolerance (1e-8); at mu = 0.005 and d = 40 rounding moves a
    # few entries by up to 3.7e-8 (as much with the earlier chunked solver).
    np.testing.assert_allclose(out.pr[i], p, rtol=0, atol=5e-8)


def test_column_blocks_stop_where_the_whole_matrix_stops():
  # The blocked path (TSRG's on a CPU) runs each block of P's columns on its own and must stop
  # every block at the iteration where max |P - Q| over all columns first falls below tol. Scaled
  # columns make the blocks' own stopping iterations differ, and the whole matrix stops later
  # than any block on its own (a block's error dips below tol and rises again), so a block
  # must be taken past its own first stop: the passes over blocks do that.
  xs, ys, xt, _ = small_problem(seed=5, d=40)
  xs = xs * np.repeat([1.0, 3.0, 0.3, 1.5], 10)[None, :]
  xt = xt * np.repeat([1.0, 3.0, 0.3, 1.5], 10)[None, :]
  lam, mu = np.array([1.0, 10.0]), np.array([0.01, 0.4])
  kernels = _regenerate.Kernels(xs, xt, xt)
  own = [reference.regeneration_alm(xs, xt, xs[:, c:c + 10], lam[0], mu[0])[1]
         for c in range(0, 40, 10)]
  assert len(set(own)) > 1                               # blocks stop at different iterations
  pool = _regenerate.solve_grid(kernels, xs, np.eye(40), lam, mu,
                                settings=_regenerate.Settings(column_block=0))
  for block in (10, 12):                                 # 4 blocks of 10; 4 of 16 with padding
    blocked = _regenerate.solve_grid(kernels, xs, np.eye(40), lam, mu,
                                     settings=_regenerate.Settings(column_block=block))
    np.testing.assert_array_equal(blocked.iterations, pool.iterations)
    assert blocked.converged.all()
    np.testing.assert_allclose(blocked.pr, pool.pr, rtol=0, atol=1e-9)
    for i in range(2):
      p, iterations = reference.regeneration_alm(xs, xt, xs, lam[i], mu[i])
      assert blocked.iterations[i] == iterations
      np.testing.assert_allclose(blocked.pr[i], p, rtol=0, atol=2e-7)
  assert pool.iterations[0] > max(own)
  # The automatic choice: blocked on a CPU when P is wider than tall, the lane pool otherwise.
  assert _regenerate.column_blocks(142, 15045, 8, None, "cpu")[0] > 1
  assert _regenerate.column_blocks(142, 3, 8, None, "cpu") == (0, 0)
  assert _regenerate.column_blocks(142, 15045, 8, None, "gpu") == (0, 0)
  assert _regenerate.column_blocks(142, 15045, 8, 0, "cpu") == (0, 0)
  blocks, width = _regenerate.column_blocks(142, 15045, 4, 4096, "gpu")
  assert blocks == 4 and width % 8 == 0 and blocks * width >= 15045


def test_registry_failed_points_and_bad_inputs():
  method = methods.get("TSRG")
  assert method is tsrg.METHOD and len(methods.grid_points(method.grid)["mu"]) == 259
  xs, ys, xt, xq = small_problem(seed=3)
  # kappa0 = 0 divides by zero in the first iteration: that point fails, it does not raise.
  out = tsrg.fit_predict(xs, ys, xt, xq, {"lambda": np.array([1.0]), "mu": np.array([0.1])},
                         num_classes=3, settings=_regenerate.Settings(kappa0=0.0))
  assert out.failed[0] and not out.converged[0] and (out.labels[0] == -1).all()
  xs_bad = xs.copy()
  xs_bad[0, 0] = np.inf
  with pytest.raises(ValueError, match="xs holds non-finite"):
    tsrg.fit_predict(xs_bad, ys, xt, xq, {"lambda": np.array([1.0]), "mu": np.array([0.1])},
                     num_classes=3)
  with pytest.raises(ValueError, match="xq has 5 features"):
    tsrg.fit_predict(xs, ys, xt, xq[:, :5], {"lambda": np.array([1.0]), "mu": np.array([0.1])},
                     num_classes=3)


def test_speed_benchmark_runs_on_a_small_synthetic_problem(capsys):
  record = regeneration_speed.main(["--features", "30", "--numpy_iterations", "2",
                                    "--jax_iterations", "2", "--peak_size", "64", "--repeats",
                                    "1", "--full", "--full_points", "3",
                                    "--full_precision", "float64"])
  assert record["numpy"] > 0 and record["float64"] > 0 and record["float32"] > 0
  assert record["speedup_float32"] == record["numpy"] / record["float32"]
  assert record["peak_float64"] > 0 and record["bandwidth_float32"] > 0
  out = capsys.readouterr().out
  assert "projected whole grid (3 points" in out and "whole grid (3 points), float64" in out


def test_one_labelling_per_grid_point_equals_one_call_per_labelling():
  # Reverse validation's backward fits: each grid point on its own pseudo-labels. The
  # regeneration is shared; each point is read out by its own labelling's machines.
  xs, ys, xt, xq = small_problem(seed=4)
  params = {"lambda": np.array([1.0, 1.0, 10.0, 10.0]), "mu": np.array([0.02, 0.5, 0.02, 0.5])}
  other = np.roll(ys, 3)
  one_class = np.zeros_like(ys)
  ys_grid = np.stack([ys, other, other, one_class])
  out = tsrg.fit_predict(xs, ys_grid, xt, xq, params, num_classes=3)
  for g in range(4):
    single = tsrg.fit_predict(xs, ys_grid[g], xt, xq, {k: v[g:g + 1] for k, v in params.items()},
                              num_classes=3)
    np.testing.assert_array_equal(out.labels[g], single.labels[0])
    assert out.iterations[g] == single.iterations[0]
  assert (out.labels[3] == 0).all() and len({tuple(r) for r in out.labels[:3]}) > 1
  with pytest.raises(ValueError, match="one row per grid point"):
    tsrg.fit_predict(xs, ys_grid[:3], xt, xq, params, num_classes=3)
