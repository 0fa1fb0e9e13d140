"""The 300-W protocol: train on the official training images, test per subset (the paper's Table 6).

Official layout (the iBUG release of 300-W; images .jpg/.png, each with a `.pts` of the same stem)::

  ROOT/lfpw/trainset  ROOT/helen/trainset  ROOT/afw     -> training (3,148 faces)
  ROOT/lfpw/testset   ROOT/helen/testset                -> 'common' test subset (554)
  ROOT/ibug                                             -> 'challenging' test subset (135)
                                                           'full' = common + challenging (689)

`load_300w_protocol` reads the training part only for training (unlike `readers.load_300w`,
which takes every image under a root, test images included), optionally with Menpo's 68-point
faces as extra training data: every image with a `.pts` under each Menpo folder; Menpo's profile
faces carry 39 points and are skipped (counted in `W300Protocol.menpo_skipped`). Faces are
cropped as `readers.load_300w` crops them (the landmarks' 1.3x square box, S x S).

`nme_per_subset` reports the inter-pupil NME of each test subset; 'full' is the mean over the
faces of both subsets (not the mean of the two subset means).

Training uses this protocol when `data.landmarks.source='300w'` names a root with the official
layout (`has_official_layout`; `mtl_flax.datasets`), its Menpo folders from
`data.landmarks.extra_paths`; the evaluation then reports every landmark metric per subset.
With a `cache_dir`, each part is cached under a name of its own that includes the root's
(`cache.cache_name`), so several 300-W roots can share one cache folder.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
from typing import Mapping, Sequence

import numpy as np

from mtl_flax import metrics
from mtl_flax.data import cache
from mtl_flax.data import readers

IMAGE_SUFFIXES = (".jpg", ".png")
TRAIN_PARTS = ("lfpw/trainset", "helen/trainset", "afw")
TEST_PARTS = {"common": ("lfpw/testset", "helen/testset"), "challenging": ("ibug",)}
SUBSETS = ("common", "challenging", "full")
FULL_PARTS = ("common", "challenging")
MENPO_PROFILE_POINTS = 39


@dataclasses.dataclass(frozen=True)
class W300Protocol:
  """The 300-W training set and test subsets.

  Attributes:
    train: `readers.LandmarkData` of the training part (+ Menpo's 68-point faces if asked).
    test: subset name ('common', 'challenging', 'full') -> `readers.LandmarkData`.
    menpo_skipped: Menpo faces skipped for having 39 (profile) points.
    decoded: images this call decoded (0 when everything came from the cache).
  """
  train: readers.LandmarkData
  test: dict
  menpo_skipped: int = 0
  decoded: int = 0


def _annotated_images(folder: pathlib.Path, *, recursive: bool = False) -> list[pathlib.Path]:
  """Images (.jpg/.png, not hidden) of ``folder`` with their `.pts`; a `.pts` alone is skipped."""
  files = sorted(folder.rglob("*") if recursive else folder.iterdir())
  files = [p for p in files if p.is_file() and not p.name.startswith(".")]
  images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
  stems = {p.with_suffix("") for p in images}
  for pts in (p for p in files if p.suffix.lower() == ".pts" and p.with_suffix("") not in stems):
    logging.warning("300-W: %s has no .jpg/.png image beside it; skipped", pts)
  for image in images:
    if not image.with_suffix(".pts").is_file():
      raise FileNotFoundError(f"missing landmark file {image.with_suffix('.pts')} for image "
                              f"{image}")
  return images


def _declared_points(pts: pathlib.Path) -> int | None:
  """The `n_points` of a `.pts` header (None when absent)."""
  with open(pts, errors="replace") as f:
    for line in f:
      line = line.strip()
      if line == "{":
        return None
      match = re.fullmatch(r"n_points\s*:\s*(\d+)", line)
      if match:
        return int(match.group(1))
  return None


def has_official_layout(root) -> bool:
  """Whether ``root`` is laid out as the official 300-W release (see the module docstring).

  Returns:
    True when every official folder is there; False when none of lfpw/, helen/, afw/, ibug/ is
    (a flat folder of annotated faces).

  Raises:
    FileNotFoundError: some official folders are there and others missing (named): a damaged or
      half-copied release is not silently read as something else.
  """
  root = pathlib.Path(root)
  parts = TRAIN_PARTS + TEST_PARTS["common"] + TEST_PARTS["challenging"]
  if not any((root / top).is_dir() for top in {part.split("/")[0] for part in parts}):
    return False
  official_files(root, list_files=False)
  return True


def official_files(root, *, list_files: bool = True) -> dict[str, list[pathlib.Path]]:
  """The annotated images of each official part, e.g. {'lfpw/trainset': [...], 'ibug': [...]}.

  Raises:
    FileNotFoundError: ``root`` is not the 300-W layout (the missing official folder named), or
      an image has no `.pts`.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"300-W root not found: {root}")
  parts = TRAIN_PARTS + TEST_PARTS["common"] + TEST_PARTS["challenging"]
  missing = [p for p in parts if not (root / p).is_dir()]
  if missing:
    raise FileNotFoundError(
        f"{root} is not the 300-W layout: missing official folder(s) {missing} (expected "
        f"{', '.join(parts)})")
  if not list_files:
    return {}
  return {part: _annotated_images(root / part) for part in parts}


