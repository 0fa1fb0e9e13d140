"""Label-free model selection (tgsr_jax.selection), against skada's scorers and scikit-learn."""
import dataclasses

import numpy as np
import pytest
from sklearn import linear_model
from sklearn import metrics as sk_metrics
from sklearn import model_selection

from tgsr_jax import cdmer_io
from tgsr_jax import methods
from tgsr_jax import selection
from tgsr_jax.methods import svm

skada_base = pytest.importorskip("skada.base")
skada = pytest.importorskip("skada")
skada_metrics = pytest.importorskip("skada.metrics")


def _shifted_problem(seed=0, n_s=60, n_t=45, d=5):
  """Three overlapping classes; the target is the source shifted and stretched."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(3, d)) * 0.8
  ys = np.repeat(np.arange(3), n_s // 3)
  rng.shuffle(ys)
  xs = centres[ys] + rng.normal(size=(n_s, d))
  yt = rng.integers(0, 3, n_t)
  xt = (centres[yt] + rng.normal(size=(n_t, d))) * 1.3 + 0.6
  return xs, ys, xt, yt


class _MethodEstimator(skada_base.DAEstimator):
  """A skada estimator around one grid point of a ``methods.Method`` (the SVM here).

  ``fit`` keeps the source (sample_domain >= 0) and target rows; ``predict`` is
  ``fit_predict(xs, ys, xt, X)``, so skada's scorers and the driver see the same predictions.
  """
  __metadata_request__score = {"sample_weight": True}

  def __init__(self, c=1.0, num_classes=3, confidence=1.0):
    self.c = c
    self.num_classes = num_classes
    self.confidence = confidence

  def fit(self, X, y=None, sample_domain=None, *, sample_weight=None):
    source = np.asarray(sample_domain) >= 0
    self.xs_, self.ys_, self.xt_ = X[source], np.asarray(y)[source], X[~source]
    return self

  def predict(self, X, sample_domain=None, *, sample_weight=None, allow_source=False):
    out = methods.get("SVM").fit_predict(self.xs_, self.ys_, self.xt_, X,
                                         {"C": np.array([self.c])}, num_classes=self.num_classes)
    return out.labels[0]

  def predict_proba(self, X, sample_domain=None, *, allow_source=False):
    """``confidence`` on the predicted class, the rest spread evenly."""
    rest = (1.0 - self.confidence) / (self.num_classes - 1)
    return np.where(np.eye(self.num_classes, dtype=bool)[self.predict(X)], self.confidence, rest)

  def score(self, X, y, sample_domain=None, *, sample_weight=None, allow_source=False):
    return sk_metrics.accuracy_score(y, self.predict(X), sample_weight=sample_weight)


def _skada_inputs(xs, ys, xt):
  x = np.concatenate([xs, xt])
  y = np.concatenate([ys, np.full(len(xt), -1)])
  domain = np.concatenate([np.ones(len(xs), int), np.full(len(xt), -2)])
  return x, y, domain


def _fitted(xs, ys, xt, c=1.0, **kwargs):
  return skada.make_da_pipeline(_MethodEstimator(c=c, **kwargs)).fit(
      *_skada_inputs(xs, ys, xt)[:2], sample_domain=_skada_inputs(xs, ys, xt)[2])


def test_stratified_folds():
  y = np.array([0] * 12 + [1] * 7 + [2] * 10)
  folds = selection.stratified_folds(y, 5, seed=3)
  np.testing.assert_array_equal(folds, selection.stratified_folds(y, 5, seed=3))
  assert set(folds) == set(range(5))
  for c in range(3):
    per_fold = np.bincount(folds[y == c], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1
  assert not np.array_equal(folds, selection.stratified_folds(y, 5, seed=4))
  with pytest.raises(ValueError, match="num_folds must be in \\[2, 7\\]"):
    selection.stratified_folds(y, 8)


def test_weighted_scores_match_scikit_learn():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 40)
  pred = rng.integers(0, 4, (3, 40))                 # class 3: predicted, never true
  pred[1][pred[1] == 2] = 0                          # row 1 never predicts class 2
  w = rng.uniform(0.1, 3.0, 40)
  got = selection.weighted_scores(y, pred, w, 4)
  for g in range(3):
    np.testing.assert_allclose(got["acc"][g],
                               sk_metrics.accuracy_score(y, pred[g], sample_weight=w))
    np.testing.assert_allclose(got["mf1"][g], sk_metrics.f1_score(
        y, pred[g], labels=range(4), average="macro", sample_weight=w, zero_division=0))
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
      uar = sk_metrics.balanced_accuracy_score(y, pred[g], sample_weight=w)
    np.testing.assert_allclose(got["uar"][g], uar)
  # Unweighted, they are the plain scores of tgsr_jax.metrics.
  plain = selection.weighted_scores(y, pred[0], None, 4)
  np.testing.assert_allclose(plain["mf1"], sk_metrics.f1_score(
      y, pred[0], labels=range(4), average="macro", zero_division=0))


def test_iwcv_matches_skada_importance_weighted_scorer():
  xs, ys, xt, _ = _shifted_problem(1)
  tr, va = np.arange(40), np.arange(40, 60)
  estimator = _fitted(xs[tr], ys[tr], xt)
  expected = skada_metrics.ImportanceWeightedScorer()(
      estimator, *_skada_inputs(xs[va], ys[va], xt)[:2],
      sample_domain=_skada_inputs(xs[va], ys[va], xt)[2])
  # skada fits both KDEs on the rows it scores: the held-out source rows and the target.
  weights = selection.kde_density_ratio(xs[va], xt, xs[va])
  pred = svm.linear_svm(xs[tr], ys[tr], xs[va], num_classes=3)[0]
  got = selection.iwcv_score(ys[va], pred[None], weights, num_classes=3, metric="accuracy")
  assert 0.3 < expected < 1.0                      # some held-out rows are misclassified
  np.testing.assert_allclose(got, [expected], rtol=1e-12)
  # The unweighted score differs: the weights matter on this problem.
  assert abs(sk_metrics.accuracy_score(ys[va], pred) - expected) > 1e-3


@pytest.mark.parametrize("loss", ["zero_one", "cross_entropy"])
def test_dev_matches_skada_deep_embedded_validation(loss):
  xs, ys, xt, _ = _shifted_problem(2)
  estimator = _fitted(xs[:30], ys[:30], xt, confidence=0.7)
  held_out_x, held_out_y = xs[30:], ys[30:]
  # skada multiplies its (m, 1) weights by the losses: a loss of shape (m,), as its default
  # cross-entropy returns, broadcasts to (m, m) (a bug of skada 0.6.0); an (m, 1) loss gives the
  # estimator of You et al. (their code's shapes).
  def loss_func(y, p):
    if loss == "zero_one":
      return (p.argmax(1) != y).astype(float)[:, None]
    return np.array([scorer.cross_entropy_loss(t, q) for t, q in zip(y, p)])[:, None]
  scorer = skada_metrics.DeepEmbeddedValidation(loss_func=loss_func, random_state=5)
  x, y, domain = _skada_inputs(held_out_x, held_out_y, xt)
  expected = scorer(estimator, x, y, sample_domain=domain)
  # skada splits the source rows it is given (test_size=0.33) and fits the domain classifier,
  # scikit-learn's default LogisticRegression, on the split's training part against the target.
  fit_rows, val_rows = model_selection.train_test_split(
      np.arange(len(held_out_x)), test_size=0.33, random_state=np.random.RandomState(5))
  weights = selection.logistic_density_ratio(held_out_x[fit_rows], xt, held_out_x[val_rows],
                                             c=1.0, max_iter=100)
  pred = svm.linear_svm(xs[:30], ys[:30], held_out_x[val_rows], num_classes=3)[0]
  if loss == "zero_one":
    got = selection.dev_score(held_out_y[val_rows], pred, weights)
  else:
    proba = np.where(pred[:, None] == held_out_y[val_rows][:, None], 0.7, 0.15)[:, 0]
    got = -selection.dev_risk(-np.log(proba), weights)
  assert np.var(weights) > 0 and (pred != held_out_y[val_rows]).any()
  np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_logistic_density_ratio_equals_the_full_dimensional_classifier():
  """The fit in the span of the samples is scikit-learn's LogisticRegression on all d features."""
  rng = np.random.default_rng(7)
  xs, xt = rng.normal(size=(30, 300)), rng.normal(size=(20, 300)) + 0.1
  x_eval = rng.normal(size=(12, 300)) + 0.05
  for c in (1.0, 0.01):
    # Both fits run to a tight tolerance: they minimise the same objective in different bases.
    classifier = linear_model.LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit(
        np.concatenate([xs, xt]), np.r_[np.ones(30, int), np.zeros(20, int)])
    p_target, p_source = classifier.predict_proba(x_eval).T
    got = selection.logistic_density_ratio(xs, xt, x_eval, c=c, max_iter=10000, tol=1e-10)
    np.testing.assert_allclose(got, 30 / 20 * p_target / p_source, rtol=1e-6)
    assert np.ptp(np.log(got)) > 0.5


