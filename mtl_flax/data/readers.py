"""Readers for the face datasets of the MTL experiments; every face cropped to S x S (96).

* `load_image_folder`: an LSEMSW-style expression dataset, one folder per class or a
  `labels.csv` (columns `path,label`; label an index or a class name).
* `load_300w`: 300-W / iBUG images with a `.pts` file of the same stem beside each image.
* `load_ckplus`: CK+ (`cohn-kanade-images/S005/001/*.png`,
  `Emotion/S005/001/*_emotion.txt` holding one float code 0-7).
* `load_oulu_casia`: Oulu-CASIA (`OriginalImg/VL/Strong/P001/Anger/*.jpeg`, label = folder).

`.pts` coordinates are 1-based pixel positions (the iBUG convention: the centre of the top-left
pixel is (1, 1)); `read_pts` subtracts 1 so points are 0-based pixel-centre coordinates, the
convention of OpenCV and of `mtl_flax.data.augment`. Landmarks returned by `load_300w` are then
moved with the same crop matrix as the image and normalised to (0, 1) as u = (x + 0.5) / S.

Faces: 300-W crops the (enlarged, square) bounding box of its landmarks; the expression readers
either detect the face with OpenCV's bundled frontal Haar cascade (`subtle_core.faces.detect`:
the largest detection, with a more sensitive second pass before giving up, enlarged by `margin`;
the whole image when nothing is found) or take the central square of the image. Hidden files
(`._x.jpg`, '.ipynb_checkpoints') are no images or classes.
Every user-caused problem raises a `ValueError`/`FileNotFoundError` naming the file.

Each reader is a file listing (`list_image_folder`, `list_300w`, `list_ckplus`,
`list_oulu_casia`: paths and labels, no image opened) followed by the decoding of the listed
files (`decode_faces`, `decode_landmark_faces`): on every core, with a progress bar when asked,
and through the dataset cache (`mtl_flax.data.cache.cached_dataset`) when a `cache_dir` is given:
the first read stores the uint8 crops there, later reads memory-map them and decode only added
or changed files. Without `cache_dir` nothing is written anywhere.
"""
from __future__ import annotations

import csv
import functools
import logging
import os
import pathlib
import re
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from mtl_flax.data import augment
from mtl_flax.data import cache
from subtle_core import atomic
from subtle_core import images as image_files
from subtle_core.faces import detect
from subtle_core.faces.ibug import NUM_LANDMARKS

# CK+ emotion codes (the index is the code stored in *_emotion.txt).
CKPLUS_CLASSES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness",
                  "surprise")
OULU_CASIA_CLASSES = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


class ExpressionData(NamedTuple):
  """Cropped expression images.

  Attributes:
    images: (N, S, S, 3) uint8 RGB.
    labels: (N,) int32 class indices into `class_names`.
    subjects: (N,) int32 subject ids (-1 where the dataset has none).
    class_names: tuple of class names.
    paths: tuple of N source file paths.
    decoded: how many images this read decoded (0 when every crop came from the cache).
  """
  images: np.ndarray
  labels: np.ndarray
  subjects: np.ndarray
  class_names: tuple
  paths: tuple
  decoded: int = 0


class LandmarkData(NamedTuple):
  """Cropped faces with landmarks.

  Attributes:
    images: (N, S, S, 3) uint8 RGB.
    landmarks: (N, 68, 2) float32 (x, y) normalised to (0, 1).
    paths: tuple of N source image paths.
    decoded: how many images this read decoded (0 when every crop came from the cache).
  """
  images: np.ndarray
  landmarks: np.ndarray
  paths: tuple
  decoded: int = 0


