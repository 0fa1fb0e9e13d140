r"""Model selection without target labels: scoring a method's grid from ``(xs, ys, xt)`` only.

Every published row of the TGSR paper's Tables II/III picks its hyper-parameters by the best
M-F1 on the *labelled target*, an oracle no user has. This module scores every grid point of any
:class:`tgsr_jax.methods.Method` with rules that never read target labels, picks a point per rule,
and measures how far each pick falls below the oracle (the regret), so a reader sees what the
published numbers are worth.

The driver :func:`select` splits the labelled source into ``k`` stratified folds (deterministic
seed, the same folds for every grid point). For fold ``f`` with source rows ``tr`` (fit) and
``va`` (held out):

* forward fit ``fit_predict(xs[tr], ys[tr], xt, xq=[xs[va]; xt], params)``: predictions of the
  held-out source rows (for IWCV, DEV, source CV) and pseudo-labels ``yt_hat`` of the target;
* backward fit (reverse validation), per grid point, with the roles swapped: the pseudo-labelled
  target is the source, the source the target, ``fit_predict(xt, yt_hat, xs[tr], xq=xs[va])``
  (:func:`tgsr_jax.methods.fit_predict_labellings`: methods that take one labelling per grid
  point fit them all in one call, the others once per distinct pseudo-labelling);
* density ratio ``w(x) = p_t(x) / p_s(x)`` at the held-out rows ``xs[va]``, estimated from
  ``xs[tr]`` and ``xt`` (features only).

Query rows are never used to fit. Every held-out source row gets one out-of-fold prediction,
pseudo-label round trip and weight; each rule pools them over the folds (one score over all
``n_s`` source rows: with 14-26 held-out rows per fold, per-fold M-F1 values are too noisy to
average). The rules, each a ``(G,)`` score, higher = better:

* **IWCV** (Sugiyama, Krauledat & Mueller, JMLR 2007): the importance-weighted held-out score,
  here the weighted M-F1 (``metric='mf1'``, the criterion of Tables II/III; the confusion matrix
  counts each held-out row with its weight ``w_i``); ``'accuracy'`` gives the weighted 0-1 loss
  ``1 - sum_i w_i [y_i != yhat_i] / sum_i w_i`` of the paper and of skada's
  ``ImportanceWeightedScorer`` (whose default scoring is the estimator's weighted accuracy).
* **RV**, reverse (circular) validation (Zhong et al., ECML-PKDD 2010; Bruzzone & Marconcini,
  TPAMI 2010; skada's ``CircularValidation``): the score of the backward predictions of the
  held-out source rows against their true labels (M-F1 by default; skada's default is balanced
  accuracy, ``rv_metric='uar'``). If a grid point's pseudo-labels are all one class, the backward
  model can only predict that class (skada's rule; no backward fit is run).
* **DEV**, deep embedded validation (You et al., ICML 2019; skada's ``DeepEmbeddedValidation``):
  with per-row losses ``l_i`` (here the 0-1 loss, as every method returns labels) and weights
  ``w_i``, the control-variate estimate of the target risk

  .. math::
     R = \overline{w l} + \eta\,\overline{w} - \eta, \qquad
     \eta = -\frac{\widehat{\mathrm{Cov}}(w l, w)}{\widehat{\mathrm{Var}}(w)}

  (unbiased estimators, ``eta = 0`` when ``Var(w) = 0``); the score is ``-R``. The "embedding" of
  the paper is a deep network's feature layer; for these shallow methods it is the input feature
  vector itself (the same features the methods adapt), so DEV's weights are those of IWCV and
  DEV is IWCV's weighted 0-1 loss with a control variate (unnormalised weights).
* **SrcCV**: the plain (unweighted) held-out source score, the baseline that ignores the shift.

The density ratio follows DEV (and skada's DEV): a logistic-regression domain classifier,
``w(x) = (n_tr / n_t) P(target | x) / P(source | x)``, on the raw features (``'logistic'``,
the default). skada's ``ImportanceWeightedScorer`` instead divides two Gaussian kernel density
estimates (``'kde'``, bandwidth 1); at d = 15045 a KDE is ruled by the nearest sample, so it is an
option here, not the default.

A pick is the first grid point (grid order) with the best score, as the oracle takes the first
maximum of the target M-F1; failed grid points score NaN and are never picked. A point fails if
any of its fits fails, so a point valid on the whole source can fail on the smaller folds (e.g. a
subspace dimension above a fold's number of samples) and then cannot be picked.

Where skada's scorers (0.6.0, the tests' reference) differ: they score one train/validation
split (cross-validation averages the splits) where the rules here pool the folds; its
``ImportanceWeightedScorer`` fits the two KDEs on the rows it scores; its ``CircularValidation``
uses the held-out rows as the backward fit's target (``reverse_target='query'`` here); its
``DeepEmbeddedValidation`` splits the rows it scores once more (0.67 / 0.33) for the domain
classifier, and with a loss of shape (m,), as its default cross-entropy returns, multiplies it
by the (m, 1) weights into an (m, m) matrix (a bug; an (m, 1) loss gives You et al.'s estimator,
which :func:`dev_risk` computes). The tests check each pure rule against the scorer on the same
split.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Iterable, Mapping, Sequence

import numpy as np
from sklearn import linear_model
from sklearn import model_selection
from sklearn import neighbors

from subtle_core import atomic
from tgsr_jax import metrics

RULES = ("IWCV", "RV", "DEV", "SrcCV")
METRICS = ("mf1", "accuracy", "uar")
WEIGHT_ESTIMATORS = ("logistic", "kde")
REVERSE_TARGETS = ("train", "query")


# ----------------------------------------------------------------------------- pure pieces


def stratified_folds(y: np.ndarray, num_folds: int = 5, seed: int = 0) -> np.ndarray:
  """The fold of every sample: scikit-learn's shuffled ``StratifiedKFold``.

  Args:
    y: (n,) class indices.
    num_folds: k, at least 2 and at most the size of the smallest class.
    seed: the shuffling seed (the same folds for every grid point and every call).

  Returns:
    (n,) fold index in [0, k) of each sample.
  """
  y = np.asarray(y)
  counts = np.bincount(y) if y.size else np.zeros(0, int)
  smallest = int(counts[counts > 0].min()) if y.size else 0
  if not 2 <= num_folds <= smallest:
    raise ValueError(f"num_folds must be in [2, {smallest}] (the smallest source class has "
                     f"{smallest} samples), got {num_folds}")
  folds = np.empty(len(y), np.int64)
  splitter = model_selection.StratifiedKFold(num_folds, shuffle=True, random_state=seed)
  for f, (_, held_out) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
    folds[held_out] = f
  return folds


def logistic_density_ratio(x_source: np.ndarray, x_target: np.ndarray, x_eval: np.ndarray, *,
                           c: float = 1.0, max_iter: int = 1000,
                           tol: float = 1e-4) -> np.ndarray:
  """``p_t(x) / p_s(x)`` at ``x_eval`` from a logistic-regression domain classifier.

  As skada's ``DeepEmbeddedValidation``: scikit-learn's ``LogisticRegression(C=c)`` (L2 penalty,
  unpenalised intercept, lbfgs) separates the source (label 1) from the target (label 0); by
  Bayes' rule the density ratio is ``(n_s / n_t) P(0 | x) / P(1 | x)``.

  The penalised solution ``w`` lies in the row span of the training samples ``X = U S V^T``,
  so the classifier is fitted on the coordinates ``X V = U S`` (n x r) and applied to
  ``x_eval V = x_eval X^T U S^-1``: the same objective in r <= n instead of d = 15045 variables
  (the same optimum; lbfgs stops on the largest gradient coordinate, which depends on the
  basis, so the two fits agree to the solver's tolerance ``tol``). ``U`` and ``S``
  come from the eigendecomposition of the n x n Gram matrix ``X X^T = U S^2 U^T`` (an SVD of the
  n x d matrix costs ten times more); directions with ``S^2`` below ``1e-10 max S^2`` (rounding
  noise of the Gram matrix, and no weight in the solution) are dropped.

  Args:
    x_source: (n_s, d) source samples the classifier is fitted on.
    x_target: (n_t, d) target samples the classifier is fitted on.
    x_eval: (m, d) where the ratio is evaluated.
    c: inverse L2 regularisation strength of the classifier.
    max_iter: iterations of its lbfgs solver.
    tol: its stopping tolerance (scikit-learn's default 1e-4).

  Returns:
    (m,) density ratios.
  """
  x = np.concatenate([x_source, x_target]).astype(np.float64)
  domain = np.concatenate([np.ones(len(x_source), int), np.zeros(len(x_target), int)])
  eigenvalues, u = np.linalg.eigh(x @ x.T)
  keep = eigenvalues > 1e-10 * eigenvalues.max()
  u, s = u[:, keep], np.sqrt(eigenvalues[keep])
  classifier = linear_model.LogisticRegression(C=c, max_iter=max_iter, tol=tol)
  classifier.fit(u * s, domain)
  proba = classifier.predict_proba((np.asarray(x_eval, np.float64) @ x.T) @ u / s)
  # classes_ = [0 (target), 1 (source)]
  return (len(x_source) / len(x_target)) * proba[:, 0] / proba[:, 1]


def kde_density_ratio(x_source: np.ndarray, x_target: np.ndarray, x_eval: np.ndarray, *,
                      bandwidth: float = 1.0) -> np.ndarray:
  """``p_t(x) / p_s(x)`` at ``x_eval`` from two Gaussian kernel density estimates.

  skada's ``ImportanceWeightedScorer`` default: scikit-learn's ``KernelDensity`` (Gaussian kernel,
  ``bandwidth``) fitted once on each domain; the ratio is ``exp(log p_t - log p_s)``.
  """
  log_ps = neighbors.KernelDensity(bandwidth=bandwidth).fit(x_source).score_samples(x_eval)
  log_pt = neighbors.KernelDensity(bandwidth=bandwidth).fit(x_target).score_samples(x_eval)
  return np.exp(log_pt - log_ps)


def density_ratio(x_source: np.ndarray, x_target: np.ndarray, x_eval: np.ndarray, *,
                  estimator: str = "logistic", c: float = 1.0, max_iter: int = 1000,
                  bandwidth: float = 1.0) -> np.ndarray:
  """:func:`logistic_density_ratio` or :func:`kde_density_ratio`, by ``estimator``."""
  if estimator == "logistic":
    return logistic_density_ratio(x_source, x_target, x_eval, c=c, max_iter=max_iter)
  if estimator == "kde":
    return kde_density_ratio(x_source, x_target, x_eval, bandwidth=bandwidth)
  raise ValueError(f"weight_estimator must be one of {WEIGHT_ESTIMATORS}, got {estimator!r}")


def weighted_confusion(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None,
                       num_classes: int) -> np.ndarray:
  """Weighted confusion matrices (..., C, C): rows true classes, columns predictions.

  Args:
    y_true: (n,) class indices.
    y_pred: (..., n) predicted class indices (a leading grid axis is allowed); -1 counts nowhere.
    weights: (n,) non-negative sample weights, or None for counts.
    num_classes: C.
  """
  eye = np.eye(num_classes)
  true_onehot = eye[np.asarray(y_true)]                                   # (n, C)
  y_pred = np.asarray(y_pred)
  pred_onehot = np.where((y_pred >= 0)[..., None], eye[np.clip(y_pred, 0, None)], 0.0)
  w = np.ones(len(true_onehot)) if weights is None else np.asarray(weights, np.float64)
  return np.einsum("ni,...nj,n->...ij", true_onehot, pred_onehot, w)


def weighted_scores(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None,
                    num_classes: int) -> dict[str, np.ndarray]:
  """Weighted ACC, M-F1 and UAR (each (...,)) as :func:`tgsr_jax.metrics.scores_from_confusion`.

  Each sample counts with its weight in the confusion matrix, so ACC is the weighted accuracy
  (scikit-learn's ``accuracy_score(sample_weight=w)``), M-F1 the macro F1 over all ``C`` classes
  (``f1_score(average='macro', labels=range(C), sample_weight=w, zero_division=0)``) and UAR the
  weighted balanced accuracy. With ``weights=None`` they are the plain scores.
  """
  return metrics.scores_from_confusion(weighted_confusion(y_true, y_pred, weights, num_classes))


_METRIC_KEYS = {"mf1": "mf1", "accuracy": "acc", "uar": "uar"}


def _metric_key(metric: str) -> str:
  if metric not in _METRIC_KEYS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
  return _METRIC_KEYS[metric]


def iwcv_score(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, *,
               num_classes: int, metric: str = "mf1") -> np.ndarray:
  """Importance-weighted validation score (Sugiyama et al. 2007), higher = better.

  Args:
    y_true: (n,) true labels of the held-out source rows.
    y_pred: (G, n) or (n,) their predictions; rows with a -1 score NaN.
    weights: (n,) density ratios ``p_t / p_s`` at those rows (any positive scale).
    num_classes: C.
    metric: 'mf1' (weighted macro F1), 'accuracy' (1 - weighted 0-1 loss) or 'uar'.

  Returns:
    (G,) (or scalar) scores.
  """
  with np.errstate(invalid="ignore", divide="ignore"):   # all-failed rows: NaN below
    score = weighted_scores(y_true, y_pred, weights, num_classes)[_metric_key(metric)]
  return np.where(np.any(np.asarray(y_pred) < 0, axis=-1), np.nan, score)


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """DEV's control-variate estimate of the target risk (You et al. 2019, Algorithm 1).

  ``R = mean(w l) + eta mean(w) - eta`` with ``eta = -Cov(w l, w) / Var(w)`` (both with ``n - 1``
  in the denominator; ``eta = 0`` when ``Var(w) = 0``), exactly as skada's
  ``DeepEmbeddedValidation`` and the authors' code.

  Args:
    losses: (..., n) per-sample validation losses.
    weights: (n,) density ratios ``p_t / p_s`` (unnormalised: E_s[w] = 1).

  Returns:
    (...,) risks (lower = better).
  """
  losses = np.asarray(losses, np.float64)
  w = np.asarray(weights, np.float64)
  n = w.shape[-1]
  weighted = w * losses
  cov = ((weighted - weighted.mean(-1, keepdims=True)) * (w - w.mean())).sum(-1) / (n - 1)
  var_w = np.var(w, ddof=1)
  eta = -cov / var_w if var_w != 0 else np.zeros_like(cov)
  return weighted.mean(-1) + eta * w.mean() - eta


def dev_score(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """DEV with the 0-1 loss of label predictions; ``-risk`` so that higher = better.

  Args:
    y_true: (n,) true labels of the held-out source rows.
    y_pred: (G, n) or (n,) their predictions; rows with a -1 score NaN.
    weights: (n,) density ratios at those rows.
  """
  y_pred = np.asarray(y_pred)
  zero_one = (y_pred != np.asarray(y_true)).astype(np.float64)
  return np.where(np.any(y_pred < 0, axis=-1), np.nan, -dev_risk(zero_one, weights))


def reverse_validation_score(y_true: np.ndarray, y_reverse: np.ndarray, *, num_classes: int,
                             metric: str = "mf1") -> np.ndarray:
  """Score of the backward (target -> source) predictions against the true source labels.

  Args:
    y_true: (n,) true source labels.
    y_reverse: (G, n) or (n,) the backward model's predictions of those rows; -1 scores NaN.
    num_classes: C.
    metric: 'mf1', 'accuracy' or 'uar' (skada's default, balanced accuracy).
  """
  with np.errstate(invalid="ignore", divide="ignore"):
    score = weighted_scores(y_true, y_reverse, None, num_classes)[_metric_key(metric)]
  return np.where(np.any(np.asarray(y_reverse) < 0, axis=-1), np.nan, score)


def pick(scores: np.ndarray) -> int:
  """The first grid point with the best score; NaN never wins; -1 when all are NaN."""
  scores = np.asarray(scores, np.float64)
  if np.all(np.isnan(scores)):
    return -1
  return int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))


# ----------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class Selection:
  """Every rule's score of every grid point, and what they were computed from.

  Attributes:
    params: hyper-parameter name -> (G,) values, as passed.
    scores: rule name -> (G,) score (higher = better; NaN where the point failed).
    picks: rule name -> the picked grid index (-1 if every point failed).
    folds: (n_s,) the source fold of each source row.
    source_labels: (G, n_s) out-of-fold predictions of the source rows (forward fits).
    reverse_labels: (G, n_s) out-of-fold backward predictions of the source rows (RV; -1
      where RV was not asked for).
    weights: (n_s,) out-of-fold density ratios ``p_t / p_s`` of the source rows.
    failed: (G,) whether any forward or backward fit of the point failed.
    options: the settings used (folds, seed, metric, weight estimator, ...), for the outputs.
  """
  params: Mapping[str, np.ndarray]
  scores: dict[str, np.ndarray]
  picks: dict[str, int]
  folds: np.ndarray
  source_labels: np.ndarray
  reverse_labels: np.ndarray
  weights: np.ndarray
  failed: np.ndarray
  options: dict

  def __len__(self) -> int:
    return int(self.source_labels.shape[0])


def _subset(params: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
  return {k: np.asarray(v)[index] for k, v in params.items()}


def _failed(out, num_points: int) -> np.ndarray:
  failed = np.zeros(num_points, bool) if out.failed is None else np.asarray(out.failed, bool)
  return failed | np.any(np.asarray(out.labels) < 0, axis=-1)


def _check_inputs(xs, ys, xt, num_classes):
  xs = np.asarray(xs)
  xt = np.asarray(xt)
  ys = np.asarray(ys)
  if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1]:
    raise ValueError(f"xs and xt must be (n_s, d) and (n_t, d) with the same d, got "
                     f"{xs.shape} and {xt.shape}")
  if ys.shape != (len(xs),):
    raise ValueError(f"ys must be ({len(xs)},) like the rows of xs, got {ys.shape}")
  if not np.issubdtype(ys.dtype, np.integer) or ys.min() < 0 or ys.max() >= num_classes:
    raise ValueError(f"ys must hold class indices in [0, {num_classes}) (num_classes), got "
                     f"values in [{ys.min()}, {ys.max()}]")
  return xs, ys, xt


def select(method, xs: np.ndarray, ys: np.ndarray, xt: np.ndarray,
           params: Mapping[str, np.ndarray] | None = None, *, num_classes: int,
           num_folds: int = 5, seed: int = 0, metric: str = "mf1", rv_metric: str | None = None,
           weight_estimator: str = "logistic", domain_c: float = 1.0,
           domain_max_iter: int = 1000, kde_bandwidth: float = 1.0,
           reverse_target: str = "train", rules: Sequence[str] = RULES,
           precision: str = "float64", density_cache: dict | None = None) -> Selection:
  """Scores every grid point of ``method`` with every label-free rule (module docstring).

  Target labels are not an argument: no rule can read them.

  Args:
    method: a :class:`tgsr_jax.methods.Method`.
    xs: (n_s, d) labelled source samples.
    ys: (n_s,) source class indices.
    xt: (n_t, d) unlabelled target samples.
    params: the grid, name -> (G,) values (``methods.grid_points(method.grid)`` if None).
    num_classes: C.
    num_folds: k of the stratified source folds.
    seed: their shuffling seed.
    metric: IWCV's and SrcCV's weighted score: 'mf1' (default), 'accuracy' (skada) or 'uar'.
    rv_metric: RV's score ('mf1', 'accuracy', 'uar' = skada's balanced accuracy); None: ``metric``.
    weight_estimator: the density ratio of IWCV and DEV: 'logistic' (default; DEV's domain
      classifier) or 'kde' (skada's ImportanceWeightedScorer).
    domain_c: C of the logistic domain classifier.
    domain_max_iter: its lbfgs iterations.
    kde_bandwidth: bandwidth of the KDE estimator.
    reverse_target: the unlabelled target of the backward fit: 'train' (Zhong et al.: the
      fold's training source rows; the held-out rows are only queried) or 'query' (skada: the
      held-out source rows themselves, transductively).
    rules: the rules to score (a subset of :data:`RULES`). RV doubles the fits: per fold, one
      backward fit of every grid point on its own pseudo-labels
      (:func:`tgsr_jax.methods.fit_predict_labellings`: one call for the methods that take a
      labelling per grid point, TSRG and DRLS, else one call per distinct labelling).
    precision: passed to ``fit_predict``.
    density_cache: a dict shared by calls on the same ``xs``, ``ys`` and ``xt`` (every method of
      one experiment): each fold's density ratios are estimated once (they depend on the data,
      folds and weight settings only, not on the method). Keyed by those settings and a
      fingerprint of the arrays, so a call on other data does not reuse them.

  Returns:
    A :class:`Selection`.
  """
  from tgsr_jax import methods as methods_lib  # the methods package imports heavier modules

  xs, ys, xt = _check_inputs(xs, ys, xt, num_classes)
  rv_metric = metric if rv_metric is None else rv_metric
  for name in (metric, rv_metric):
    _metric_key(name)                                   # raises, naming the accepted values
  if weight_estimator not in WEIGHT_ESTIMATORS:
    raise ValueError(f"weight_estimator must be one of {WEIGHT_ESTIMATORS}, got "
                     f"{weight_estimator!r}")
  unknown = [r for r in rules if r not in RULES]
  if unknown or not rules:
    raise ValueError(f"rules must be a non-empty subset of {RULES}, got {tuple(rules)}")
  if reverse_target not in REVERSE_TARGETS:
    raise ValueError(f"reverse_target must be one of {REVERSE_TARGETS}, got {reverse_target!r}")
  params = methods_lib.grid_points(method.grid) if params is None else dict(params)
  sizes = {len(np.atleast_1d(v)) for v in params.values()}
  if len(sizes) > 1:
    raise ValueError(f"every grid axis in params must have the same length G, got {sizes}")
  num_points = sizes.pop() if sizes else 1

  folds = stratified_folds(ys, num_folds, seed)
  n_s, n_t = len(xs), len(xt)
  source_labels = np.full((num_points, n_s), -1, np.int64)
  reverse_labels = np.full((num_points, n_s), -1, np.int64)
  weights = np.zeros(n_s)
  failed = np.zeros(num_points, bool)
  fit = dict(num_classes=num_classes, precision=precision)
  for f in range(num_folds):
    tr = np.flatnonzero(folds != f)
    va = np.flatnonzero(folds == f)
    key = (f, num_folds, seed, weight_estimator, domain_c, domain_max_iter, kde_bandwidth,
           xs.shape, xt.shape, float(np.sum(xs)), float(np.sum(xt)), ys.tobytes())
    cached = None if density_cache is None else density_cache.get(key)
    if cached is None:
      cached = density_ratio(xs[tr], xt, xs[va], estimator=weight_estimator, c=domain_c,
                             max_iter=domain_max_iter, bandwidth=kde_bandwidth)
      if density_cache is not None:
        density_cache[key] = cached
    weights[va] = cached
    forward = method.fit_predict(xs[tr], ys[tr], xt, np.concatenate([xs[va], xt]), params, **fit)
    labels = np.asarray(forward.labels)
    if labels.shape != (num_points, len(va) + n_t):
      raise ValueError(f"{method.name}.fit_predict returned labels of shape {labels.shape}, "
                       f"expected ({num_points}, {len(va) + n_t})")
    forward_failed = _failed(forward, num_points)
    failed |= forward_failed
    source_labels[:, va] = np.where(forward_failed[:, None], -1, labels[:, :len(va)])
    pseudo = labels[:, len(va):]
    # Backward fits, all grid points at once, each on its own pseudo-labels
    # (methods.fit_predict_labellings shares what the labellings have in common).
    live = np.flatnonzero(~forward_failed)
    if "RV" not in rules or live.size == 0:
      continue
    # A backward model trained on one class predicts it everywhere (skada's rule; no fit).
    one_class = np.all(pseudo[live] == pseudo[live, :1], axis=1)
    reverse_labels[np.ix_(live[one_class], va)] = pseudo[live[one_class], :1]
    fitted = live[~one_class]
    if fitted.size == 0:
      continue
    backward_target = xs[tr] if reverse_target == "train" else xs[va]
    sub = _subset(params, fitted) if params else params
    backward = methods_lib.fit_predict_labellings(method, xt, pseudo[fitted], backward_target,
                                                  xs[va], sub, **fit)
    back_failed = _failed(backward, fitted.size)
    failed[fitted] |= back_failed
    reverse_labels[np.ix_(fitted, va)] = np.where(back_failed[:, None], -1,
                                                  np.asarray(backward.labels))
  rule_scores = {
      "IWCV": lambda: iwcv_score(ys, source_labels, weights, num_classes=num_classes,
                                 metric=metric),
      "RV": lambda: reverse_validation_score(ys, reverse_labels, num_classes=num_classes,
                                             metric=rv_metric),
      "DEV": lambda: dev_score(ys, source_labels, weights),
      "SrcCV": lambda: iwcv_score(ys, source_labels, np.ones(n_s), num_classes=num_classes,
                                  metric=metric),
  }
  scores = {r: np.where(failed, np.nan, rule_scores[r]()) for r in RULES if r in rules}
  options = dict(num_folds=num_folds, seed=seed, metric=metric, rv_metric=rv_metric,
                 weight_estimator=weight_estimator, domain_c=domain_c,
                 domain_max_iter=domain_max_iter, kde_bandwidth=kde_bandwidth,
                 reverse_target=reverse_target, dev_loss="zero_one", rules=tuple(scores),
                 precision=precision)
  return Selection(params=params, scores=scores, picks={r: pick(s) for r, s in scores.items()},
                   folds=folds, source_labels=source_labels, reverse_labels=reverse_labels,
                   weights=weights, failed=failed, options=options)


# ----------------------------------------------------------------------------- regret, report


@dataclasses.dataclass(frozen=True)
class RegretRow:
  """One method on one experiment: the oracle and each rule's pick, in target M-F1.

  Attributes:
    method: the method's name.
    experiment: e.g. 'V->N'.
    oracle_index: the grid index of the first target M-F1 maximum.
    oracle_mf1: its target M-F1.
    picks: rule -> picked grid index (-1 if none).
    picked_mf1: rule -> the target M-F1 at the pick (NaN if none).
    regret: rule -> oracle_mf1 - picked_mf1 (>= 0; NaN if none).
  """
  method: str
  experiment: str
  oracle_index: int
  oracle_mf1: float
  picks: dict[str, int]
  picked_mf1: dict[str, float]
  regret: dict[str, float]


def regret_row(method: str, experiment: str, target_mf1: np.ndarray,
               picks: Mapping[str, int]) -> RegretRow:
  """The regret of every rule's pick against the oracle.

  Args:
    method: the method's name.
    experiment: the experiment's name.
    target_mf1: (G,) target M-F1 of every grid point, computed by the caller from the target
      labels AFTER selection (NaN where a point failed).
    picks: rule -> picked grid index (e.g. ``Selection.picks``).
  """
  target_mf1 = np.asarray(target_mf1, np.float64)
  oracle = pick(target_mf1)
  if oracle < 0:
    raise ValueError(f"{method} {experiment}: every grid point's target_mf1 is NaN")
  best = float(target_mf1[oracle])
  picked = {r: (float(target_mf1[i]) if i >= 0 else float("nan")) for r, i in picks.items()}
  return RegretRow(method=method, experiment=experiment, oracle_index=oracle, oracle_mf1=best,
                   picks={r: int(i) for r, i in picks.items()}, picked_mf1=picked,
                   regret={r: best - v for r, v in picked.items()})


def _cell(value: float) -> str:
  return "-" if np.isnan(value) else f"{value:.4f}"


def selection_markdown(rows: Sequence[RegretRow], *, rules: Iterable[str] | None = None,
                       title: str = "Model selection without target labels",
                       notes: str = "") -> str:
  """``selection.md``: per method, the oracle and each rule's pick; then the mean regrets.

  Args:
    rows: one :class:`RegretRow` per (method, experiment), in the order to print.
    rules: the rule columns (default: those of the first row).
    title: the level-1 heading.
    notes: markdown placed under the title (the settings, the grids).

  Returns:
    The markdown text.
  """
  rows = list(rows)
  rules = list(rules) if rules is not None else (list(rows[0].picks) if rows else list(RULES))
  lines = [f"# {title}", ""]
  if notes:
    lines += [notes.strip(), ""]
  lines += [
      "Oracle: the first grid point with the best target M-F1 (how Tables II/III were picked). "
      "Each rule's cell is the target M-F1 at its pick, then its regret (oracle - pick) in "
      "brackets; no rule reads target labels.", ""]
  methods_in_order = list(dict.fromkeys(r.method for r in rows))
  lines += ["## Mean regret (target M-F1) per method", "",
            "| method | experiments | oracle M-F1 | " + " | ".join(rules) + " |",
            "|---|---|---|" + "---|" * len(rules)]
  for name in methods_in_order:
    mine = [r for r in rows if r.method == name]
    oracle = np.mean([r.oracle_mf1 for r in mine])
    means = [np.mean([r.regret.get(rule, np.nan) for r in mine]) for rule in rules]
    lines.append(f"| {name} | {len(mine)} | {_cell(oracle)} | "
                 + " | ".join(_cell(m) for m in means) + " |")
  for name in methods_in_order:
    lines += ["", f"## {name}", "",
              "| experiment | oracle M-F1 | " + " | ".join(rules) + " |",
              "|---|---|" + "---|" * len(rules)]
    for r in (r for r in rows if r.method == name):
      cells = [f"{_cell(r.picked_mf1.get(rule, np.nan))} ({_cell(r.regret.get(rule, np.nan))})"
               for rule in rules]
      lines.append(f"| {r.experiment} | {_cell(r.oracle_mf1)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_selection_markdown(path: str | os.PathLike, rows: Sequence[RegretRow],
                             **kwargs) -> pathlib.Path:
  """Writes :func:`selection_markdown` to ``path`` atomically."""
  return atomic.write_text(path, selection_markdown(rows, **kwargs))
