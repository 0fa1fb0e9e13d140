"""SA (tgsr_jax.methods.sa) against skada's SubspaceAlignmentAdapter and the authors' kernel."""
import numpy as np
import skada

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import metrics
from tgsr_jax.methods import sa
from tgsr_jax.methods import svm


def _problem(seed=0, ns=30, nt=26, d=12, centred=True):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 2.0
  ys = np.concatenate([np.arange(3), rng.integers(0, 3, ns - 3)])
  xs = centres[ys] + rng.normal(size=(ns, d)) * np.linspace(2, 0.3, d)
  mix = np.linalg.qr(rng.normal(size=(d, d)))[0] * 0.4 + np.eye(d)   # a linear domain shift
  yt = rng.integers(0, 3, nt)
  xt = (centres[yt] + rng.normal(size=(nt, d)) * np.linspace(2, 0.3, d)) @ mix
  if centred:
    xs, xt = xs - xs.mean(0), xt - xt.mean(0)
  return xs, ys, xt, yt


def test_grid_equals_skada_subspace_alignment():
  """On centred domains (skada's PCA centres) the aligned features and predictions coincide."""
  xs, ys, xt, _ = _problem()
  dims = (2, 4, 7)
  out = sa.METHOD.fit_predict(xs, ys, xt, xt, methods.grid_points({"dim": dims}), num_classes=3)
  assert not out.failed.any()
  x = np.concatenate([xs, xt])
  domain = np.concatenate([np.ones(len(xs)), -np.ones(len(xt))]).astype(int)
  for g, k in enumerate(dims):
    adapter = skada.SubspaceAlignmentAdapter(n_components=k).fit(x, sample_domain=domain)
    z = adapter.transform(x, sample_domain=domain, allow_source=True)
    expected, _ = svm.linear_svm(z[:len(xs)], ys, z[len(xs):], num_classes=3)
    np.testing.assert_array_equal(out.labels[g], expected, err_msg=f"k = {k}")
  assert len({tuple(row) for row in out.labels}) > 1


def test_equals_the_authors_kernel_on_raw_rows():
  """Uncentred rows: the SVM on the kernel X_s P_s P_s^T P_t P_t^T X_q^T (dense, NumPy)."""
  xs, ys, xt, _ = _problem(1, centred=False)
  xq = xt[:10] + 0.1
  k = 5
  out = sa.METHOD.fit_predict(xs, ys, xt, xq, {"dim": np.array([k])}, num_classes=3)
  basis = lambda a: np.linalg.svd(a - a.mean(0))[2][:k].T  # noqa: E731
  ps, pt = basis(xs), basis(xt)
  a = ps @ ps.T @ pt @ pt.T                                  # D x D: fine at D = 12
  expected, _ = svm.ovo_svm(xs @ a @ a.T @ xs.T, ys, xq @ a.T @ xs.T, num_classes=3)
  np.testing.assert_array_equal(out.labels[0], expected)


def test_queries_not_used_and_rank_failures():
  xs, ys, xt, _ = _problem(2)
  params = {"dim": np.array([3, 6, 40])}
  whole = sa.METHOD.fit_predict(xs, ys, xt, xt, params, num_classes=3)
  part = sa.METHOD.fit_predict(xs, ys, xt, xt[:5], params, num_classes=3)
  np.testing.assert_array_equal(whole.labels[:, :5], part.labels)
  # d = 12 features: a 40-dimensional subspace does not exist.
  np.testing.assert_array_equal(whole.failed, [False, False, True])
  assert (whole.labels[2] == -1).all()
  # grid.csv's `failure` column says why.
  assert list(whole.failure[:2]) == ["", ""] and whole.failure[2].startswith(
      "dim 40 exceeds the PCA rank of the source (12,")
  f32 = sa.METHOD.fit_predict(xs, ys, xt, xt, params, num_classes=3, precision="float32")
  assert np.mean(f32.labels[:2] == whole.labels[:2]) >= 0.9


def test_real_features_v_to_n(shared):
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
  tgt = cdmer_io.read_feature_file(path("SMIC_NIR"), "SMIC_NIR")
  out = sa.METHOD.fit_predict(src.features, src.labels - 1, tgt.features, tgt.features,
                              methods.grid_points({"dim": (10, 70, 71)}), num_classes=3)
  np.testing.assert_array_equal(out.failed, [False, False, True])  # 71 rows: 70 directions
  acc = [float(metrics.classification_scores(tgt.labels - 1, row, 3)["acc"])
         for row in out.labels[:2]]
  assert min(acc) > 0.5