class Listing(NamedTuple):
  """The files of a dataset and what their folders or label files say, before any decoding.

  Attributes:
    paths: tuple of N image paths (str), in the dataset's order.
    labels: (N,) int32 class indices, or None (landmark datasets).
    subjects: (N,) int32 subject ids (-1 where the dataset has none).
    class_names: tuple of class names (empty for landmark datasets).
  """
  paths: tuple
  labels: np.ndarray | None
  subjects: np.ndarray
  class_names: tuple = ()

  def subset(self, indices) -> "Listing":
    indices = np.asarray(indices, np.int64)
    return Listing(tuple(self.paths[i] for i in indices),
                   None if self.labels is None else self.labels[indices],
                   self.subjects[indices], self.class_names)


# --------------------------------------------------------------------------- low-level readers


def read_image(path) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB (grey images are replicated to 3 channels).

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: OpenCV cannot decode it.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"image file not found: {path}")
  data = np.fromfile(str(path), dtype=np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None:
    raise ValueError(f"unreadable image (OpenCV cannot decode it): {path}")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_pts(path, *, num_points: int = NUM_LANDMARKS) -> np.ndarray:
  """Reads an iBUG / 300-W `.pts` file as 0-based pixel-centre coordinates.

  Format: `version: 1`, `n_points: 68`, `{`, one `x y` line per point (1-based), `}`.
  Header lines may carry extra spaces.

  Args:
    path: the .pts file.
    num_points: the number of points expected.

  Returns:
    (num_points, 2) float32 (x, y), i.e. the file's values minus one.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is malformed (header, braces, count, non-numeric values).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f".pts landmark file not found: {path}")
  lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
  lines = [line for line in lines if line]
  declared = None
  body_start = None
  for i, line in enumerate(lines):
    if line == "{":
      body_start = i + 1
      break
    match = re.fullmatch(r"n_points\s*:\s*(\S+)", line)
    if match:
      try:
        declared = int(match.group(1))
      except ValueError:
        raise ValueError(f"{path}: n_points must be an integer, got {match.group(1)!r}") from None
  if body_start is None:
    raise ValueError(f"{path}: missing opening brace '{{' before the points")
  try:
    body_end = lines.index("}", body_start)
  except ValueError:
    raise ValueError(f"{path}: missing closing brace '}}' after the points") from None
  if declared is not None and declared != num_points:
    raise ValueError(f"{path}: n_points is {declared}, expected {num_points}")
  body = lines[body_start:body_end]
  if len(body) != num_points:
    raise ValueError(f"{path}: found {len(body)} point lines, expected {num_points}")
  points = np.empty((num_points, 2), np.float64)
  for i, line in enumerate(body):
    fields = line.split()
    if len(fields) != 2:
      raise ValueError(f"{path}: point {i + 1} should be 'x y', got {line!r}")
    try:
      points[i] = [float(fields[0]), float(fields[1])]
    except ValueError:
      raise ValueError(f"{path}: point {i + 1} is not numeric: {line!r}") from None
  if not np.isfinite(points).all():
    raise ValueError(f"{path}: non-finite coordinates")
  return (points - 1.0).astype(np.float32)


def write_pts(path, points_zero_based: np.ndarray) -> None:
  """Writes 0-based points as a 1-based iBUG `.pts` file (atomically)."""
  path = pathlib.Path(path)
  lines = ["version: 1", f"n_points:  {len(points_zero_based)}", "{"]
  lines += [f"{x + 1:.6f} {y + 1:.6f}" for x, y in np.asarray(points_zero_based, np.float64)]
  lines.append("}")
  atomic.write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- face cropping


def square_box(box, *, margin: float = 1.0):
  """Enlarges (x0, y0, w, h) about its centre by `margin` and makes it square."""
  x0, y0, w, h = (float(v) for v in box)
  side = max(w, h) * margin
  cx, cy = x0 + w / 2.0, y0 + h / 2.0
  return (cx - side / 2.0, cy - side / 2.0, side, side)


def landmark_box(points: np.ndarray, *, margin: float = 1.3):
  """Square box around 0-based landmarks, enlarged by `margin` (continuous coordinates)."""
  low = points.min(axis=0)
  high = points.max(axis=0) + 1.0  # pixel centres -> the far edge of the last pixel
  return square_box((low[0], low[1], high[0] - low[0], high[1] - low[1]), margin=margin)


def detect_face(image: np.ndarray):
  """Largest frontal face found by OpenCV's bundled Haar cascade, or None.

  :func:`subtle_core.faces.detect.largest_face` with faces of at least a fifth of the shorter
  image side and at least 20 pixels; the retry pass runs when the first finds nothing.

  Args:
    image: (H, W, 3) uint8 RGB.

  Returns:
    (x0, y0, w, h) of the largest detection as floats, or None.
  """
  found = detect.largest_face(image, channels="rgb", min_side=20)
  return None if found is None else tuple(float(v) for v in found)


def centre_square(image: np.ndarray):
  """The largest centred square box of an image."""
  h, w = image.shape[:2]
  side = min(h, w)
  return ((w - side) / 2.0, (h - side) / 2.0, float(side), float(side))


def crop_face(image: np.ndarray, *, image_size: int = 96, face_detection: bool = False,
              margin: float = 1.2) -> np.ndarray:
  """Crops a face to S x S: the Haar detection (if enabled and found) or the centre square."""
  box = detect_face(image) if face_detection else None
  box = square_box(box, margin=margin) if box is not None else centre_square(image)
  return augment.warp(image, augment.crop_matrix(image_size, box), image_size)


def crop_with_landmarks(image: np.ndarray, points: np.ndarray, *, image_size: int = 96,
                        margin: float = 1.3):
  """Crops the landmarks' enlarged square box to S x S; returns (image, normalised points)."""
  matrix = augment.crop_matrix(image_size, landmark_box(points, margin=margin))
  crop, moved = augment.warp(image, matrix, image_size, points)
  return crop, augment.normalise_landmarks(moved, image_size)


def _images_in(folder) -> list[str]:
  """The visible image files of ``folder`` (`subtle_core.images.is_image_file`), sorted by name.

  One `os.scandir` pass: a dataset start lists every file, and per-path `pathlib` checks cost
  more than the rest of a cached start.
  """
  with os.scandir(folder) as entries:
    names = sorted(e.name for e in entries
                   if os.path.splitext(e.name)[1].lower() in image_files.IMAGE_SUFFIXES
                   and not e.name.startswith(".") and e.is_file())
  return [os.path.join(folder, name) for name in names]


def _require_dir(path: pathlib.Path, what: str):
  if not path.is_dir():
    raise FileNotFoundError(f"{what}: directory not found: {path}")


# --------------------------------------------------------------------------- decoding


def decode_faces(paths: Sequence, *, name: str, image_size: int = 96,
                 face_detection: bool = False, margin: float = 1.2, cache_dir=None,
                 num_workers: int | None = None, progress: bool = False,
                 label: str | None = None):
  """The S x S face crops of ``paths`` (`crop_face`), decoded on every core.

  Args:
    paths: image files.
    name: the cache's name (`cache.cache_name`) and the progress bar's label.
    image_size, face_detection, margin: as in `crop_face`.
    cache_dir: folder of the dataset cache; None decodes every file and writes nothing.
    num_workers: parallel decoders (default: the CPUs this process may use).
    progress: show a progress bar while decoding.
    label: what the log line names (default ``name``): 'N images, K decoded, ...'.

  Returns:
    ((N, S, S, 3) uint8 crops, memory-mapped from the cache when ``cache_dir`` is set;
    the number of files decoded by this call).
  """
  settings = {"image_size": image_size, "face_detection": face_detection, "margin": margin}
  decode = functools.partial(cache.decode_face, **settings)
  if cache_dir is None:
    images, _ = cache.decode_parallel(paths, decode, num_workers=num_workers, progress=progress,
                                      name=name)
    _log_read(label or name, len(paths), len(paths), cache_dir)
    return images, len(paths)
  out = cache.cached_dataset(name, paths, decode, settings, cache_dir, num_workers=num_workers,
                             progress=progress)
  _log_read(label or name, len(paths), out.decoded, cache_dir)
  return out.images, out.decoded


def _pts_beside(path):
  return [str(pathlib.Path(path).with_suffix(".pts"))]


def decode_landmark_faces(paths: Sequence, *, name: str, image_size: int = 96,
                          margin: float = 1.3, cache_dir=None, num_workers: int | None = None,
                          progress: bool = False, label: str | None = None):
  """The crops of ``paths`` around their landmarks (`crop_with_landmarks`, `.pts` beside each).

  Args:
    paths: image files, each with a `.pts` of the same stem (whose size and modification
      time count as the image's in the cache).
    name, cache_dir, num_workers, progress, label: as in `decode_faces`.
    image_size, margin: as in `crop_with_landmarks`.

  Returns:
    ((N, S, S, 3) uint8 crops, (N, 68, 2) float32 normalised landmarks, files decoded).
  """
  settings = {"image_size": image_size, "margin": margin}
  decode = functools.partial(cache.decode_landmark_face, **settings)
  if cache_dir is None:
    images, points = cache.decode_parallel(paths, decode, num_workers=num_workers,
                                           progress=progress, name=name)
    _log_read(label or name, len(paths), len(paths), cache_dir)
    return images, np.asarray(points, np.float32), len(paths)
  out = cache.cached_dataset(name, paths, decode, settings, cache_dir,
                             related_files=_pts_beside, num_workers=num_workers,
                             progress=progress)
  _log_read(label or name, len(paths), out.decoded, cache_dir)
  return out.images, np.asarray(out.targets, np.float32), out.decoded


def _log_read(label, count, decoded, cache_dir):
  where = "no cache" if cache_dir is None else f"cache {cache_dir}"
  logging.info("%s: %d images, %d decoded, %d from the cache (%s)", label, count, decoded,
               count - decoded, where)


# --------------------------------------------------------------------------- datasets


def list_image_folder(root, *, class_names: Sequence[str] | None = None,
                      num_classes: int | None = None, csv_name: str = "labels.csv") -> Listing:
  """The images and labels of an LSEMSW-style expression dataset (see `load_image_folder`)."""
  root = pathlib.Path(root)
  _require_dir(root, "image-folder dataset")
  csv_path = root / csv_name
  entries = []  # (path, label, where)
  if csv_path.is_file():
    with open(csv_path, newline="") as f:
      rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if rows and rows[0][0].strip().lower() == "path":
      rows = rows[1:]
    name_to_index = ({n: i for i, n in enumerate(class_names)} if class_names else {})
    for line, row in enumerate(rows, start=1):
      if len(row) < 2:
        raise ValueError(f"{csv_path}: row {line} should be 'path,label', got {row}")
      rel, raw = row[0].strip(), row[1].strip()
      if raw.lstrip("-").isdigit():
        label = int(raw)
      elif raw in name_to_index:
        label = name_to_index[raw]
      else:
        raise ValueError(f"{csv_path}: row {line}: label {raw!r} is neither an integer nor one "
                         f"of the class names {list(name_to_index)}")
      entries.append((root / rel, label, f"{csv_path} row {line}"))
    if class_names is None:
      top = max((e[1] for e in entries), default=-1)
      class_names = tuple(str(i) for i in range(max(top + 1, num_classes or 0)))
  else:
    # Hidden folders ('.ipynb_checkpoints', '.git') are no classes.
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not image_files.is_hidden(p))
    if class_names is None:
      class_names = tuple(folders)
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
      raise ValueError(f"{root}: class folders {unknown} are not among class_names "
                       f"{list(class_names)}")
    for index, name in enumerate(class_names):
      folder = root / name
      if folder.is_dir():
        entries += [(p, index, str(p)) for p in _images_in(folder)]
  limit = num_classes if num_classes is not None else len(class_names)
  for path, label, where in entries:
    if not 0 <= label < limit:
      raise ValueError(f"{where}: label {label} out of range [0, {limit})")
  if not entries:
    raise ValueError(f"{root}: no images found (expected class folders or {csv_name})")
  for path, _, where in entries:
    if where != str(path) and not path.is_file():  # a labels.csv row (folders list files)
      raise FileNotFoundError(f"image file not found: {path} (listed in {where})")
  return Listing(tuple(str(e[0]) for e in entries), np.array([e[1] for e in entries], np.int32),
                 np.full(len(entries), -1, np.int32), tuple(class_names))


