"""The task kinds of the multi-task networks, each described once.

Everything that differs between tasks lives in its `Task` entry: the key of its targets in a
training batch, the size and output squashing of its head, its training loss and logged metrics,
its evaluation metrics, its augmentation, and the dataset sources it reads. Code elsewhere loops
over `model.tasks` and asks the registry instead of branching on task names.

Registry order matters: a task's position in `TASKS` is its stream index in the data pipeline
(`pipeline.epoch_batch_indices(..., stream=index)`), so it is part of every run's RNG derivation.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_flax import metrics as metrics_lib
from mtl_flax.data import augment

Array = jax.Array


def landmark_loss(predictions: Array, targets: Array, kind: str) -> Array:
  """Per-face L1 (sum |d|) or L2 (sum d^2) over the 136 coordinates, mean over faces."""
  diff = predictions - targets
  if kind == "l1":
    return jnp.mean(jnp.sum(jnp.abs(diff), axis=-1))
  if kind == "l2":
    return jnp.mean(jnp.sum(jnp.square(diff), axis=-1))
  raise ValueError(f"landmark_loss: expected 'l1' or 'l2', got {kind!r}")


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """Static choices of the task losses and logged metrics (from the run's settings)."""
  landmark_loss: str = "l1"
  nme_normalisation: str = "inter_pupil"


@dataclasses.dataclass(frozen=True)
class Task:
  """One task kind.

  Attributes:
    name: the task's name in configs (`config.tasks`, `config.data.<name>`).
    index: its stream index in the data pipeline (its position in `TASKS`).
    batch_key: key of its targets in a training batch.
    reader_sources: `data.<name>.source` values that read a dataset root ('synthetic' aside).
    synthetic_seed_offset: the synthetic generator runs with `seed + offset`.
    head_size: (num_classes, num_landmarks) -> outputs of the head.
    head_output: raw head outputs -> predictions (identity, or a sigmoid into (0, 1)).
    loss: (float32 predictions, targets, LossOptions) -> (loss, logged terms).
    evaluate: (all test predictions, all test targets, nme_normalisation) -> metrics (NumPy).
    augment: (image, target, rng, expression_flip, landmark_augment) -> (image, target).
    batch_targets: gathered targets -> the batch's array (dtype and shape).
    synthetic: (num, image_size, num_classes, seed, variant) -> (images, targets, subjects) from
      the generators of `mtl_flax.data.synthetic` (the seed already offset; `variant` one of
      `synthetic.SYNTHETIC_VARIANTS`, the run's `data.synthetic`).
    check_targets: (all targets, num_classes) -> None, or a ValueError naming the field.
  """
  name: str
  index: int
  batch_key: str
  reader_sources: tuple[str, ...]
  synthetic_seed_offset: int
  head_size: Callable[[int, int], int]
  head_output: Callable[[Array], Array]
  loss: Callable
  evaluate: Callable
  augment: Callable
  batch_targets: Callable
  synthetic: Callable
  check_targets: Callable


def _expression_loss(logits, labels, options: LossOptions):
  del options
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return ce, {"expression_ce": ce, "expression_accuracy": metrics_lib.accuracy(logits, labels)}


def _landmark_loss(pred, points, options: LossOptions):
  lm = landmark_loss(pred, points, options.landmark_loss)
  nme = metrics_lib.landmark_nme(jax.lax.stop_gradient(pred), points,
                                 normalisation=options.nme_normalisation)
  return lm, {"landmark_loss": lm, "landmark_nme": nme}


def _expression_metrics(logits, labels, nme_normalisation):
  del nme_normalisation
  return {"expression_accuracy": float(metrics_lib.accuracy(logits, labels)),
          "expression_mf1": metrics_lib.macro_f1(logits, labels)}


def _landmark_metrics(pred, points, nme_normalisation):
  true = points.reshape(len(pred), -1)
  return {"landmark_nme": float(metrics_lib.landmark_nme(pred, true,
                                                         normalisation=nme_normalisation)),
          "landmark_nme_inter_pupil": float(metrics_lib.inter_pupil_nme(pred, true)),
          "landmark_nme_inter_ocular": float(metrics_lib.inter_ocular_nme(pred, true))}


def _augment_expression(image, label, rng, expression_flip, landmark_augment):
  del landmark_augment
  return augment.augment_expression(image, rng, flip_probability=expression_flip), label


def _augment_landmarks(image, points, rng, expression_flip, landmark_augment):
  del expression_flip
  return augment.augment_landmarks(image, points, rng, landmark_augment)


def _synthetic():
  # Imported lazily: only runs on the synthetic data need the generator.
  from mtl_flax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic


def check_synthetic_variant(field: str, variant) -> None:
  """Raises ValueError naming `field` unless `variant` is a synthetic data variant."""
  variants = _synthetic().SYNTHETIC_VARIANTS
  if variant not in variants:
    raise ValueError(f"{field} (set by data.synthetic): unknown synthetic data variant "
                     f"{variant!r}; expected one of {', '.join(map(repr, variants))} "
                     "(docs/synthetic_mtl.md)")


def _synthetic_expression(num, image_size, num_classes, seed, variant="independent"):
  check_synthetic_variant("data.expression.synthetic", variant)
  if variant == "independent":
    images, labels, subjects = _synthetic().make_expression_dataset(
        num, num_classes=num_classes, image_size=image_size, seed=seed, domain="A")
  else:  # 'planted' and 'control' share the expression data
    images, labels, subjects, _ = _synthetic().make_planted_expression_dataset(
        num, num_classes=num_classes, image_size=image_size, seed=seed, domain="A")
  return np.asarray(images), np.asarray(labels, np.int32), np.asarray(subjects, np.int32)


def _synthetic_landmarks(num, image_size, num_classes, seed, variant="independent"):
  check_synthetic_variant("data.landmarks.synthetic", variant)
  if variant == "independent":
    images, points, subjects = _synthetic().make_landmark_dataset(
        num, image_size=image_size, seed=seed, domain="B", return_subjects=True)
  else:
    images, points, subjects, _ = _synthetic().make_planted_landmark_dataset(
        num, num_classes=num_classes, image_size=image_size, seed=seed, domain="B",
        control=variant == "control")
  return np.asarray(images), np.asarray(points, np.float32), np.asarray(subjects, np.int32)


def _check_labels(labels, num_classes):
  labels = np.asarray(labels)
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"expression labels span [{labels.min()}, {labels.max()}], outside "
                     f"[0, model.num_classes={num_classes})")


