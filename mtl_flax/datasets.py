"""Which data a run trains on: its `data.<task>` fields checked, described and loaded.

The sources of each task are in the task registry (`mtl_flax.tasks`): 'synthetic' (the
generators of `mtl_flax.data.synthetic`) or a reader of a dataset root:

* 'image_folder' (expression): an LSEMSW-style folder (`readers.list_image_folder`); without
  `test_path`, `test_fraction` of it is held out at random (it has no subject ids).
* '300w' (landmarks): a root with the official 300-W layout (lfpw/, helen/, afw/, ibug/) is read
  by its protocol (`mtl_flax.data.w300`): training on lfpw/trainset + helen/trainset + afw only,
  testing on the 'common', 'challenging' and 'full' subsets, whose inter-pupil NMEs the
  evaluation reports (`test_fraction` and `test_path` are not used). A root with none of those
  folders is read as a flat folder of annotated faces, `test_fraction` held out at random (or
  `test_path` as the test set); a root with some of them is refused (the missing ones named).
  `extra_paths` (comma-separated folders, e.g. Menpo's 68-point faces) add training faces.

Readers list the files first and decode afterwards, on every core, through the dataset cache
(`mtl_flax.data.cache`; folder from `data.<task>.cache_dir`: '' = the user's cache folder,
'none' = no cache). The split is drawn on the file listing and the files are decoded in the order
training then test, so both sets are slices of one memory-mapped crop file: a second start opens
no image, and the training set is never copied into memory.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np

from mtl_flax import tasks as tasks_lib
from mtl_flax.data import pipeline


@dataclasses.dataclass
class SubsetTaskData(pipeline.TaskData):
  """A test set with named subsets whose metrics the evaluation reports besides the whole set's.

  Attributes:
    subsets: subset name -> (n,) indices into the test set (e.g. the 300-W protocol's
      'common', 'challenging' and 'full').
  """
  subsets: dict = dataclasses.field(default_factory=dict)


def _get(data, name, default=""):
  """A field of a data config or `settings.DataSettings` (partial configs lack some)."""
  return getattr(data, name, default)


def extra_paths(data) -> list[str]:
  """The folders of `data.<task>.extra_paths` (comma-separated; empty entries ignored)."""
  return [p.strip() for p in str(_get(data, "extra_paths", "") or "").split(",") if p.strip()]


def cache_dir(task: str, data):
  """The dataset cache folder of `data.<task>.cache_dir` (None: no cache)."""
  from mtl_flax.data import cache  # pylint: disable=g-import-not-at-top
  return cache.cache_dir_setting(_get(data, "cache_dir", ""), field=f"data.{task}.cache_dir")


def official_300w(data, field: str) -> bool:
  """Whether the '300w' root of `data` has the official layout (a half one is refused)."""
  from mtl_flax.data import w300  # pylint: disable=g-import-not-at-top
  try:
    return w300.has_official_layout(data.path)
  except FileNotFoundError as e:
    raise ValueError(f"{field}.path: {e}; or give a flat folder of annotated faces (none of "
                     "lfpw/, helen/, afw/, ibug/)") from None


def _synthetic_variant(data) -> str:
  # Configs written before the planted data existed generated the 'independent' data.
  return _get(data, "synthetic", "independent")


def check_data_config(task: str, data) -> None:
  """Raises ValueError naming the field when `data.<task>` cannot be what the user meant.

  The source must be known for the task; 'synthetic' takes no path (a path set beside it is a
  contradiction, not something to ignore); a reader source needs `path`, and every path given
  must exist; `extra_paths` is read by the '300w' source only; an official 300-W root has its
  own test subsets, so a `test_path` beside it is refused.
  """
  readers = tasks_lib.get(task).reader_sources
  sources = ("synthetic",) + readers
  source = data.source
  field = f"data.{task}"
  if source not in sources:
    raise ValueError(f"{field}.source: unknown source {source!r}; expected one of "
                     f"{', '.join(map(repr, sources))}")
  if extra_paths(data) and source != "300w":
    raise ValueError(f"{field}.extra_paths is set ({_get(data, 'extra_paths')}) but only source "
                     f"'300w' reads extra training folders; clear {field}.extra_paths")
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
  for folder in extra_paths(data):
    if not pathlib.Path(folder).is_dir():
      raise ValueError(f"{field}.extra_paths: {folder} is not a folder (expected folders of "
                       "images with 68-point .pts files, e.g. Menpo's)")
  cache_dir(task, data)
  if source == "300w" and official_300w(data, field) and _get(data, "test_path"):
    raise ValueError(f"{field}.test_path is set ({data.test_path}) but {field}.path has the "
                     "official 300-W layout, whose common / challenging / full subsets are the "
                     f"test set; clear {field}.test_path")


def describe_data(tasks, data_for, seed: int) -> dict:
  """task -> where its data came from: the reader, paths and split, or 'synthetic, seed N'.

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
      continue
    extra = extra_paths(d)
    extra = f" + extra training faces from {', '.join(extra)}" if extra else ""
    test = f"test set {d.test_path}" if d.test_path else split
    if d.source == "300w" and official_300w(d, f"data.{task}"):
      out[task] = (f"300w {d.path}, the official 300-W protocol: training on lfpw/trainset + "
                   f"helen/trainset + afw{extra}; testing on the subsets common (lfpw/testset + "
                   "helen/testset), challenging (ibug) and full (both), NME per subset "
                   "(test_fraction not used)")
    elif d.source == "300w":
      out[task] = (f"300w {d.path}{extra}, read as a flat folder (not the official 300-W "
                   "layout: every annotated image under it, no common / challenging subsets); "
                   f"{test}")
    else:
      out[task] = f"{d.source} {d.path}; {test}"
  return out