def load_image_folder(root, *, class_names: Sequence[str] | None = None,
                      num_classes: int | None = None, csv_name: str = "labels.csv",
                      image_size: int = 96, face_detection: bool = False,
                      margin: float = 1.2, cache_dir=None, num_workers: int | None = None,
                      progress: bool = False) -> ExpressionData:
  """Reads an LSEMSW-style expression dataset.

  If `root/csv_name` exists, its rows `path,label` (header optional; paths relative to root;
  label an integer index or a class name) define the samples; otherwise every sub-folder of
  root is one class (sorted by name unless `class_names` gives the order) holding its images.

  Args:
    root: dataset folder.
    class_names: class order; inferred (sorted folder names, or 0..max label) when None.
    num_classes: if given, labels must lie in [0, num_classes).
    csv_name: name of the label file inside root.
    image_size: S of the S x S crops.
    face_detection: crop the Haar-detected face instead of the centre square.
    margin: enlargement of the detected face box.
    cache_dir: dataset cache folder (see `decode_faces`); None decodes every image.
    num_workers: parallel decoders (default: all CPUs).
    progress: show a progress bar while decoding.

  Returns:
    `ExpressionData` (subjects all -1: LSEMSW has no subject ids).
  """
  listing = list_image_folder(root, class_names=class_names, num_classes=num_classes,
                              csv_name=csv_name)
  images, decoded = decode_faces(listing.paths, name=cache.cache_name("image_folder", root),
                                 image_size=image_size, face_detection=face_detection,
                                 margin=margin, cache_dir=cache_dir, num_workers=num_workers,
                                 progress=progress, label=f"image folder {root}")
  return ExpressionData(images, listing.labels, listing.subjects, listing.class_names,
                        listing.paths, decoded)


