"""The SVM baseline and LIBSVM's one-vs-one voting (tgsr_jax.methods.svm)."""
import numpy as np
import pytest
from sklearn import svm as sk_svm

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import metrics
from tgsr_jax.methods import svm


def test_first_appearance_order_and_ties():
  order = svm.first_appearance_order(np.array([2, 2, 0, 1, 0]))
  np.testing.assert_array_equal(order, [2, 0, 1])
  # A three-way tie (one vote each) goes to the earliest class in that order, not class 0.
  votes = np.array([[1, 1, 1], [0, 2, 1]])
  np.testing.assert_array_equal(svm.ovo_predict(votes, order), [2, 1])
  # Pairs in LIBSVM's order over [2, 0, 1]: (2,0), (2,1), (0,1).
  np.testing.assert_array_equal(svm.ovo_votes(np.array([[1.0, -1.0, 1.0]]), order, 3),
                                [[1, 1, 1]])


def test_matches_scikit_learn_where_there_are_no_ties():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 6)) * 3
  y = rng.integers(0, 3, 90)
  x = centres[y] + rng.normal(size=(90, 6))
  xq = centres[rng.integers(0, 3, 40)] + rng.normal(size=(40, 6))
  labels, decisions = svm.linear_svm(x, y, xq, num_classes=3)
  reference = sk_svm.SVC(kernel="linear", C=1.0).fit(x, y)
  votes = svm.ovo_votes(decisions, svm.first_appearance_order(y), 3)
  untied = np.sort(votes, axis=1)[:, -1] > np.sort(votes, axis=1)[:, -2]
  assert untied.sum() > 30
  np.testing.assert_array_equal(labels[untied], reference.predict(xq)[untied])


def test_grid_interface():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(30, 4))
  y = (x[:, 0] > 0).astype(int)
  method = methods.get("svm")
  out = method.fit_predict(x, y, x, x[:5], methods.grid_points({"C": (0.1, 1.0)}),
                           num_classes=2)
  assert out.labels.shape == (2, 5) and not out.failed.any()
  np.testing.assert_array_equal(out.params["C"], [0.1, 1.0])


@pytest.mark.parametrize("source,target,mf1,acc", [
    ("SMIC_VIS", "SMIC_NIR", 0.6186, 63.38), ("SMIC_NIR", "SMIC_VIS", 0.6078, 63.38),
    ("CASME2", "SMIC_VIS", 0.4701, 50.70), ("SMIC_VIS", "CASME2", 0.5367, 53.08),
    ("CASME2", "SMIC_NIR", 0.5295, 52.11), ("SMIC_NIR", "CASME2", 0.2368, 23.85)])
def test_published_svm_cells(shared, source, target, mf1, acc):
  """Every published SVM cell with features (TGSR paper Tables II/III) comes out exactly."""
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path(source), source)
  tgt = cdmer_io.read_feature_file(path(target), target)
  labels, _ = svm.linear_svm(src.features, src.labels - 1, tgt.features, num_classes=3)
  scores = metrics.classification_scores(tgt.labels - 1, labels, 3)
  assert round(float(scores["mf1"]), 4) == mf1
  assert round(100 * float(scores["acc"]), 2) == acc
