"""STM (tgsr_jax.methods.stm): the batched grid against a plain loop with SciPy's QP solver."""
import numpy as np
import scipy.optimize
from sklearn import svm as sk_svm

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import metrics
from tgsr_jax.methods import stm
from tgsr_jax.methods import svm


def _problem(seed=0, ns=21, nt=15, nq=6, d=30):
  # d > n: the linear kernel is positive definite, so every weight QP has one solution.
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 1.5
  ys = np.concatenate([[2, 0, 1], rng.integers(0, 3, ns - 3)])
  xs = centres[ys] + rng.normal(size=(ns, d))
  xs[:5] += 2.0                                           # a few source rows unlike the target
  yt = rng.integers(0, 3, nt + nq)
  xt = centres[yt] + 0.3 + rng.normal(size=(nt + nq, d))
  return xs, ys, xt[:nt], xt[nt:]


def _kmm_qp_scipy(k, kappa, loss, ratio):
  n = len(kappa)
  eps = (np.sqrt(n) - 1) / np.sqrt(n)
  res = scipy.optimize.minimize(
      lambda s: 0.5 * s @ k @ s - kappa @ s + ratio * loss @ s, np.ones(n),
      jac=lambda s: k @ s - kappa + ratio * loss, hess=lambda s: k, method="trust-constr",
      bounds=scipy.optimize.Bounds(0, stm.WEIGHT_BOUND),
      constraints=[scipy.optimize.LinearConstraint(np.ones((1, n)), n * (1 - eps), n * (1 + eps))],
      options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 20000})
  return res.x


def _reference(xs, ys, xt, xq, c, lam):
  """One STM written as a plain loop: per pair, alternate SVC(sample_weight) and the QP."""
  order = svm.first_appearance_order(ys)
  decisions, final_weights = [], []
  for i in range(3):
    for j in range(i + 1, 3):
      rows = np.flatnonzero((ys == order[i]) | (ys == order[j]))
      y = np.where(ys[rows] == order[i], 1, -1)
      k = xs[rows] @ xs[rows].T
      kappa = len(rows) / len(xt) * (xs[rows] @ xt.T).sum(1)
      s = np.ones(len(rows))
      for _ in range(stm.ALTERNATIONS):
        machine = sk_svm.SVC(kernel="precomputed", C=c).fit(k, y, sample_weight=s)
        loss = np.maximum(0, 1 - y * machine.decision_function(k))
        s = np.clip(_kmm_qp_scipy(k, kappa, loss, c / lam), 0, None)
      machine = sk_svm.SVC(kernel="precomputed", C=c).fit(k, y, sample_weight=s)
      decisions.append(machine.decision_function(xq @ xs[rows].T))
      final_weights.append(s)
  votes = svm.ovo_votes(np.stack(decisions, -1), order, 3)
  return svm.ovo_predict(votes, order), final_weights


def test_grid_equals_loop_of_single_fits():
  xs, ys, xt, xq = _problem()
  params = methods.grid_points({"C": (0.5, 5.0), "lambda": (0.5, 50.0)})
  out = stm.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  assert not out.failed.any()
  np.testing.assert_array_equal(out.iterations, stm.ALTERNATIONS)
  for g in range(len(out)):
    expected, _ = _reference(xs, ys, xt, xq, params["C"][g], params["lambda"][g])
    np.testing.assert_array_equal(out.labels[g], expected, err_msg=f"grid point {g}")


def test_weights_equal_scipy_qp_and_move_away_from_one():
  xs, ys, xt, _ = _problem(1)
  rows = np.flatnonzero(ys != 2)
  y = np.where(ys[rows] == 0, 1, -1)
  k = xs[rows] @ xs[rows].T
  kappa = len(rows) / len(xt) * (xs[rows] @ xt.T).sum(1)
  cs, lams = np.array([1.0, 1.0]), np.array([0.001, 100.0])
  machines, weights, _, _ = stm.stm_binary(k, y, kappa, cs, lams, alternations=1)
  for g in range(2):
    first = sk_svm.SVC(kernel="precomputed", C=1.0).fit(k, y)
    loss = np.maximum(0, 1 - y * first.decision_function(k))
    expected = np.clip(_kmm_qp_scipy(k, kappa, loss, cs[g] / lams[g]), 0, None)
    np.testing.assert_allclose(weights[g], expected, atol=1e-5 * max(1, expected.max()))
  assert machines[0] is not None and np.ptp(weights[0]) > 0.1
  # A small lambda lets the losses drive the weights: the two points differ.
  assert np.max(np.abs(weights[0] - weights[1])) > 5e-3


def test_queries_not_used_and_failures():
  xs, ys, xt, xq = _problem(2)
  params = {"C": np.array([1.0, 0.0]), "lambda": np.array([1.0, 1.0])}
  whole = stm.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  part = stm.METHOD.fit_predict(xs, ys, xt, xq[:2], params, num_classes=3)
  np.testing.assert_array_equal(whole.labels[:, :2], part.labels)
  np.testing.assert_array_equal(whole.failed, [False, True])
  assert (whole.labels[1] == -1).all()
  np.testing.assert_array_equal(whole.failure, ["", "C and lambda must be positive"])


def test_weight_qps_run_in_float64_whatever_the_precision():
  # float32 QPs failed to converge where C / lambda >= 1e4 (synthetic benchmarks); they are
  # small host problems, so they run in float64 and precision does not change STM.
  xs, ys, xt, xq = _problem(3)
  params = {"C": np.array([10.0, 10.0]), "lambda": np.array([1e-4, 1e-3])}
  single = stm.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3, precision="float32")
  double = stm.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3, precision="float64")
  assert not single.failed.any()
  np.testing.assert_array_equal(single.labels, double.labels)


def test_real_features_v_to_n(shared):
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
  tgt = cdmer_io.read_feature_file(path("SMIC_NIR"), "SMIC_NIR")
  params = methods.grid_points({"C": (1.0,), "lambda": (1.0, 100.0)})
  out = stm.METHOD.fit_predict(src.features, src.labels - 1, tgt.features, tgt.features, params,
                               num_classes=3)
  assert not out.failed.any()
  acc = [float(metrics.classification_scores(tgt.labels - 1, row, 3)["acc"]) for row in out.labels]
  assert max(acc) > 0.5