def list_300w(root, *, recursive: bool = True) -> Listing:
  """The annotated images of a 300-W / iBUG folder (see `load_300w`), no image opened."""
  root = pathlib.Path(root)
  _require_dir(root, "300-W dataset")
  files = sorted(root.rglob("*") if recursive else root.iterdir())
  image_paths = [p for p in files if image_files.is_image_file(p)]
  stems = {p.with_suffix("") for p in image_paths}
  for pts in (p for p in files if p.suffix.lower() == ".pts"):
    if pts.with_suffix("") not in stems:
      logging.warning("300-W reader: %s has no image beside it; skipped", pts)
  for path in image_paths:
    pts_path = path.with_suffix(".pts")
    if not pts_path.is_file():
      raise FileNotFoundError(f"missing landmark file {pts_path} for image {path}")
  if not image_paths:
    raise ValueError(f"{root}: no images with .pts landmarks found")
  return Listing(tuple(str(p) for p in image_paths), None,
                 np.full(len(image_paths), -1, np.int32))


def load_300w(root, *, image_size: int = 96, margin: float = 1.3,
              recursive: bool = True, cache_dir=None, num_workers: int | None = None,
              progress: bool = False) -> LandmarkData:
  """Reads 300-W / iBUG faces: every image needs a `.pts` file of the same stem beside it.

  Every annotated image under the root is read, whatever folder it is in: for the official
  300-W train / test split use `mtl_flax.data.w300.load_300w_protocol`. A `.pts` file without
  an image is skipped with a warning (some distributions ship those).

  Args:
    root: dataset folder (searched recursively unless `recursive` is False).
    image_size: S of the S x S crops.
    margin: enlargement of the landmarks' bounding box.
    recursive: also search sub-folders.
    cache_dir: dataset cache folder (see `decode_faces`); None decodes every image.
    num_workers: parallel decoders (default: all CPUs).
    progress: show a progress bar while decoding.

  Returns:
    `LandmarkData` with landmarks normalised to (0, 1).

  Raises:
    FileNotFoundError: an image has no `.pts` file.
    ValueError: a `.pts` file is malformed or an image unreadable.
  """
  listing = list_300w(root, recursive=recursive)
  images, points, decoded = decode_landmark_faces(
      listing.paths, name=cache.cache_name("300w", root), image_size=image_size, margin=margin,
      cache_dir=cache_dir, num_workers=num_workers, progress=progress, label=f"300-W {root}")
  return LandmarkData(images, points, listing.paths, decoded)