def test_dev_risk_without_weight_variance_is_the_mean_loss():
  losses = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
  np.testing.assert_allclose(selection.dev_risk(losses, np.full(4, 2.0)), [1.0, 1.5])
  # With varying weights the control variate is -Cov(wl, w) / Var(w) (NumPy's np.cov).
  w = np.array([0.5, 1.0, 2.0, 0.5])
  wl = w * losses[0]
  eta = -np.cov(wl, w)[0, 1] / np.var(w, ddof=1)
  np.testing.assert_allclose(selection.dev_risk(losses[0], w), wl.mean() + eta * w.mean() - eta)


def test_reverse_validation_matches_skada_circular_validation():
  xs, ys, xt, _ = _shifted_problem(3)
  grid = {"C": np.array([1e-4, 1.0])}
  result = selection.select(methods.get("SVM"), xs, ys, xt, grid, num_classes=3, num_folds=3,
                            rv_metric="uar", reverse_target="query")
  constant_seen = False
  for g, c in enumerate(grid["C"]):
    pooled = np.full(len(ys), -1)
    for f in range(3):
      tr, va = np.flatnonzero(result.folds != f), np.flatnonzero(result.folds == f)
      captured = []
      scorer = skada_metrics.CircularValidation(
          source_scorer=lambda y, p: captured.append(p) or sk_metrics.balanced_accuracy_score(y, p))
      x, y, domain = _skada_inputs(xs[va], ys[va], xt)
      with pytest.MonkeyPatch.context() as patch:
        patch.setattr("warnings.warn", lambda *a, **k: None)
        fold_score = scorer(_fitted(xs[tr], ys[tr], xt, c=c), x, y, sample_domain=domain)
      np.testing.assert_array_equal(result.reverse_labels[g, va], captured[0])
      np.testing.assert_allclose(fold_score, sk_metrics.balanced_accuracy_score(ys[va],
                                                                                captured[0]))
      constant_seen |= np.unique(captured[0]).size == 1
      pooled[va] = captured[0]
    np.testing.assert_allclose(result.scores["RV"][g],
                               sk_metrics.balanced_accuracy_score(ys, pooled))
  assert constant_seen   # C = 1e-4 labels the whole target one class: skada's constant rule


