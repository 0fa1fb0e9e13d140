"""Clip records and frame loading shared by the database readers."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Sequence

import cv2
import numpy as np

from subtle_core import images as image_files
from tgsr_jax import cdmer_io

# Label numbering shared by the CDMER benchmark files.
LABEL_NAMES = cdmer_io.CLASS_NAMES


@dataclasses.dataclass(frozen=True)
class ClipRecord:
  """One micro-expression clip of a database.

  Attributes:
    database: 'CASME2', 'SMIC_HS', 'SMIC_VIS', 'SMIC_NIR' or a generic name.
    subject: subject id as written in the database ('01', '3', ...).
    clip: clip name (CASME II Filename, SMIC clip folder, ...).
    label: benchmark class, 1 = Negative, 2 = Positive, 3 = Surprise.
    emotion: the database's own emotion string.
    frame_paths: frame files in temporal order (numerically sorted).
    onset: onset frame number, when the database codes it.
    apex: apex frame number, when coded.
    offset: offset frame number, when coded.
    folder: the clip's folder, when the reader lists its frames from one (for messages about
      a missing or empty folder).
  """
  database: str
  subject: str
  clip: str
  label: int
  emotion: str
  frame_paths: tuple[str, ...]
  onset: int | None = None
  apex: int | None = None
  offset: int | None = None
  folder: str | None = None

  @property
  def name(self) -> str:
    """A unique readable id: ``DATABASE/subject/clip``."""
    return f"{self.database}/{self.subject}/{self.clip}"


class BadClipError(ValueError):
  """A clip whose frames cannot be used (unreadable, too few, of different sizes, no face)."""


_NUMBER = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
  """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
  parts = _NUMBER.split(name)
  return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts)


def frame_number(path: str | os.PathLike) -> int | None:
  """The last integer in a frame file's stem (``img46.jpg`` -> 46), or None."""
  digits = _NUMBER.findall(pathlib.Path(path).stem)
  return int(digits[-1]) if digits else None


def list_frames(folder: str | os.PathLike) -> list[str]:
  """Image files of a folder, numerically sorted.

  Raises:
    FileNotFoundError: if ``folder`` is not a directory.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"clip folder {folder} does not exist")
  # Hidden files are skipped: macOS '._img1.jpg' companions, half-written temporaries.
  files = [p for p in folder.iterdir() if image_files.is_image_file(p)]
  return [str(p) for p in sorted(files, key=lambda p: natural_key(p.name))]


def read_frame(path: str | os.PathLike, *, grayscale: bool = True) -> np.ndarray:
  """Reads one frame as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` BGR.

  Colour files are converted to grayscale with OpenCV's BT.601 weights; grayscale files are
  replicated to 3 channels when ``grayscale`` is False. 16-bit files are scaled to 8 bits.

  Raises:
    BadClipError: naming the file, if it is missing or not a readable image.
  """
  image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
  if image is None or image.size == 0:
    raise BadClipError(f"unreadable frame {path}")
  if image.dtype == np.uint16:
    image = (image / 257.0).round().astype(np.uint8)
  elif image.dtype != np.uint8:
    raise BadClipError(f"frame {path} has unsupported pixel type {image.dtype}")
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[..., 0]
  if image.ndim == 3:
    image = image[..., :3] if image.shape[2] == 4 else image
    if grayscale:
      image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  elif not grayscale:
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
  return image


def load_clip(record_or_paths: ClipRecord | Sequence[str | os.PathLike], *,
              grayscale: bool = True) -> np.ndarray:
  """Loads a clip's frames into one array.

  Args:
    record_or_paths: a :class:`ClipRecord` or a sequence of frame paths in temporal order.
    grayscale: return ``(T, H, W)`` gray frames; otherwise ``(T, H, W, 3)`` BGR.

  Returns:
    uint8 array of the frames.

  Raises:
    BadClipError: naming the clip or file: an unreadable frame, fewer than 2 frames, or frames of
      different sizes.
  """
  folder = None
  if isinstance(record_or_paths, ClipRecord):
    paths, name = record_or_paths.frame_paths, record_or_paths.name
    folder = record_or_paths.folder
  else:
    paths = tuple(record_or_paths)
    name = os.fspath(pathlib.Path(paths[0]).parent) if paths else "<no frames>"
  if folder is not None and not os.path.isdir(folder):
    raise BadClipError(f"clip {name}: its folder {folder} does not exist")
  if len(paths) < 2 and folder is not None:
    raise BadClipError(f"clip {name} has {len(paths)} frame(s) in {folder}; at least 2 image "
                       f"files ({', '.join(image_files.IMAGE_SUFFIXES)}) are needed")
  if len(paths) < 2:
    raise BadClipError(f"clip {name} has {len(paths)} frame(s); at least 2 are needed")
  frames = []
  for path in paths:
    image = read_frame(path, grayscale=grayscale)
    if frames and image.shape != frames[0].shape:
      raise BadClipError(f"frame {path} of clip {name} has shape {image.shape}, the clip's first "
                         f"frame {paths[0]} has {frames[0].shape}")
    frames.append(image)
  return np.stack(frames)