def _subject_number(name: str, where) -> int:
  digits = re.sub(r"\D", "", name)
  if not digits:
    raise ValueError(f"{where}: cannot read a subject number from folder name {name!r}")
  return int(digits)


def list_ckplus(root, *, peak_frames: int = 3, include_neutral: bool = False) -> Listing:
  """The labelled frames of CK+ (see `load_ckplus`), no image opened."""
  root = pathlib.Path(root)
  image_root, emotion_root = root / "cohn-kanade-images", root / "Emotion"
  _require_dir(image_root, "CK+ images")
  _require_dir(emotion_root, "CK+ emotion labels")
  if peak_frames < 1:
    raise ValueError(f"peak_frames must be >= 1, got {peak_frames}")
  labels, subjects, paths = [], [], []
  for subject_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
    subject = _subject_number(subject_dir.name, subject_dir)
    for seq_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
      label_files = sorted((emotion_root / subject_dir.name / seq_dir.name).glob("*_emotion.txt"))
      if not label_files:
        continue  # unlabelled sequence
      text = label_files[-1].read_text().split()
      try:
        code = float(text[0]) if len(text) == 1 else None
      except ValueError:
        code = None
      # The range test comes first: it is False for NaN and inf, which int() cannot take.
      if code is None or not 0 <= code < len(CKPLUS_CLASSES) or code != int(code):
        raise ValueError(f"{label_files[-1]}: expected one emotion code in 0-7, got {text}")
      frames = _images_in(seq_dir)
      if not frames:
        raise ValueError(f"{seq_dir}: labelled sequence has no image frames")
      chosen = [(f, int(code)) for f in frames[-peak_frames:]]
      if include_neutral:
        chosen.insert(0, (frames[0], 0))
      for frame, label in chosen:
        labels.append(label)
        subjects.append(subject)
        paths.append(str(frame))
  if not paths:
    raise ValueError(f"{root}: no labelled CK+ sequences found")
  return Listing(tuple(paths), np.array(labels, np.int32), np.array(subjects, np.int32),
                 CKPLUS_CLASSES)


