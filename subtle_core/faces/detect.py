"""Frontal face detection with OpenCV's bundled Haar cascade, safe to call from many threads.

Both systems find faces the same way: :func:`largest_face` runs the cascade with scale factor 1.1
and 5 confirming neighbours and, when that finds nothing, a second, more sensitive pass
(:data:`RETRY_PARAMS`: scale factor 1.05, 3 neighbours) before calling the image faceless. The
default pass misses a few faces whose scale falls between two pyramid levels; the retry only runs
where the first pass found nothing, so it never changes a face the first pass found.

Boxes are ``(x, y, w, h)`` in integer pixels (top-left corner and size).
"""
from __future__ import annotations

import os
import threading
from typing import Literal

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
DEFAULT_PARAMS = {"scale_factor": 1.1, "min_neighbors": 5, "min_size_fraction": 0.2}
RETRY_PARAMS = {"scale_factor": 1.05, "min_neighbors": 3}

ChannelOrder = Literal["bgr", "rgb"]

_LOCAL = threading.local()


def _cascade() -> cv2.CascadeClassifier:
  # One classifier per thread: detectMultiScale on a shared instance is not thread-safe.
  classifier = getattr(_LOCAL, "cascade", None)
  if classifier is None:
    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
      raise RuntimeError(f"could not load OpenCV's Haar cascade {path}; opencv-python 4.x "
                         "ships it")
    _LOCAL.cascade = classifier
  return classifier


def to_gray_uint8(image: np.ndarray, channels: ChannelOrder = "bgr") -> np.ndarray:
  """An image as contiguous uint8 ``(H, W)`` grey levels.

  Args:
    image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, C >= 3)`` (a fourth channel is ignored); any
      numeric type, rounded and clipped to 0-255.
    channels: the order of colour channels, ``"bgr"`` (OpenCV's) or ``"rgb"``.

  Raises:
    ValueError: for another shape or channel order.
  """
  if channels not in ("bgr", "rgb"):
    raise ValueError(f"channels must be 'bgr' or 'rgb', got {channels!r}")
  image = np.asarray(image)
  if image.ndim == 3:
    if image.shape[-1] == 1:
      image = image[..., 0]
    else:
      code = cv2.COLOR_BGR2GRAY if channels == "bgr" else cv2.COLOR_RGB2GRAY
      image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), code)
  if image.ndim != 2:
    raise ValueError(f"an image must be (H, W) or (H, W, C), got shape {image.shape}")
  if image.dtype != np.uint8:
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray, *, channels: ChannelOrder = "bgr",
                 scale_factor: float = DEFAULT_PARAMS["scale_factor"],
                 min_neighbors: int = DEFAULT_PARAMS["min_neighbors"],
                 min_size_fraction: float = DEFAULT_PARAMS["min_size_fraction"],
                 min_side: int = 0) -> np.ndarray:
  """All Haar-cascade face detections of an image (one pass).

  Args:
    image: ``(H, W)`` grey or ``(H, W, 3)`` colour image (see :func:`to_gray_uint8`).
    channels: colour channel order of ``image``, ``"bgr"`` or ``"rgb"``.
    scale_factor: the cascade's image-pyramid step.
    min_neighbors: detections required to keep a face (higher: fewer false positives).
    min_size_fraction: smallest face side as a fraction of the image's shorter side.
    min_side: smallest face side in pixels, whatever the fraction gives.

  Returns:
    int64 array ``(num_faces, 4)`` of ``(x, y, w, h)`` rows, largest area first (ties keep the
    cascade's order).
  """
  gray = to_gray_uint8(image, channels)
  side = max(int(min(gray.shape) * min_size_fraction), int(min_side))
  found = _cascade().detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                      minSize=(side, side))
  found = np.asarray(found, dtype=np.int64).reshape(-1, 4)
  order = np.argsort(-(found[:, 2] * found[:, 3]), kind="stable")
  return found[order]


def largest_face(image: np.ndarray, *, channels: ChannelOrder = "bgr", min_side: int = 0,
                 **pass_params) -> tuple[int, int, int, int] | None:
  """The largest face of an image, with the retry pass; None when there is none.

  The first pass uses :data:`DEFAULT_PARAMS` updated by ``pass_params``. When it finds nothing
  and no ``pass_params`` were given, a second pass with :data:`RETRY_PARAMS` runs (a caller who
  sets the pass parameters gets exactly the pass asked for).

  Args:
    image: ``(H, W)`` grey or ``(H, W, 3)`` colour image.
    channels: colour channel order of ``image``, ``"bgr"`` or ``"rgb"``.
    min_side: smallest face side in pixels (for both passes).
    **pass_params: ``scale_factor``, ``min_neighbors`` or ``min_size_fraction`` of the first pass.

  Returns:
    ``(x, y, w, h)`` of the largest detection, or None.
  """
  unknown = sorted(set(pass_params) - set(DEFAULT_PARAMS))
  if unknown:
    raise TypeError(f"unknown detection parameters {unknown}; known: {sorted(DEFAULT_PARAMS)}")
  faces = detect_faces(image, channels=channels, min_side=min_side, **pass_params)
  if len(faces) == 0 and not pass_params:
    faces = detect_faces(image, channels=channels, min_side=min_side, **RETRY_PARAMS)
  if len(faces) == 0:
    return None
  x, y, w, h = (int(v) for v in faces[0])
  return x, y, w, h
