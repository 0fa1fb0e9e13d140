"""Batching, per-task deterministic batch streams and subject-independent splits.

Batches are a pure function of (seed, task, step): each task walks through its data in epochs,
every epoch a fresh permutation drawn from (seed, task, epoch). A run resumed at step s therefore
sees exactly the batches an uninterrupted run would have seen, with no iterator state to save.

Training takes its batches from `device_pipeline.HostBatches` (the same samples in the same
order as `train_batch(..., augmentation=False)`, gathered without a Python loop over images)
and augments them inside the jitted step (`device_augment`). `train_batch` with
``augmentation=True`` is the host-side NumPy / OpenCV version of that augmentation, one image at
a time with a generator seeded by (seed, task, step, position): the reference the device
augmentation is tested against and the baseline of `benchmarks/mtl_input.py`; no training run
uses it.

A training batch for tasks ('expression', 'landmarks') is the dict
  images:    (T, B, S, S, 3) uint8, slot t holding task t's images,
  labels:    (B,) int32 expression labels        (when 'expression' is a task),
  landmarks: (B, 136) float32 normalised (x, y)   (when 'landmarks' is a task).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from mtl_flax import tasks as tasks_lib
from mtl_flax.data import augment

TASKS = tasks_lib.NAMES


@dataclasses.dataclass
class TaskData:
  """In-memory data of one task.

  Attributes:
    images: (N, S, S, 3) uint8.
    targets: (N,) int32 labels (expression) or (N, 68, 2) float32 normalised landmarks.
    subjects: optional (N,) int32 subject ids (for subject-independent splits).
  """
  images: np.ndarray
  targets: np.ndarray
  subjects: np.ndarray | None = None

  def __post_init__(self):
    if len(self.images) != len(self.targets):
      raise ValueError(f"TaskData: {len(self.images)} images but {len(self.targets)} targets")
    if self.images.ndim != 4 or self.images.shape[-1] != 3:
      raise ValueError(f"TaskData: images must be (N, S, S, 3), got {self.images.shape}")

  def __len__(self):
    return len(self.images)

  def subset(self, indices) -> "TaskData":
    indices = np.asarray(indices)
    return TaskData(self.images[indices], self.targets[indices],
                    None if self.subjects is None else self.subjects[indices])


def _task_index(task: str) -> int:
  return tasks_lib.get(task).index


def epoch_batch_indices(num: int, batch_size: int, step: int, *, seed: int,
                        stream: int = 0) -> np.ndarray:
  """Indices of batch `step` of an epoch-wise shuffled stream over `num` samples.

  Position p = step * B + j of the stream is element p % num of epoch p // num's permutation,
  each drawn from (seed, stream, epoch); batches may straddle two epochs.

  Args:
    num: number of samples (> 0).
    batch_size: B.
    step: batch number (>= 0).
    seed: stream seed.
    stream: an extra seed component (e.g. the task index).

  Returns:
    (B,) int64 indices.
  """
  if num <= 0:
    raise ValueError("epoch_batch_indices: the dataset is empty")
  positions = step * batch_size + np.arange(batch_size)
  epochs = positions // num
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, stream, int(epoch)]).permutation(num)
    mask = epochs == epoch
    out[mask] = perm[positions[mask] % num]
  return out


def _sample_rng(seed, task_index, step, position):
  return np.random.default_rng([seed, 1000 + task_index, step, position])


def task_batch(task: str, data: TaskData, indices: np.ndarray, *, seed: int, step: int,
               augmentation: bool, landmark_augment: augment.LandmarkAugment,
               expression_flip: float = 0.5):
  """Gathers (and augments) one task's samples.

  Returns:
    (images (B, S, S, 3) uint8, targets) with targets (B,) int32 labels or (B, 136) float32.
  """
  kind = tasks_lib.get(task)
  t = kind.index
  images = data.images[indices]
  targets = data.targets[indices]
  if augmentation:
    images = images.copy()
    targets = np.array(targets, copy=True)
    for j in range(len(indices)):
      rng = _sample_rng(seed, t, step, j)
      images[j], targets[j] = kind.augment(images[j], targets[j], rng, expression_flip,
                                           landmark_augment)
  return images, kind.batch_targets(targets)


def train_batch(step: int, datasets: dict, tasks: Sequence[str], batch_size: int, *, seed: int,
                augmentation: bool = True,
                landmark_augment: augment.LandmarkAugment = augment.LandmarkAugment(),
                expression_flip: float = 0.5) -> dict:
  """Batch number `step`, augmented on the host (a pure function of its arguments).

  Training does not call this (see the module docstring); it is the host-side reference.

  Args:
    step: batch number.
    datasets: task name -> `TaskData`.
    tasks: the task order (slot t of `images` is tasks[t]).
    batch_size: B per task.
    seed: data seed.
    augmentation: apply the random augmentation.
    landmark_augment: landmark augmentation ranges.
    expression_flip: flip probability of expression images.

  Returns:
    The batch dict described in the module docstring.
  """
  batch = {}
  images = []
  for task in tasks:
    data = datasets[task]
    idx = epoch_batch_indices(len(data), batch_size, step, seed=seed, stream=_task_index(task))
    imgs, targets = task_batch(task, data, idx, seed=seed, step=step, augmentation=augmentation,
                               landmark_augment=landmark_augment,
                               expression_flip=expression_flip)
    images.append(imgs)
    batch[tasks_lib.get(task).batch_key] = targets
  batch["images"] = np.stack(images)
  return batch


def train_batches(datasets: dict, tasks: Sequence[str], batch_size: int, *, seed: int,
                  start_step: int = 0, **kwargs) -> Iterator[dict]:
  """Infinite stream of `train_batch(step, ...)` from `start_step` on."""
  step = start_step
  while True:
    yield train_batch(step, datasets, tasks, batch_size, seed=seed, **kwargs)
    step += 1


def subject_kfold(subjects, num_folds: int, *, seed: int = 0) -> list:
  """Subject-independent k-fold split: every subject's samples fall in exactly one test fold.

  Subjects are shuffled with `seed` and dealt into `num_folds` groups of (nearly) equal subject
  count.

  Args:
    subjects: (N,) subject id of each sample.
    num_folds: k (>= 2, at most the number of distinct subjects).
    seed: shuffle seed.

  Returns:
    List of k (train_indices, test_indices) pairs of sorted int64 arrays.
  """
  subjects = np.asarray(subjects)
  unique = np.unique(subjects)
  if num_folds < 2:
    raise ValueError(f"num_folds must be >= 2, got {num_folds}")
  if len(unique) < num_folds:
    raise ValueError(f"subject_kfold: {len(unique)} subjects cannot fill {num_folds} "
                     "subject-independent folds")
  order = np.random.default_rng(seed).permutation(unique)
  folds = []
  for group in np.array_split(order, num_folds):
    test = np.isin(subjects, group)
    folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
  return folds


def split_by_subject(subjects, test_fraction: float, *, seed: int = 0):
  """Holds out a random `test_fraction` of the subjects; returns (train_idx, test_idx)."""
  subjects = np.asarray(subjects)
  unique = np.random.default_rng(seed).permutation(np.unique(subjects))
  num_test = int(round(len(unique) * test_fraction))
  if not 0 < num_test < len(unique):
    raise ValueError(f"split_by_subject: test_fraction {test_fraction} of {len(unique)} subjects "
                     "leaves no training or no test subject")
  test = np.isin(subjects, unique[:num_test])
  return np.flatnonzero(~test), np.flatnonzero(test)


def split_random(num: int, test_fraction: float, *, seed: int = 0):
  """Random sample-level split; returns (train_idx, test_idx) sorted."""
  perm = np.random.default_rng(seed).permutation(num)
  num_test = int(round(num * test_fraction))
  if not 0 < num_test < num:
    raise ValueError(f"split_random: test_fraction {test_fraction} of {num} samples leaves no "
                     "training or no test sample")
  return np.sort(perm[num_test:]), np.sort(perm[:num_test])
