"""Which data a run trains on: its `data.<task>` fields checked, described and loaded.

The sources of each task are in the task registry (`mtl_flax.tasks`): 'synthetic' (the
generators of `mtl_flax.data.synthetic`) or a reader of a dataset root.
"""
from __future__ import annotations

import pathlib

import numpy as np

from mtl_flax import tasks as tasks_lib
from mtl_flax.data import pipeline


def _get(data, name, default=""):
  """A field of a data config or `settings.DataSettings` (partial configs lack some)."""
  return getattr(data, name, default)


def _synthetic_variant(data) -> str:
  # Configs written before the planted data existed generated the 'independent' data.
  return _get(data, "synthetic", "independent")


def check_data_config(task: str, data) -> None:
  """Raises ValueError naming the field when `data.<task>` cannot be what the user meant.

  The source must be known for the task; 'synthetic' takes no path (a path set beside it is a
  contradiction, not something to ignore); a reader source needs `path`, and every path given
  must exist.
  """
  readers = tasks_lib.get(task).reader_sources
  sources = ("synthetic",) + readers
  source = data.source
  field = f"data.{task}"
  if source not in sources:
    raise ValueError(f"{field}.source: unknown source {source!r}; expected one of "
                     f"{', '.join(map(repr, sources))}")
  if source == "synthetic":
    tasks_lib.check_synthetic_variant(f"{field}.synthetic", _synthetic_variant(data))
    for name in ("path", "test_path"):
      if _get(data, name):
        raise ValueError(
            f"{field}.{name} is set ({_get(data, name)}) but {field}.source is 'synthetic', "
            f"which reads no files; set {field}.source to the reader of that dataset "
            f"({', '.join(map(repr, readers))}) or clear {field}.{name}")
    return
  if not _get(data, "path"):
    raise ValueError(f"{field}.path: a dataset root is needed for source {source!r}")
  for name in ("path", "test_path"):
    if _get(data, name) and not pathlib.Path(_get(data, name)).exists():
      raise ValueError(f"{field}.{name}: {_get(data, name)} does not exist (expected the root "
                       f"of a {source!r} dataset)")


def describe_data(tasks, data_for, seed: int) -> dict:
  """task -> where its data came from: the reader and paths, or 'synthetic, seed N'.

  Args:
    tasks: the task names.
    data_for: task -> its data config or `DataSettings`.
    seed: the run's seed.
  """
  out = {}
  for task in tasks:
    d = data_for(task)
    split = f"{d.test_fraction:.0%} held out for testing (by subject where known)"
    if d.source == "synthetic":
      seed_used = seed + tasks_lib.get(task).synthetic_seed_offset
      out[task] = (f"synthetic, seed {seed_used}, {d.num} samples; {split}; variant "
                   f"'{_synthetic_variant(d)}' (docs/synthetic_mtl.md)")
    else:
      test = f"test set {d.test_path}" if d.test_path else split
      out[task] = f"{d.source} {d.path}; {test}"
  return out


def _split(data: pipeline.TaskData, fraction: float, seed: int):
  if data.subjects is not None and (data.subjects >= 0).all():
    train_idx, test_idx = pipeline.split_by_subject(data.subjects, fraction, seed=seed)
  else:
    train_idx, test_idx = pipeline.split_random(len(data), fraction, seed=seed)
  return data.subset(train_idx), data.subset(test_idx)


def _synthetic_data(task: str, num: int, *, image_size: int, num_classes: int, seed: int,
                    variant: str):
  kind = tasks_lib.get(task)
  return pipeline.TaskData(*kind.synthetic(num, image_size, num_classes,
                                           seed + kind.synthetic_seed_offset, variant))


class _Reader:
  """Reads the roots of one task's dataset (a test root with the training root's classes)."""

  def __init__(self, task, data, *, image_size, num_classes):
    self.task, self.data = task, data
    self.image_size, self.num_classes = image_size, num_classes
    self.class_names = None

  def __call__(self, path):
    from mtl_flax.data import readers  # pylint: disable=g-import-not-at-top
    if self.data.source == "image_folder":
      # The test root is read with the training root's class order, so a class missing from
      # one of them cannot shift the other's label indices.
      out = readers.load_image_folder(path, class_names=self.class_names,
                                      num_classes=self.num_classes, image_size=self.image_size,
                                      face_detection=_get(self.data, "face_detection", False))
      self.class_names = out.class_names
      subjects = out.subjects if (out.subjects >= 0).all() else None
      return pipeline.TaskData(out.images, out.labels, subjects)
    out = readers.load_300w(path, image_size=self.image_size)
    return pipeline.TaskData(out.images, out.landmarks)


def load_task_data(task: str, data, *, image_size: int, num_classes: int, seed: int):
  """(train, test) `TaskData` of one task from its data config (synthetic or a reader)."""
  check_data_config(task, data)
  if data.source == "synthetic":
    full = _synthetic_data(task, data.num, image_size=image_size, num_classes=num_classes,
                           seed=seed, variant=_synthetic_variant(data))
    return _split(full, data.test_fraction, seed)
  read = _Reader(task, data, image_size=image_size, num_classes=num_classes)
  full = read(data.path)
  if _get(data, "test_path"):
    return full, read(data.test_path)
  return _split(full, data.test_fraction, seed)


def load_datasets(tasks, data_for, *, image_size: int, num_classes: int, seed: int):
  """Train and test `TaskData` for every task (every task's fields checked first)."""
  for task in tasks:
    check_data_config(task, data_for(task))
  train, test = {}, {}
  for task in tasks:
    train[task], test[task] = load_task_data(task, data_for(task), image_size=image_size,
                                             num_classes=num_classes, seed=seed)
    tasks_lib.get(task).check_targets(
        np.concatenate([train[task].targets, test[task].targets]), num_classes)
  return train, test