def _split_indices(subjects, num: int, fraction: float, seed: int):
  if subjects is not None and (np.asarray(subjects) >= 0).all():
    return pipeline.split_by_subject(subjects, fraction, seed=seed)
  return pipeline.split_random(num, fraction, seed=seed)


def _split(data: pipeline.TaskData, fraction: float, seed: int):
  train_idx, test_idx = _split_indices(data.subjects, len(data), fraction, seed)
  return data.subset(train_idx), data.subset(test_idx)


@functools.lru_cache(maxsize=4)
def _synthetic_data(task: str, num: int, *, image_size: int, num_classes: int, seed: int,
                    variant: str):
  """The generated dataset, drawn once per process for each setting.

  Table runs train many rows on the same seed's data in one process; each takes its split by
  ``TaskData.subset`` (fancy indexing: copies), so the cached arrays are never written.
  """
  kind = tasks_lib.get(task)
  arrays = kind.synthetic(num, image_size, num_classes, seed + kind.synthetic_seed_offset,
                          variant)
  for a in arrays:
    if isinstance(a, np.ndarray):
      a.setflags(write=False)
  return pipeline.TaskData(*arrays)


def _read_expressions(task, data, *, image_size, num_classes, seed, progress, num_workers):
  """(train, test) of an 'image_folder' source: slices of one cached crop file."""
  from mtl_flax.data import cache  # pylint: disable=g-import-not-at-top
  from mtl_flax.data import readers  # pylint: disable=g-import-not-at-top
  folder = cache_dir(task, data)
  decode = dict(image_size=image_size, face_detection=bool(_get(data, "face_detection", False)),
                cache_dir=folder, progress=progress, num_workers=num_workers)
  listing = readers.list_image_folder(data.path, num_classes=num_classes)
  if _get(data, "test_path"):
    # The test root is read with the training root's class order, so a class missing from
    # one of them cannot shift the other's label indices.
    test_listing = readers.list_image_folder(data.test_path, class_names=listing.class_names,
                                             num_classes=num_classes)
    parts = [(data.path, listing), (data.test_path, test_listing)]
    out = []
    for root, part in parts:
      images, _ = readers.decode_faces(part.paths, name=cache.cache_name("image_folder", root),
                                       label=f"data.{task} image folder {root}", **decode)
      out.append(pipeline.TaskData(images, part.labels))
    return tuple(out)
  train_idx, test_idx = _split_indices(listing.subjects, len(listing.paths), data.test_fraction,
                                       seed)
  ordered = listing.subset(np.concatenate([train_idx, test_idx]))
  images, _ = readers.decode_faces(ordered.paths, name=cache.cache_name("image_folder", data.path),
                                   label=f"data.{task} image folder {data.path}", **decode)
  n = len(train_idx)
  return (pipeline.TaskData(images[:n], ordered.labels[:n]),
          pipeline.TaskData(images[n:], ordered.labels[n:]))


