"""Evaluation metrics: expression accuracy, landmark NME, trace-norm decrease rates.

All functions are pure functions of arrays (NumPy or JAX) and work under `jax.jit`.

Landmark conventions (the 68-point iBUG / 300-W mark-up of `subtle_core.faces.ibug`, 0-based):
  * right eye = points 36-41, left eye = points 42-47 (the subject's right / left);
  * the inter-pupil distance is the distance between the two eye centres, each the mean of its
    six eye points;
  * the inter-ocular distance is the distance between the outer eye corners 36 and 45.

The normalised mean error of one face is

  NME = (1 / 68) * sum_i ||p_i - g_i||_2 / d,

with p the prediction, g the ground truth and d the normalising distance of the ground truth.
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from subtle_core.faces.ibug import (LEFT_EYE, LEFT_EYE_OUTER_CORNER, NUM_LANDMARKS, RIGHT_EYE,
                                    RIGHT_EYE_OUTER_CORNER)


def accuracy(logits, labels):
  """Fraction of samples whose arg-max class equals the label.

  Args:
    logits: (N, C) class scores.
    labels: (N,) integer labels.

  Returns:
    Scalar accuracy in [0, 1].
  """
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def macro_f1(logits, labels) -> float:
  """Macro-F1 of the arg-max class over the classes in the labels or predictions.

  scikit-learn's ``f1_score(average='macro')``, as the hand-crafted rows of Table 5 are scored
  (a class predicted but never true scores 0). On the host (evaluation).
  """
  # Imported here: importing mtl_flax loads no scipy (tests/test_core_imports.py).
  from sklearn import metrics as sk_metrics  # pylint: disable=import-outside-toplevel
  predictions = np.asarray(logits).argmax(axis=-1).reshape(-1)
  return float(sk_metrics.f1_score(np.asarray(labels).reshape(-1), predictions, average="macro",
                                   zero_division=0))


def _as_points(landmarks):
  landmarks = jnp.asarray(landmarks)
  if landmarks.shape[-1] != 2:
    landmarks = landmarks.reshape(landmarks.shape[:-1] + (-1, 2))
  if landmarks.shape[-2] != NUM_LANDMARKS:
    raise ValueError(
        f"landmarks: expected {NUM_LANDMARKS} (x, y) points (shape (..., 68, 2) or (..., 136)), "
        f"got shape {tuple(landmarks.shape)}")
  return landmarks


def inter_pupil_distance(landmarks):
  """Distance between the eye centres (means of points 36-41 and 42-47).

  Args:
    landmarks: (..., 68, 2) or (..., 136) ground-truth points.

  Returns:
    (...,) distances.
  """
  points = _as_points(landmarks)
  right = jnp.mean(points[..., RIGHT_EYE, :], axis=-2)
  left = jnp.mean(points[..., LEFT_EYE, :], axis=-2)
  return jnp.linalg.norm(right - left, axis=-1)


def inter_ocular_distance(landmarks):
  """Distance between the outer eye corners (points 36 and 45).

  Args:
    landmarks: (..., 68, 2) or (..., 136) ground-truth points.

  Returns:
    (...,) distances.
  """
  points = _as_points(landmarks)
  return jnp.linalg.norm(
      points[..., RIGHT_EYE_OUTER_CORNER, :] - points[..., LEFT_EYE_OUTER_CORNER, :], axis=-1)


def _nme(predictions, targets, distance):
  pred = _as_points(predictions)
  true = _as_points(targets)
  per_point = jnp.linalg.norm(pred - true, axis=-1)
  return jnp.mean(per_point, axis=-1) / distance


def inter_pupil_nme(predictions, targets, *, reduce=True):
  """Mean point-to-point error normalised by the inter-pupil distance.

  Args:
    predictions: (N, 68, 2) or (N, 136) predicted points.
    targets: ground-truth points of the same shape.
    reduce: average over the faces (True) or return the per-face errors.

  Returns:
    Scalar mean NME, or (N,) per-face NMEs.
  """
  errors = _nme(predictions, targets, inter_pupil_distance(targets))
  return jnp.mean(errors) if reduce else errors


def inter_ocular_nme(predictions, targets, *, reduce=True):
  """Mean point-to-point error normalised by the outer-eye-corner distance.

  Args:
    predictions: (N, 68, 2) or (N, 136) predicted points.
    targets: ground-truth points of the same shape.
    reduce: average over the faces (True) or return the per-face errors.

  Returns:
    Scalar mean NME, or (N,) per-face NMEs.
  """
  errors = _nme(predictions, targets, inter_ocular_distance(targets))
  return jnp.mean(errors) if reduce else errors


def landmark_nme(predictions, targets, *, normalisation="inter_pupil", reduce=True):
  """Dispatches to `inter_pupil_nme` or `inter_ocular_nme` by name."""
  if normalisation == "inter_pupil":
    return inter_pupil_nme(predictions, targets, reduce=reduce)
  if normalisation == "inter_ocular":
    return inter_ocular_nme(predictions, targets, reduce=reduce)
  raise ValueError(
      f"normalisation: expected 'inter_pupil' or 'inter_ocular', got {normalisation!r}")


def decrease_rates(initial: Mapping[str, float], optimised: Mapping[str, float]) -> dict:
  """Per-layer trace-norm decrease rate, optimised norm / initial norm (Fig. 3a-b).

  A rate below one means training made the stacked task kernels of that layer more
  correlated (lower rank), i.e. the layer became more shared.

  Args:
    initial: layer name -> trace norm of the stacked kernels at initialisation.
    optimised: layer name -> trace norm after training (same names).

  Returns:
    Layer name -> rate, in the order of `initial`.
  """
  missing = set(initial) ^ set(optimised)
  if missing:
    raise ValueError(
        f"decrease_rates: initial and optimised norms must name the same layers; differing: "
        f"{sorted(missing)}")
  rates = {}
  for name, start in initial.items():
    start = float(start)
    if not start > 0:
      raise ValueError(f"decrease_rates: initial trace norm of layer {name!r} is {start}, "
                       "expected > 0")
    rates[name] = float(optimised[name]) / start
  return rates


def mean_and_std(values) -> tuple[float, float]:
  """Mean and (population) standard deviation of a list of fold scores."""
  values = np.asarray(values, dtype=np.float64)
  return float(values.mean()), float(values.std())
