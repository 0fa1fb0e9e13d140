"""Accuracy, landmark NME and decrease rates (mtl_flax.metrics) against direct NumPy code."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score

from mtl_flax import metrics
from mtl_flax.data import readers


def _nme_loop(pred, true, norm):
  out = []
  for p, g in zip(pred, true):
    if norm == "pupil":
      d = np.hypot(*(g[36:42].mean(0) - g[42:48].mean(0)))
    else:
      d = np.hypot(*(g[36] - g[45]))
    out.append(np.mean([np.hypot(*(p[i] - g[i])) for i in range(68)]) / d)
  return np.array(out)


def test_accuracy_matches_sklearn():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 13))
  labels = rng.integers(0, 13, 50)
  assert float(metrics.accuracy(logits, labels)) == pytest.approx(
      accuracy_score(labels, logits.argmax(1)))



def test_macro_f1_matches_sklearn():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(60, 13))
  logits[:, 12] -= 10.0                                  # class 12 never predicted
  labels = rng.integers(0, 12, 60)                       # and never true: not counted
  labels[:3] = 11
  predictions = logits.argmax(1)
  assert metrics.macro_f1(logits, labels) == pytest.approx(
      f1_score(labels, predictions, average="macro"), abs=1e-12)
  assert 0.0 < metrics.macro_f1(logits, labels) < 1.0
  assert metrics.macro_f1(np.eye(4)[[0, 1, 2, 3, 3]], np.array([0, 1, 2, 3, 3])) == 1.0

@pytest.mark.parametrize("norm", ["pupil", "ocular"])
def test_nme_matches_loop(norm):
  rng = np.random.default_rng(1)
  true = rng.uniform(0.1, 0.9, (6, 68, 2))
  pred = true + rng.normal(0, 0.02, true.shape)
  fn = metrics.inter_pupil_nme if norm == "pupil" else metrics.inter_ocular_nme
  expected = _nme_loop(pred, true, norm)
  np.testing.assert_allclose(fn(pred, true, reduce=False), expected, rtol=1e-5)
  assert float(fn(pred, true)) == pytest.approx(expected.mean(), rel=1e-5)
  # Flat (N, 136) layout gives the same numbers.
  assert float(fn(pred.reshape(6, 136), true.reshape(6, 136))) == pytest.approx(
      expected.mean(), rel=1e-5)
  name = "inter_pupil" if norm == "pupil" else "inter_ocular"
  assert float(metrics.landmark_nme(pred, true, normalisation=name)) == pytest.approx(
      expected.mean(), rel=1e-5)


def test_nme_on_real_annotations(shared):
  truth = np.stack([readers.read_pts(shared("landmarks", n))
                    for n in ("einstein.pts", "takeo.pts", "breakingbad.pts")]).astype(np.float64)
  shift = np.array([3.0, -4.0])  # every point off by 5 pixels
  pred = truth + shift
  ipd = np.linalg.norm(truth[:, 36:42].mean(1) - truth[:, 42:48].mean(1), axis=1)
  iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
  np.testing.assert_allclose(metrics.inter_pupil_nme(pred, truth, reduce=False), 5.0 / ipd,
                             rtol=1e-5)
  np.testing.assert_allclose(metrics.inter_ocular_nme(pred, truth, reduce=False), 5.0 / iod,
                             rtol=1e-5)
  # Outer corners lie outside the pupils: the inter-ocular distance is the larger one.
  assert (iod > ipd).all()


def test_nme_rejects_wrong_point_count():
  with pytest.raises(ValueError, match="68"):
    metrics.inter_pupil_nme(np.zeros((2, 5, 2)), np.zeros((2, 5, 2)))
  with pytest.raises(ValueError, match="normalisation"):
    metrics.landmark_nme(np.zeros((1, 68, 2)), np.ones((1, 68, 2)), normalisation="box")


def test_decrease_rates():
  rates = metrics.decrease_rates({"conv01": 4.0, "conv02": 2.0}, {"conv01": 1.0, "conv02": 3.0})
  assert rates == {"conv01": 0.25, "conv02": 1.5}
  with pytest.raises(ValueError, match="conv03"):
    metrics.decrease_rates({"conv01": 1.0}, {"conv01": 1.0, "conv03": 1.0})
  with pytest.raises(ValueError, match="initial trace norm"):
    metrics.decrease_rates({"conv01": 0.0}, {"conv01": 1.0})


def test_pca_embedding_matches_sklearn_and_plots(tmp_path):
  from sklearn.decomposition import PCA
  from mtl_flax import evaluate
  x = np.random.default_rng(0).normal(size=(40, 6)) * np.array([5, 3, 1, 1, 1, 1])
  ours = evaluate.embed_2d(x, method="pca")
  ref = PCA(2).fit_transform(x)
  np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-8)
  a, b = x[:20], x[20:] + np.array([30, 0, 0, 0, 0, 0])
  assert evaluate.domain_separability(a, b) > 3 * evaluate.domain_separability(a, x[20:])
  evaluate.plot_embeddings({"without ADA": (a, b), "with ADA": (a, x[20:])},
                           tmp_path / "emb.png")
  evaluate.plot_decrease_rates({"LAF": {"conv00": 0.9, "conv01": 0.5}}, tmp_path / "rates.png")
  assert (tmp_path / "emb.png").stat().st_size > 1000
  assert (tmp_path / "rates.png").stat().st_size > 1000


def test_plot_writers_leave_the_backend_alone(tmp_path):
  """A notebook's backend stays as it is when a run writes its figures."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  from mtl_flax import evaluate  # pylint: disable=import-outside-toplevel
  before = matplotlib.get_backend()
  try:
    matplotlib.use("svg")
    evaluate.plot_decrease_rates({"LAF": {"conv00": 0.9, "conv01": 0.5}}, tmp_path / "rates.png")
    x = np.random.default_rng(0).normal(size=(20, 4))
    evaluate.plot_embeddings({"run": (x[:10], x[10:])}, tmp_path / "emb.png")
    assert matplotlib.get_backend() == "svg"
    assert (tmp_path / "rates.png").read_bytes()[:4] == b"\x89PNG"
  finally:
    matplotlib.use(before)