def test_driver_matches_single_fits_and_single_points():
  xs, ys, xt, _ = _shifted_problem(4)
  method = methods.get("SVM")
  grid = methods.grid_points({"C": (0.01, 0.1, 1.0, 10.0)})
  result = selection.select(method, xs, ys, xt, grid, num_classes=3, num_folds=3)
  assert set(result.scores) == set(selection.RULES)
  # Out-of-fold forward predictions are single SVM fits on each fold's training rows.
  for g, c in enumerate(grid["C"]):
    for f in range(3):
      tr, va = np.flatnonzero(result.folds != f), np.flatnonzero(result.folds == f)
      expected = svm.linear_svm(xs[tr], ys[tr], xs[va], num_classes=3, c=c)[0]
      np.testing.assert_array_equal(result.source_labels[g, va], expected)
      if g == 0:   # the fold's density ratios: domain classifier on xs[tr] vs xt, at xs[va]
        np.testing.assert_allclose(result.weights[va],
                                   selection.logistic_density_ratio(xs[tr], xt, xs[va]))
    # IWCV pools the out-of-fold rows: one weighted macro F1 over all source rows.
    np.testing.assert_allclose(result.scores["IWCV"][g], sk_metrics.f1_score(
        ys, result.source_labels[g], labels=range(3), average="macro",
        sample_weight=result.weights, zero_division=0))
  # The batched grid (backward fits grouped by pseudo-labelling) equals one point at a time.
  for g in range(4):
    single = selection.select(method, xs, ys, xt, {"C": grid["C"][g:g + 1]}, num_classes=3,
                              num_folds=3)
    np.testing.assert_array_equal(single.reverse_labels[0], result.reverse_labels[g])
    for rule in selection.RULES:
      np.testing.assert_allclose(single.scores[rule][0], result.scores[rule][g])
  for rule, scores in result.scores.items():
    assert np.isfinite(scores).all()
    assert result.picks[rule] == int(np.flatnonzero(scores == scores.max())[0])
  # IWCV with unit weights is SrcCV; the logistic weights are not all equal here.
  assert np.ptp(result.weights) > 0.1
  assert not np.allclose(result.scores["IWCV"], result.scores["SrcCV"])