def menpo_files(folders: Sequence) -> tuple[list[pathlib.Path], int]:
  """Menpo's 68-point annotated images under ``folders`` (recursively) and the profile count.

  Raises:
    FileNotFoundError: a folder does not exist or an image has no `.pts`.
    ValueError: a `.pts` declares neither 68 nor 39 points.
  """
  keep, skipped = [], 0
  for folder in folders:
    folder = pathlib.Path(folder)
    if not folder.is_dir():
      raise FileNotFoundError(f"Menpo folder not found: {folder}")
    for image in _annotated_images(folder, recursive=True):
      count = _declared_points(image.with_suffix(".pts"))
      if count == MENPO_PROFILE_POINTS:
        skipped += 1
      elif count in (None, readers.NUM_LANDMARKS):
        keep.append(image)  # read_pts checks the body
      else:
        raise ValueError(f"{image.with_suffix('.pts')}: n_points is {count}, expected 68 "
                         f"(semi-frontal) or {MENPO_PROFILE_POINTS} (profile, skipped)")
  if skipped:
    logging.info("Menpo: %d profile faces (%d points) skipped", skipped, MENPO_PROFILE_POINTS)
  return keep, skipped


def _load(name, label, paths, *, image_size, margin, cache_dir, num_workers, progress):
  """(LandmarkData, decoded count) of ``paths``, through the cache when ``cache_dir`` is set."""
  if not paths:
    return readers.LandmarkData(np.zeros((0, image_size, image_size, 3), np.uint8),
                                np.zeros((0, readers.NUM_LANDMARKS, 2), np.float32), ()), 0
  images, points, decoded = readers.decode_landmark_faces(
      paths, name=name, image_size=image_size, margin=margin, cache_dir=cache_dir,
      num_workers=num_workers, progress=progress, label=label)
  return readers.LandmarkData(images, points, tuple(str(p) for p in paths), decoded), decoded


def _concat(parts: Sequence[readers.LandmarkData]) -> readers.LandmarkData:
  return readers.LandmarkData(np.concatenate([p.images for p in parts]),
                              np.concatenate([p.landmarks for p in parts]),
                              sum((p.paths for p in parts), ()))


