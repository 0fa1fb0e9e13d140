"""Evaluation of the stacked networks and the paper's Fig. 3 plots.

* `evaluate`: expression accuracy and landmark NME (inter-pupil and inter-ocular) on the test
  sets, each task's test set in its own slot of the stacked network, plus penultimate features;
  a test set with named subsets (`datasets.SubsetTaskData`, e.g. the 300-W protocol's common /
  challenging / full) adds every metric per subset (`subset_metrics`: `landmark_nme_common`,
  `landmark_nme_inter_pupil_challenging`, ...).
* `plot_decrease_rates` (Fig. 3a-b): the per-layer trace-norm decrease rate (optimised /
  initial) of one or more regularisers.
* `plot_embeddings` (Fig. 3c): a 2-D embedding (PCA or t-SNE) of both datasets' features, one
  panel per run (e.g. without and with ADA).
"""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mtl_flax import tasks as tasks_lib
from subtle_core import atomic


def preprocess(images):
  """uint8 images -> float32 in [-1, 1] (the training input scaling)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def make_eval_step(model):
  """`eval_step(state, images (T, B, ...)) -> (features (T, B, D), outputs)` without updates."""
  def eval_step(state, images):
    features, outputs, _ = model.apply(
        {"params": state["params"], "batch_stats": state["batch_stats"]}, preprocess(images),
        train=False)
    return features, tuple(o.astype(jnp.float32) for o in outputs)
  return eval_step


def evaluate(eval_step, state, test: dict, tasks, *, batch_size: int, mesh: Mesh | None = None,
             nme_normalisation: str = "inter_pupil", max_features: int = 0):
  """Runs every test set once and returns its metrics and (some) features.

  Task t's test set goes through slot t; shorter test sets are padded and the padding masked,
  so the stacked (and cross-stitched) networks see the layout of training.

  Args:
    eval_step: from `make_eval_step` (jitted).
    state: the train state.
    test: task -> `pipeline.TaskData`.
    tasks: the model's task order.
    batch_size: per task (rounded up to a multiple of the devices).
    mesh: the data mesh (images sharded on the batch axis); None = default device.
    nme_normalisation: 'inter_pupil' or 'inter_ocular' for `landmark_nme`.
    max_features: keep at most this many feature rows per task.

  Returns:
    (metrics dict, task -> (n, D) features).
  """
  n = 1 if mesh is None else mesh.devices.size
  batch_size = -(-batch_size // n) * n
  sharding = None if mesh is None else NamedSharding(mesh, P(None, "data"))
  num_batches = max(-(-len(test[t]) // batch_size) for t in tasks)
  predictions, feats = {t: [] for t in tasks}, {t: [] for t in tasks}
  for b in range(num_batches):
    images, valids = [], []
    for task in tasks:
      idx = b * batch_size + np.arange(batch_size)
      valid = idx < len(test[task])
      images.append(test[task].images[np.where(valid, idx, 0)])
      valids.append(valid)
    stacked = np.stack(images)
    stacked = jax.device_put(stacked, sharding) if sharding is not None else stacked
    features, outputs = jax.device_get(eval_step(state, stacked))
    for t, task in enumerate(tasks):
      v = valids[t]
      predictions[task].append(outputs[t][v])
      if sum(len(f) for f in feats[task]) < max_features:
        feats[task].append(features[t][v])
  out = {}
  for task in tasks_lib.NAMES:  # registry order: the metrics' order in summaries
    if task in tasks:
      predicted = np.concatenate(predictions[task])
      out.update(tasks_lib.get(task).evaluate(predicted, test[task].targets, nme_normalisation))
      subsets = getattr(test[task], "subsets", None)
      if subsets:
        out.update(subset_metrics(task, predicted, test[task].targets, subsets,
                                  nme_normalisation))
  features = {t: np.concatenate(f)[:max_features] if f else np.zeros((0, 0), np.float32)
              for t, f in feats.items()}
  return out, features


def subset_metrics(task: str, predictions, targets, subsets: dict,
                   nme_normalisation: str = "inter_pupil") -> dict:
  """A task's evaluation metrics on each named subset of its test set.

  Args:
    task: the task name (its registry entry computes the metrics).
    predictions: (N, ...) predictions of the whole test set, in its order.
    targets: (N, ...) its targets.
    subsets: subset name -> indices into the test set.
    nme_normalisation: as in `evaluate`.

  Returns:
    `{metric}_{subset}` -> value, e.g. 'landmark_nme_inter_pupil_common' (the metric of the
    subset's faces, a mean over them: 'full' is not the mean of the other subsets' means).

  Raises:
    ValueError: a subset is empty or indexes outside the test set (named).
  """
  kind = tasks_lib.get(task)
  predictions, targets = np.asarray(predictions), np.asarray(targets)
  out = {}
  for name, indices in subsets.items():
    indices = np.asarray(indices, np.int64)
    if not len(indices) or indices.min() < 0 or indices.max() >= len(targets):
      raise ValueError(f"{task} test subset {name!r}: {len(indices)} indices, expected a "
                       f"non-empty selection of the {len(targets)} test samples")
    metrics = kind.evaluate(predictions[indices], targets[indices], nme_normalisation)
    out.update({f"{key}_{name}": value for key, value in metrics.items()})
  return out


# --------------------------------------------------------------------------- plots


def _save(fig, path):
  with atomic.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format=pathlib.Path(path).suffix[1:] or "png")


def plot_decrease_rates(rates: dict, path) -> None:
  """Writes Fig. 3a-b (:func:`mtl_flax.plots.decrease_rates_figure`) to ``path`` atomically.

  Args:
    rates: legend label (e.g. 'LAF') -> {layer name: rate}, layers in forward order.
    path: output PNG.
  """
  from mtl_flax import plots  # noqa: PLC0415  (plots imports this module; matplotlib is lazy)
  _save(plots.decrease_rates_figure(rates), path)


def embed_2d(features: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
  """2-D embedding of (N, D) features: PCA (via SVD) or t-SNE (scikit-learn)."""
  x = np.asarray(features, np.float64)
  x = x - x.mean(axis=0)
  if method == "pca":
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    if out.shape[1] < 2:
      out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out
  if method == "tsne":
    from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
  raise ValueError(f"embedding method: expected 'pca' or 'tsne', got {method!r}")


def plot_embeddings(panels: dict, path, *, method: str = "pca",
                    labels=("dataset A", "dataset B"), seed: int = 0) -> None:
  """Writes Fig. 3c (:func:`mtl_flax.plots.embeddings_figure`) to ``path`` atomically.

  Args:
    panels: panel title (e.g. 'without ADA') -> (features_a (N, D), features_b (M, D)).
    path: output PNG.
    method: 'pca' or 'tsne'.
    labels: legend names of the two datasets.
    seed: t-SNE seed.
  """
  from mtl_flax import plots  # noqa: PLC0415
  _save(plots.embeddings_figure(panels, labels=tuple(labels), method=method, seed=seed), path)


def domain_separability(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Distance between the two datasets' feature means over the mean within-dataset spread.

  A scalar companion to Fig. 3c: ADA should lower it.
  """
  fa = np.asarray(features_a, np.float64)
  fb = np.asarray(features_b, np.float64)
  spread = 0.5 * (np.sqrt(fa.var(axis=0).sum()) + np.sqrt(fb.var(axis=0).sum()))
  return float(np.linalg.norm(fa.mean(axis=0) - fb.mean(axis=0)) / max(spread, 1e-12))
