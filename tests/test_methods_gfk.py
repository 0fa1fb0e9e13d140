"""GFK (tgsr_jax.methods.gfk): the thin kernel against the dense construction at small D."""
import jax
import numpy as np
import pytest
import scipy.linalg

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import metrics
from tgsr_jax.methods import gfk
from tgsr_jax.methods import svm


def _problem(seed=0, ns=30, nt=25, d=20):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 2.0
  scale = np.linspace(2.0, 0.2, d)
  ys = np.concatenate([np.arange(3), rng.integers(0, 3, ns - 3)])
  xs = centres[ys] + rng.normal(size=(ns, d)) * scale
  rot = scipy.linalg.expm(0.3 * (lambda a: a - a.T)(rng.normal(size=(d, d))))
  yt = rng.integers(0, 3, nt)
  xt = (centres[yt] + rng.normal(size=(nt, d)) * scale) @ rot + 0.5
  return xs, ys, xt, yt


def _bases(xs, xt, k):
  basis = lambda a: np.linalg.svd(a - a.mean(0))[2][:k].T  # noqa: E731
  return basis(xs), basis(xt)


def _dense_gfk(ps, pt):
  """The authors' construction: Q = [P_s, null(P_s^T)], the CS decomposition, G (D x D)."""
  k = ps.shape[1]
  q = np.concatenate([ps, scipy.linalg.null_space(ps.T)], axis=1)    # D x D, R_s = q[:, k:]
  qpt = q.T @ pt
  u1, cos, vt = np.linalg.svd(qpt[:k])
  theta = np.arccos(np.clip(cos, 0, 1))
  u2 = -qpt[k:] @ vt.T / np.sin(theta)                               # R_s^T P_t = -U2 Sigma V^T
  b1 = np.diag(0.5 * (1 + np.sin(2 * theta) / (2 * theta)))
  b2 = np.diag(0.5 * (np.cos(2 * theta) - 1) / (2 * theta))
  b3 = np.diag(0.5 * (1 - np.sin(2 * theta) / (2 * theta)))
  basis = q @ scipy.linalg.block_diag(u1, u2)                        # D x 2k
  return basis @ np.block([[b1, b2], [b2, b3]]) @ basis.T


def _geodesic_gfk(ps, pt, nodes=60):
  """int_0^1 Phi Phi^T dt by Gauss-Legendre quadrature of the Grassmann geodesic (Edelman et al.):
  (I - P_s P_s^T) P_t (P_s^T P_t)^-1 = U tan(Theta) V^T, Phi(t) = P_s V cos(t Theta) + U sin(t Theta)."""
  u, tan, vt = np.linalg.svd((pt - ps @ (ps.T @ pt)) @ np.linalg.inv(ps.T @ pt),
                             full_matrices=False)
  theta = np.arctan(tan)
  t, w = np.polynomial.legendre.leggauss(nodes)
  t, w = 0.5 * (t + 1), 0.5 * w
  g = 0.0
  for ti, wi in zip(t, w):
    phi = ps @ vt.T * np.cos(ti * theta) + u * np.sin(ti * theta)
    g = g + wi * phi @ phi.T
  return g


@pytest.mark.parametrize("k", [3, 6])
def test_thin_kernel_equals_dense_and_geodesic_constructions(k):
  xs, _, xt, _ = _problem()
  ps, pt = _bases(xs, xt, k)
  g_dense = _dense_gfk(ps, pt)
  np.testing.assert_allclose(g_dense, _geodesic_gfk(ps, pt), atol=1e-10)
  x = np.concatenate([xs, xt])
  with jax.enable_x64(True):
    coords = gfk.gfk_coordinates(x @ ps, x @ pt, ps.T @ pt)
    thin = np.asarray(gfk.gfk_kernel(coords, coords))
  np.testing.assert_allclose(thin, x @ g_dense @ x.T, rtol=1e-9, atol=1e-9)


def test_identical_subspaces_give_the_projection():
  """theta = 0: G = P P^T (L1 = 1, L2 = L3 = 0), with no division by sin(theta)."""
  rng = np.random.default_rng(4)
  p = np.linalg.qr(rng.normal(size=(10, 3)))[0]
  x = rng.normal(size=(5, 10))
  with jax.enable_x64(True):
    coords = gfk.gfk_coordinates(x @ p, x @ p, p.T @ p)
    kern = np.asarray(gfk.gfk_kernel(coords, coords))
  np.testing.assert_allclose(kern, x @ p @ p.T @ x.T, atol=1e-12)


def test_grid_equals_loop_of_dense_fits():
  xs, ys, xt, _ = _problem(1)
  xq = xt[:12] - 0.2
  params = methods.grid_points({"classifier": ("svm", "1nn"), "dim": (2, 5)})
  out = gfk.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3)
  assert not out.failed.any()
  for g in range(len(out)):
    g_dense = _dense_gfk(*_bases(xs, xt, params["dim"][g]))
    k_ss, k_qs = xs @ g_dense @ xs.T, xq @ g_dense @ xs.T
    if params["classifier"][g] == "svm":
      expected, _ = svm.ovo_svm(k_ss, ys, k_qs, num_classes=3)
    else:
      dist = ((xq[:, None] - xs[None]) @ g_dense * (xq[:, None] - xs[None])).sum(-1)
      expected = ys[np.argmin(dist, axis=1)]
    np.testing.assert_array_equal(out.labels[g], expected, err_msg=f"grid point {g}")
  # Queries never enter the fit; float32 mostly agrees; too large a k fails.
  part = gfk.METHOD.fit_predict(xs, ys, xt, xq[:3], params, num_classes=3)
  np.testing.assert_array_equal(out.labels[:, :3], part.labels)
  f32 = gfk.METHOD.fit_predict(xs, ys, xt, xq, params, num_classes=3, precision="float32")
  assert np.mean(f32.labels == out.labels) >= 0.9
  over = gfk.METHOD.fit_predict(xs, ys, xt, xq, {"dim": np.array([25])}, num_classes=3)
  assert over.failed.all() and (over.labels == -1).all()
  assert over.failure[0].startswith("dim 25 exceeds the PCA rank")


def test_real_features_v_to_n(shared):
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
  tgt = cdmer_io.read_feature_file(path("SMIC_NIR"), "SMIC_NIR")
  params = methods.grid_points({"classifier": ("svm", "1nn"), "dim": (10, 20)})
  out = gfk.METHOD.fit_predict(src.features, src.labels - 1, tgt.features, tgt.features, params,
                               num_classes=3)
  assert not out.failed.any()
  acc = [float(metrics.classification_scores(tgt.labels - 1, row, 3)["acc"]) for row in out.labels]
  assert max(acc) > 0.55