def load_300w_protocol(root, *, image_size: int = 96, margin: float = 1.3,
                       menpo: bool | str | Sequence = False, cache_dir=None,
                       num_workers: int | None = None, progress: bool = False) -> W300Protocol:
  """Reads 300-W by its official split (see the module docstring).

  Args:
    root: the 300-W root holding lfpw/, helen/, afw/ and ibug/.
    image_size: S of the S x S crops.
    margin: enlargement of the landmarks' square box.
    menpo: extra training data: False (none), True (``root/menpo``), or a folder or list of
      folders of Menpo images with `.pts` (searched recursively).
    cache_dir: cache the crops there (`cache.cached_dataset`, one cache per subset); None
      decodes every time.
    num_workers: parallel decoders (default: all CPUs).
    progress: show progress bars.

  Returns:
    `W300Protocol`.

  Raises:
    FileNotFoundError: not the 300-W layout (the missing folder named), a missing `.pts`.
    ValueError: a malformed `.pts`, an unreadable image, no training images.
  """
  root = pathlib.Path(root)
  parts = official_files(root)
  if menpo is True:
    menpo = [root / "menpo"]
  elif menpo is False or menpo is None:
    menpo = []
  elif isinstance(menpo, (str, pathlib.Path)):
    menpo = [menpo]
  menpo_paths, skipped = menpo_files(menpo)
  train_paths = [p for part in TRAIN_PARTS for p in parts[part]] + menpo_paths
  if not train_paths:
    raise ValueError(f"{root}: no annotated training images in {', '.join(TRAIN_PARTS)}")
  kwargs = dict(image_size=image_size, margin=margin, cache_dir=cache_dir,
                num_workers=num_workers, progress=progress)
  # One cache per part, named after the root: several 300-W roots can share a cache folder.
  base = cache.cache_name("300w", root)
  train, decoded = _load(f"{base}-train", f"300-W {root} training part", train_paths, **kwargs)
  test = {}
  for subset, subset_parts in TEST_PARTS.items():
    paths = [p for part in subset_parts for p in parts[part]]
    if not paths:
      raise ValueError(f"{root}: the {subset} test subset ({', '.join(subset_parts)}) has no "
                       "annotated images")
    test[subset], count = _load(f"{base}-{subset}", f"300-W {root} {subset} subset", paths,
                                **kwargs)
    decoded += count
  test["full"] = _concat([test[s] for s in FULL_PARTS])
  return W300Protocol(train, test, skipped, decoded)


def nme_per_subset(predictions: Mapping, subsets: Mapping, *,
                   normalisation: str = "inter_pupil") -> dict[str, float]:
  """The mean NME of each test subset (a fraction of the inter-pupil distance by default).

  Args:
    predictions: subset name -> (N, 68, 2) or (N, 136) predicted points (normalised crop
      coordinates, as the targets). 'full' may be left out: it is then computed from the
      faces of 'common' and 'challenging'.
    subsets: subset name -> `readers.LandmarkData` or (N, 68, 2) ground truth (e.g.
      `W300Protocol.test`).
    normalisation: 'inter_pupil' or 'inter_ocular' (`metrics.landmark_nme`).

  Returns:
    Subset name -> mean NME, for every subset in ``subsets`` that can be scored.

  Raises:
    ValueError: a subset's predictions and ground truth differ in length, or a subset has no
      predictions (and, for 'full', its parts have none either).
  """
  errors = {}
  for name, truth in subsets.items():
    if name not in predictions:
      continue
    truth = np.asarray(getattr(truth, "landmarks", truth), np.float32)
    pred = np.asarray(predictions[name], np.float32)
    if len(pred) != len(truth):
      raise ValueError(f"nme_per_subset: {len(pred)} predictions for the {len(truth)} faces of "
                       f"subset {name!r}")
    errors[name] = np.asarray(metrics.landmark_nme(pred, truth, normalisation=normalisation,
                                                   reduce=False))
  if "full" in subsets and "full" not in errors:
    if not all(part in errors for part in FULL_PARTS):
      raise ValueError(f"nme_per_subset: no predictions for 'full' nor for all of {FULL_PARTS}")
    errors["full"] = np.concatenate([errors[part] for part in FULL_PARTS])
  missing = [name for name in subsets if name not in errors]
  if missing:
    raise ValueError(f"nme_per_subset: no predictions for subset(s) {missing}")
  return {name: float(np.mean(errors[name])) for name in subsets}