EXPRESSION = Task(
    name="expression", index=0, batch_key="labels", reader_sources=("image_folder",),
    synthetic_seed_offset=0, head_size=lambda num_classes, num_landmarks: num_classes,
    head_output=lambda out: out, loss=_expression_loss, evaluate=_expression_metrics,
    augment=_augment_expression, batch_targets=lambda t: np.asarray(t).astype(np.int32),
    synthetic=_synthetic_expression, check_targets=_check_labels)
LANDMARKS = Task(
    name="landmarks", index=1, batch_key="landmarks", reader_sources=("300w",),
    synthetic_seed_offset=1, head_size=lambda num_classes, num_landmarks: 2 * num_landmarks,
    head_output=jax.nn.sigmoid, loss=_landmark_loss, evaluate=_landmark_metrics,
    augment=_augment_landmarks,
    batch_targets=lambda t: np.asarray(t).reshape(len(t), -1).astype(np.float32),
    synthetic=_synthetic_landmarks, check_targets=lambda points, num_classes: None)

TASKS: dict[str, Task] = {task.name: task for task in (EXPRESSION, LANDMARKS)}
NAMES = tuple(TASKS)


def get(name: str) -> Task:
  """The registered task `name`; a ValueError naming the known ones otherwise."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {NAMES}")
  return TASKS[name]