def _load_expressions(what, kind, root, listing, *, image_size, face_detection, margin,
                      cache_dir, num_workers, progress) -> ExpressionData:
  images, decoded = decode_faces(listing.paths, name=cache.cache_name(kind, root),
                                 image_size=image_size, face_detection=face_detection,
                                 margin=margin, cache_dir=cache_dir, num_workers=num_workers,
                                 progress=progress, label=f"{what} {root}")
  return ExpressionData(images, listing.labels, listing.subjects, listing.class_names,
                        listing.paths, decoded)


def load_ckplus(root, *, peak_frames: int = 3, include_neutral: bool = False,
                image_size: int = 96, face_detection: bool = True,
                margin: float = 1.2, cache_dir=None, num_workers: int | None = None,
                progress: bool = False) -> ExpressionData:
  """Reads CK+: the last `peak_frames` frames of every sequence that has an emotion label.

  Layout: `root/cohn-kanade-images/S005/001/S005_001_00000001.png` and
  `root/Emotion/S005/001/S005_001_00000011_emotion.txt` (one float code 0-7, see
  `CKPLUS_CLASSES`). Sequences without an emotion file are skipped (only 327 of 593 are
  labelled). With `include_neutral`, each labelled sequence's first frame is added as code 0.

  Args:
    root: CK+ root folder.
    peak_frames: number of final (peak-intensity) frames taken per sequence.
    include_neutral: add the first frame as a neutral sample.
    image_size: S of the S x S crops.
    face_detection: crop the Haar-detected face (else the centre square).
    margin: enlargement of the detected face box.
    cache_dir: dataset cache folder (see `decode_faces`); None decodes every image.
    num_workers: parallel decoders (default: all CPUs).
    progress: show a progress bar while decoding.

  Returns:
    `ExpressionData`: labels are the CK+ codes (index into `CKPLUS_CLASSES`), subjects the
    numbers of the S### folders.
  """
  listing = list_ckplus(root, peak_frames=peak_frames, include_neutral=include_neutral)
  return _load_expressions("CK+", "ckplus", root, listing, image_size=image_size,
                           face_detection=face_detection, margin=margin, cache_dir=cache_dir,
                           num_workers=num_workers, progress=progress)