def _read_landmarks(task, data, *, image_size, seed, progress, num_workers):
  """(train, test) of a '300w' source: the official protocol or a flat folder."""
  from mtl_flax.data import cache  # pylint: disable=g-import-not-at-top
  from mtl_flax.data import readers  # pylint: disable=g-import-not-at-top
  from mtl_flax.data import w300  # pylint: disable=g-import-not-at-top
  folder = cache_dir(task, data)
  if official_300w(data, f"data.{task}"):
    protocol = w300.load_300w_protocol(data.path, image_size=image_size, menpo=extra_paths(data),
                                       cache_dir=folder, progress=progress,
                                       num_workers=num_workers)
    full = protocol.test["full"]
    num_common = len(protocol.test["common"].images)
    num_full = len(full.images)
    subsets = {"common": np.arange(num_common), "challenging": np.arange(num_common, num_full),
               "full": np.arange(num_full)}
    return (pipeline.TaskData(protocol.train.images, protocol.train.landmarks),
            SubsetTaskData(full.images, full.landmarks, subsets=subsets))
  extra, _ = w300.menpo_files(extra_paths(data))
  extra = tuple(str(p) for p in extra)
  decode = dict(image_size=image_size, cache_dir=folder, progress=progress,
                num_workers=num_workers)
  listing = readers.list_300w(data.path)
  name = cache.cache_name("300w", data.path)
  if _get(data, "test_path"):
    images, points, _ = readers.decode_landmark_faces(
        listing.paths + extra, name=name, label=f"data.{task} 300-W {data.path}", **decode)
    test_paths = readers.list_300w(data.test_path).paths
    test_images, test_points, _ = readers.decode_landmark_faces(
        test_paths, name=cache.cache_name("300w", data.test_path),
        label=f"data.{task} 300-W test {data.test_path}", **decode)
    return (pipeline.TaskData(images, points), pipeline.TaskData(test_images, test_points))
  train_idx, test_idx = pipeline.split_random(len(listing.paths), data.test_fraction, seed=seed)
  paths = (tuple(listing.paths[i] for i in train_idx) + extra +
           tuple(listing.paths[i] for i in test_idx))
  images, points, _ = readers.decode_landmark_faces(
      paths, name=name, label=f"data.{task} 300-W {data.path} (flat folder)", **decode)
  n = len(train_idx) + len(extra)
  return pipeline.TaskData(images[:n], points[:n]), pipeline.TaskData(images[n:], points[n:])


def load_task_data(task: str, data, *, image_size: int, num_classes: int, seed: int,
                   progress: bool = True, num_workers: int | None = None):
  """(train, test) `TaskData` of one task from its data config (synthetic or a reader).

  Readers' images are uint8 crops memory-mapped from the dataset cache (in memory when
  `cache_dir` is 'none'); the test set of an official 300-W root is a `SubsetTaskData`.

  Args:
    task: the task name.
    data: its data config (`config.data.<task>` or `settings.DataSettings`).
    image_size: S of the S x S crops.
    num_classes: expression labels must lie in [0, num_classes).
    seed: the split's seed.
    progress: show a progress bar while images are decoded.
    num_workers: parallel decoders (default: every CPU this process may use).
  """
  check_data_config(task, data)
  if data.source == "synthetic":
    full = _synthetic_data(task, data.num, image_size=image_size, num_classes=num_classes,
                           seed=seed, variant=_synthetic_variant(data))
    return _split(full, data.test_fraction, seed)
  if data.source == "image_folder":
    return _read_expressions(task, data, image_size=image_size, num_classes=num_classes,
                             seed=seed, progress=progress, num_workers=num_workers)
  return _read_landmarks(task, data, image_size=image_size, seed=seed, progress=progress,
                         num_workers=num_workers)


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
