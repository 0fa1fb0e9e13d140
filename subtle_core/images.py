"""Image files as both systems find and write them.

* :data:`IMAGE_SUFFIXES` and :func:`is_image_file`: what counts as an image frame in a dataset
  folder. Hidden files (names starting with '.') never do: macOS '._img1.jpg' companions and the
  half-written temporaries of :mod:`subtle_core.atomic` sit beside real frames.
* :func:`write_image`: encode by the file's suffix and write atomically.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from subtle_core import atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def is_hidden(path: str | os.PathLike) -> bool:
  """Whether a file or folder name starts with '.' (``._img1.jpg``, ``.ipynb_checkpoints``)."""
  return pathlib.Path(path).name.startswith(".")


def is_image_file(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a visible regular file with an image suffix (any letter case)."""
  path = pathlib.Path(path)
  return path.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(path) and path.is_file()


def write_image(path: str | os.PathLike, image: np.ndarray, *, jpeg_quality: int = 95) -> None:
  """Writes a uint8 ``(H, W)`` grey or ``(H, W, 3)`` **RGB** image, atomically.

  The format follows the suffix of ``path`` (``.jpg``/``.jpeg`` at ``jpeg_quality``, ``.png``,
  ``.bmp``, ...); the file is the same bytes for the same image on every run.

  Raises:
    OSError: naming the file, when OpenCV cannot encode the image in that format.
  """
  import cv2  # noqa: PLC0415  (OpenCV only for the writers; importing subtle_core stays light)

  path = pathlib.Path(path)
  ext = path.suffix.lower()
  img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
  try:
    ok, buf = cv2.imencode(ext, img, params)
  except cv2.error as e:  # no encoder for the suffix, or an image the format cannot hold
    raise OSError(f"could not encode image {path} as {ext or 'a file without suffix'}: "
                  f"{str(e).strip().splitlines()[-1]}") from e
  if not ok:
    raise OSError(f"could not encode image {path}")
  atomic.write_bytes(path, buf.tobytes())