def list_oulu_casia(root, *, channel: str = "VL", illumination: str = "Strong",
                    peak_frames: int = 3) -> Listing:
  """The frames of Oulu-CASIA taken for training (see `load_oulu_casia`), no image opened."""
  root = pathlib.Path(root)
  base = root / "OriginalImg" / channel / illumination
  _require_dir(base, "Oulu-CASIA images")
  if peak_frames < 1:
    raise ValueError(f"peak_frames must be >= 1, got {peak_frames}")
  lower = {c.lower(): i for i, c in enumerate(OULU_CASIA_CLASSES)}
  labels, subjects, paths = [], [], []
  for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
    subject = _subject_number(subject_dir.name, subject_dir)
    for expr_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
      if expr_dir.name.lower() not in lower:
        raise ValueError(f"{expr_dir}: unknown expression folder {expr_dir.name!r}, expected one "
                         f"of {list(OULU_CASIA_CLASSES)}")
      for frame in _images_in(expr_dir)[-peak_frames:]:
        labels.append(lower[expr_dir.name.lower()])
        subjects.append(subject)
        paths.append(str(frame))
  if not paths:
    raise ValueError(f"{base}: no Oulu-CASIA images found")
  return Listing(tuple(paths), np.array(labels, np.int32), np.array(subjects, np.int32),
                 OULU_CASIA_CLASSES)


def load_oulu_casia(root, *, channel: str = "VL", illumination: str = "Strong",
                    peak_frames: int = 3, image_size: int = 96, face_detection: bool = True,
                    margin: float = 1.2, cache_dir=None, num_workers: int | None = None,
                    progress: bool = False) -> ExpressionData:
  """Reads Oulu-CASIA: the last `peak_frames` frames of every subject's expression sequence.

  Layout: `root/OriginalImg/VL/Strong/P001/Anger/000.jpeg`; label = the expression folder
  (one of `OULU_CASIA_CLASSES`, case-insensitive).

  Args:
    root: Oulu-CASIA root folder (holding `OriginalImg`).
    channel: 'VL' (visible light) or 'NI' (near infrared).
    illumination: 'Strong', 'Weak' or 'Dark'.
    peak_frames: final frames taken per sequence.
    image_size: S of the S x S crops.
    face_detection: crop the Haar-detected face (else the centre square).
    margin: enlargement of the detected face box.
    cache_dir: dataset cache folder (see `decode_faces`); None decodes every image.
    num_workers: parallel decoders (default: all CPUs).
    progress: show a progress bar while decoding.

  Returns:
    `ExpressionData`: labels index `OULU_CASIA_CLASSES`, subjects the P### numbers.
  """
  listing = list_oulu_casia(root, channel=channel, illumination=illumination,
                            peak_frames=peak_frames)
  return _load_expressions("Oulu-CASIA", f"oulu_casia-{channel}-{illumination}", root, listing,
                           image_size=image_size, face_detection=face_detection, margin=margin,
                           cache_dir=cache_dir, num_workers=num_workers, progress=progress)