def test_reverse_validation_with_labellings_per_point_equals_one_call_per_labelling():
  # DRLS fits every backward grid point in one call (one labelling per point); forcing the
  # default (one call per distinct pseudo-labelling) must give the same backward predictions.
  xs, ys, xt, _ = _shifted_problem(6, n_s=30, n_t=24)
  xs, xt = np.abs(xs), np.abs(xt)
  method = methods.get("DRLS")
  assert method.labels_per_point
  grid = methods.grid_points({"lambda": (0.1, 10.0), "mu": (0.01, 0.3, 3.0)})
  batched = selection.select(method, xs, ys, xt, grid, num_classes=3, num_folds=3,
                             rules=("RV",))
  looped = selection.select(dataclasses.replace(method, labels_per_point=False), xs, ys, xt, grid,
                            num_classes=3, num_folds=3, rules=("RV",))
  np.testing.assert_array_equal(batched.reverse_labels, looped.reverse_labels)
  np.testing.assert_array_equal(batched.scores["RV"], looped.scores["RV"])
  assert (batched.reverse_labels >= 0).all() and np.unique(batched.source_labels, axis=0).shape[0] > 1


def test_density_cache_estimates_each_fold_once_per_data(monkeypatch):
  xs, ys, xt, _ = _shifted_problem(7, n_s=30, n_t=24)
  calls = []
  real = selection.density_ratio
  monkeypatch.setattr(selection, "density_ratio",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  svm_method = methods.get("SVM")
  grid = {"C": np.array([1.0])}
  fresh = selection.select(svm_method, xs, ys, xt, grid, num_classes=3, num_folds=3)
  cache = {}
  first = selection.select(svm_method, xs, ys, xt, grid, num_classes=3, num_folds=3,
                           density_cache=cache)
  again = selection.select(svm_method, xs, ys, xt, grid, num_classes=3, num_folds=3,
                           density_cache=cache, rules=("IWCV",))
  assert len(calls) == 6                      # 3 folds without the cache, 3 filling it, 0 after
  np.testing.assert_array_equal(again.weights, fresh.weights)
  np.testing.assert_array_equal(first.scores["IWCV"], fresh.scores["IWCV"])
  selection.select(svm_method, xs + 1.0, ys, xt, grid, num_classes=3, num_folds=3,
                   density_cache=cache)        # other data: estimated anew
  assert len(calls) == 9


def test_failed_points_score_nan_and_are_never_picked():
  xs, ys, xt, _ = _shifted_problem(5)
  svm_method = methods.get("SVM")

  def flaky(xs_, ys_, xt_, xq, params, *, num_classes, precision="float64"):
    out = svm_method.fit_predict(xs_, ys_, xt_, xq, params, num_classes=num_classes)
    failed = np.asarray(params["C"]) == 1.0
    return dataclasses.replace(out, labels=np.where(failed[:, None], -1, out.labels),
                               failed=failed)

  method = dataclasses.replace(svm_method, name="flaky", fit_predict=flaky)
  result = selection.select(method, xs, ys, xt, {"C": np.array([1.0, 0.1])}, num_classes=3)
  np.testing.assert_array_equal(result.failed, [True, False])
  for rule in selection.RULES:
    assert np.isnan(result.scores[rule][0]) and np.isfinite(result.scores[rule][1])
    assert result.picks[rule] == 1
  assert selection.pick(np.array([np.nan, np.nan])) == -1
  # Without RV no backward fit runs; the other rules are unchanged.
  calls = []
  counting = dataclasses.replace(
      method, fit_predict=lambda *a, **k: calls.append(1) or flaky(*a, **k))
  cheap = selection.select(counting, xs, ys, xt, {"C": np.array([1.0, 0.1])}, num_classes=3,
                           rules=("IWCV", "DEV"))
  assert len(calls) == 5 and set(cheap.scores) == {"IWCV", "DEV"}
  np.testing.assert_array_equal(cheap.scores["DEV"], result.scores["DEV"])
  assert (cheap.reverse_labels == -1).all()


def test_kde_weights_option():
  xs, ys, xt, _ = _shifted_problem(7)
  result = selection.select(methods.get("SVM"), xs, ys, xt, {"C": np.array([1.0])},
                            num_classes=3, num_folds=3, weight_estimator="kde",
                            kde_bandwidth=2.0, rules=("IWCV",))
  for f in range(3):
    tr, va = np.flatnonzero(result.folds != f), np.flatnonzero(result.folds == f)
    np.testing.assert_allclose(result.weights[va],
                               selection.kde_density_ratio(xs[tr], xt, xs[va], bandwidth=2.0))
  assert result.options["weight_estimator"] == "kde" and result.options["rules"] == ("IWCV",)


def test_select_names_bad_arguments():
  xs, ys, xt, _ = _shifted_problem(6)
  method = methods.get("SVM")
  with pytest.raises(ValueError, match="weight_estimator"):
    selection.select(method, xs, ys, xt, num_classes=3, weight_estimator="oracle")
  with pytest.raises(ValueError, match="rules must be a non-empty subset"):
    selection.select(method, xs, ys, xt, num_classes=3, rules=("IWCV", "oracle"))
  with pytest.raises(ValueError, match="ys must hold class indices in \\[0, 2\\)"):
    selection.select(method, xs, ys, xt, num_classes=2)
  with pytest.raises(ValueError, match="same d"):
    selection.select(method, xs, ys, xt[:, :3], num_classes=3)


def test_regret_and_markdown(tmp_path):
  target_mf1 = np.array([0.5, 0.7, 0.7, np.nan, 0.4])
  row = selection.regret_row("SVM", "V->N", target_mf1, {"IWCV": 2, "RV": 4, "DEV": -1})
  assert row.oracle_index == 1 and row.oracle_mf1 == 0.7
  np.testing.assert_allclose([row.regret["IWCV"], row.regret["RV"]], [0.0, 0.3])
  assert np.isnan(row.regret["DEV"])
  other = selection.regret_row("SVM", "N->V", np.array([0.6, 0.5]), {"IWCV": 1, "RV": 0,
                                                                     "DEV": 0})
  path = selection.write_selection_markdown(tmp_path / "selection.md", [row, other],
                                            notes="Grid: C in {0.01, 0.1, 1, 10}.")
  text = path.read_text()
  assert "Grid: C in {0.01, 0.1, 1, 10}." in text
  assert "| V->N | 0.7000 | 0.7000 (0.0000) | 0.4000 (0.3000) | - (-) |" in text
  assert "| N->V | 0.6000 | 0.5000 (0.1000) | 0.6000 (0.0000) | 0.6000 (0.0000) |" in text
  # Mean regrets: IWCV (0 + 0.1) / 2; DEV is NaN where a pick is missing.
  assert "| SVM | 2 | 0.6500 | 0.0500 | 0.1500 | - |" in text


def test_real_v_to_n_smoke(shared):
  """V->N, SVM with two C values: every rule scores every point, the weights are finite."""
  path = lambda db: shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat")  # noqa: E731
  src = cdmer_io.read_feature_file(path("SMIC_VIS"), "SMIC_VIS")
  tgt = cdmer_io.read_feature_file(path("SMIC_NIR"), "SMIC_NIR")
  grid = methods.grid_points({"C": (0.01, 1.0)})
  result = selection.select(methods.get("SVM"), src.features, src.labels - 1, tgt.features, grid,
                            num_classes=3, num_folds=3)
  for rule in selection.RULES:
    assert np.isfinite(result.scores[rule]).all() and 0 <= result.picks[rule] < 2
  assert (result.weights > 0).all() and np.isfinite(result.weights).all()
