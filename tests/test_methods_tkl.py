"""TKL (tgsr_jax.methods.tkl) against a NumPy implementation (the spectrum QP by SciPy's NNLS)."""
import jax
import numpy as np
import pytest
import scipy.optimize

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import metrics
from tgsr_jax.methods import _adaptation as ad
from tgsr_jax.methods import svm
from tgsr_jax.methods import tkl


def _problem(seed=0, ns=24, nt=12, nq=7, d=5):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 2.0
  ys = np.concatenate([np.arange(3), rng.integers(0, 3, ns - 3)])
  xs = centres[ys] + rng.normal(size=(ns, d))
  yt = rng.integers(0, 3, nt + nq)
  xt = centres[yt] * 1.3 + 0.7 + rng.normal(size=(nt + nq, d))
  return xs, ys, xt[:nt], xt[nt:]


def _reference(xs, xt, xq, eta, kind):
  """NumPy TKL: eigh of K_T, Nystrom, the damped spectrum by NNLS in mu (l = T mu, mu >= 0)."""
  x = np.concatenate([xs, xt])
  if kind == "linear":
    kern = lambda a, b: a @ b.T  # noqa: E731
  else:
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    gamma = len(x) * (len(x) - 1) / sq.sum()
    kern = lambda a, b: np.exp(-gamma * ((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731
  lam, vec = np.linalg.eigh(kern(xt, xt))
  lam, vec = lam[::-1], vec[:, ::-1]
  keep = lam > 1e-8 * lam[0]
  lam, vec = lam[keep], vec[:, keep]
  phi_s = kern(xs, xt) @ vec / lam
  phi_q = kern(xq, xt) @ vec / lam
  r = len(lam)
  # ||sum_i l_i phi_i phi_i^T - K_S||_F with l_i - eta l_{i+1} = mu_i >= 0, mu_r = l_r >= 0.
  design = np.stack([np.outer(phi_s[:, i], phi_s[:, i]).ravel() for i in range(r)], axis=1)
  t = np.triu(eta ** (np.arange(r)[None, :] - np.arange(r)[:, None]))
  mu, _ = scipy.optimize.nnls(design @ t, kern(xs, xs).ravel(), maxiter=50 * r)
  spectrum = t @ mu
  return spectrum, phi_s * spectrum @ phi_s.T, phi_q * spectrum @ phi_s.T


@pytest.mark.parametrize("kind", ["linear", "rbf"])
def test_spectrum_equals_nnls_reference(kind):
  xs, _, xt, xq = _problem()
  x = np.concatenate([xs, xt])
  etas = (1.1, 2.0, 4.0)
  with jax.enable_x64(True):
    gamma = ad.rbf_gamma(x, 1.0) if kind == "rbf" else 1.0
    lam, phi = tkl.target_eigensystem(ad.kernel(xt, xt, kind, gamma), 1e-8)
    phi_s = ad.kernel(xs, xt, kind, gamma) @ (phi / lam)
    p, q = tkl.spectrum_qp(phi_s, ad.kernel(xs, xs, kind, gamma))
    spectra, _, met = tkl.learn_spectra(p, q, np.asarray(etas))
  assert np.asarray(met).all()
  for i, eta in enumerate(etas):
    expected, _, _ = _reference(xs, xt, xq, eta, kind)
    got = np.asarray(spectra[i])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7 * expected.max())
    assert np.all(got[:-1] >= eta * got[1:] - 1e-9 * got.max())
    assert tkl.spectrum_feasible(got, eta)
  assert not tkl.spectrum_feasible(np.array([1.0, 0.9]), 2.0)        # 1.0 < 2 x 0.9
  assert not tkl.spectrum_feasible(np.array([1.0, np.nan]), 2.0)
  # The damping binds: a larger eta changes the spectrum.
  assert not np.allclose(spectra[0], spectra[2])


def test_grid_equals_loop_of_reference_fits():
  xs, ys, xt, xq = _problem(1)
  params = methods.grid_points({"kernel": ("linear", "rbf"), "eta": (1.5, 3.0)})
  out = tkl.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  assert not out.failed.any() and out.converged.all() and (out.iterations > 0).all()
  for g in range(len(out)):
    _, k_ss, k_qs = _reference(xs, xt, xq, params["eta"][g], params["kernel"][g])
    expected, _ = svm.ovo_svm(k_ss, ys, k_qs, num_classes=3)
    np.testing.assert_array_equal(out.labels[g], expected, err_msg=f"grid point {g}")
  part = tkl.METHOD.fit_predict(xs, ys, xt, xq[:3], params, num_classes=3)
  np.testing.assert_array_equal(out.labels[:, :3], part.labels)
  f32 = tkl.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3, precision="float32")
  assert np.mean(f32.labels == out.labels) >= 0.85
  bad = tkl.METHOD.fit_predict(xs, ys, xt, xq, {"eta": np.array([0.5])}, num_classes=3)
  assert bad.failed.all() and (bad.labels == -1).all()


def test_qp_solver_against_scipy_on_a_box_problem():
  """The interior point solver on a generic box + sum constrained QP (the STM / KMM shape)."""
  rng = np.random.default_rng(3)
  n = 8
  a = rng.normal(size=(n, n))
  p, q = a @ a.T + 0.1 * np.eye(n), rng.normal(size=n) * 3
  g = np.concatenate([np.eye(n), -np.eye(n), np.ones((1, n)), -np.ones((1, n))])
  h = np.concatenate([np.full(n, 2.0), np.zeros(n), [n * 1.1], [-n * 0.9]])
  with jax.enable_x64(True):
    x, _, met = ad.solve_qp(p, q, g, h)
  ref = scipy.optimize.minimize(
      lambda v: 0.5 * v @ p @ v + q @ v, np.ones(n), jac=lambda v: p @ v + q,
      hess=lambda v: p, method="trust-constr",
      constraints=[scipy.optimize.LinearConstraint(g, -np.inf, h)],
      options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000})
  assert bool(met) and ref.status in (1, 2)
  np.testing.assert_allclose(np.asarray(x), ref.x, atol=1e-6)
  assert 0 < np.sum(np.isclose(np.asarray(x), 2.0) | np.isclose(np.asarray(x), 0.0))  # bounds bind
  assert np.all(g @ np.asarray(x) <= h + 1e-8)


def test_real_features_v_to_n(shared):
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
  tgt = cdmer_io.read_feature_file(path("SMIC_NIR"), "SMIC_NIR")
  params = methods.grid_points({"kernel": ("linear", "rbf"), "eta": (2.0,)})
  out = tkl.METHOD.fit_predict(src.features, src.labels - 1, tgt.features, tgt.features, params,
                               num_classes=3)
  assert not out.failed.any()
  acc = [float(metrics.classification_scores(tgt.labels - 1, row, 3)["acc"]) for row in out.labels]
  assert max(acc) > 0.5
