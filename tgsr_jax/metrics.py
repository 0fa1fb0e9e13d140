"""Classification scores used by the CDMER protocol, as pure JAX functions (vmappable)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(y_true: jax.Array, y_pred: jax.Array, num_classes: int) -> jax.Array:
  """Integer counts (C, C): rows are true classes, columns predicted classes."""
  t = jax.nn.one_hot(y_true, num_classes, dtype=jnp.int32)
  p = jax.nn.one_hot(y_pred, num_classes, dtype=jnp.int32)
  return t.T @ p


def scores_from_confusion(conf: jax.Array) -> dict[str, jax.Array]:
  """ACC, M-F1 and UAR from a confusion matrix (..., C, C).

  * ACC: trace / total.
  * M-F1: mean over all classes of ``2 TP / (2 TP + FP + FN)``; a class never predicted (and so
    with TP = 0) scores 0, as in the TGSR paper's evaluation code.
  * UAR: mean recall over the classes present in ``y_true``.

  Works on NumPy arrays too (then in float64 on the host), which is how the sweep scores its
  integer confusion matrices exactly.
  """
  xp = np if isinstance(conf, np.ndarray) else jnp
  conf = conf.astype(xp.float64 if xp is np else jnp.result_type(float))
  tp = xp.diagonal(conf, axis1=-2, axis2=-1)
  predicted = conf.sum(axis=-2)
  actual = conf.sum(axis=-1)
  denom = predicted + actual
  f1 = xp.where(denom > 0, 2.0 * tp / xp.where(denom > 0, denom, 1.0), 0.0)
  present = actual > 0
  recall = xp.where(present, tp / xp.where(present, actual, 1.0), 0.0)
  return {
      "acc": tp.sum(axis=-1) / conf.sum(axis=(-2, -1)),
      "mf1": f1.mean(axis=-1),
      "uar": recall.sum(axis=-1) / xp.maximum(present.sum(axis=-1), 1),
  }


def classification_scores(y_true: jax.Array, y_pred: jax.Array, num_classes: int) -> dict[str, jax.Array]:
  """ACC, M-F1, UAR and the confusion matrix of integer labels in [0, num_classes)."""
  conf = confusion_matrix(y_true, y_pred, num_classes)
  return {**scores_from_confusion(conf), "confusion": conf}
