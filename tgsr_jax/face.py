"""Face detection on a clip's first frame (OpenCV's bundled Haar cascade) and cropping.

The TGSR preprocessing detects the face once, on the first frame, and crops every frame of the clip
with that box, so the crop does not jitter and the small facial movements stay in place.
"""
from __future__ import annotations

import dataclasses
import os
import threading

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
RETRY_PARAMS = {"scale_factor": 1.05, "min_neighbors": 3}


class NoFaceError(ValueError):
  """Raised when the first frame of a clip has no detectable face."""


@dataclasses.dataclass(frozen=True)
class FaceBox:
  """A crop box in pixel coordinates of the original frames (``x1``, ``y1`` exclusive).

  ``detected`` is False when the whole frame was used because no face was found.
  """
  x0: int
  y0: int
  x1: int
  y1: int
  detected: bool = True

  @property
  def width(self) -> int:
    return self.x1 - self.x0

  @property
  def height(self) -> int:
    return self.y1 - self.y0

  def as_tuple(self) -> tuple[int, int, int, int]:
    return (self.x0, self.y0, self.x1, self.y1)


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


def _to_gray_uint8(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim == 3:
    if frame.shape[-1] == 1:
      frame = frame[..., 0]
    else:
      frame = cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_BGR2GRAY)
  if frame.ndim != 2:
    raise ValueError(f"a frame must be (H, W) or (H, W, C), got shape {frame.shape}")
  if frame.dtype != np.uint8:
    frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(frame)


def detect_faces(frame: np.ndarray, *, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size_fraction: float = 0.2) -> np.ndarray:
  """All Haar-cascade face detections of a frame.

  Args:
    frame: ``(H, W)`` grayscale or ``(H, W, 3)`` BGR image.
    scale_factor: the cascade's image-pyramid step.
    min_neighbors: detections required to keep a face (higher: fewer false positives).
    min_size_fraction: smallest face side as a fraction of the frame's shorter side.

  Returns:
    int array ``(num_faces, 4)`` of ``(x, y, w, h)`` rows, largest area first.
  """
  gray = _to_gray_uint8(frame)
  side = int(min(gray.shape) * min_size_fraction)
  found = _cascade().detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                      minSize=(side, side))
  found = np.asarray(found, dtype=np.int64).reshape(-1, 4)
  order = np.argsort(-(found[:, 2] * found[:, 3]), kind="stable")
  return found[order]


def face_box(frame: np.ndarray, *, margin: float = 0.0, whole_frame_fallback: bool = False,
             name: str = "clip", **detect_kwargs) -> FaceBox:
  """The crop box of a clip from its first frame: the largest detection enlarged by ``margin``.

  Detection uses :func:`detect_faces` (scale factor 1.1, 5 neighbours); when that finds nothing
  and no ``detect_kwargs`` are given, a second pass with :data:`RETRY_PARAMS` (scale factor 1.05,
  3 neighbours) is tried before declaring the clip faceless.

  Args:
    frame: the first frame, ``(H, W)`` or ``(H, W, 3)`` BGR.
    margin: relative margin added on every side (0.1 adds 10 % of the box width left and right
      and 10 % of its height above and below), clipped to the image.
    whole_frame_fallback: return the whole frame (``detected=False``) instead of raising when no
      face is found.
    name: the clip's name for the error message.
    **detect_kwargs: passed to :func:`detect_faces`.

  Returns:
    the :class:`FaceBox`.

  Raises:
    NoFaceError: when no face is found and ``whole_frame_fallback`` is False.
  """
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  h, w = np.asarray(frame).shape[:2]
  faces = detect_faces(frame, **detect_kwargs)
  if len(faces) == 0 and not detect_kwargs:
    # A second, more sensitive pass (finer pyramid, fewer confirming neighbours) before giving
    # up: the default pass misses a few faces whose scale falls between pyramid levels.
    faces = detect_faces(frame, **RETRY_PARAMS)
  if len(faces) == 0:
    if whole_frame_fallback:
      return FaceBox(0, 0, w, h, detected=False)
    raise NoFaceError(f"no face detected on the first frame of {name} ({w}x{h}); set "
                      "whole_frame_fallback=True to use the whole frame")
  x, y, bw, bh = (int(v) for v in faces[0])
  mx, my = int(round(margin * bw)), int(round(margin * bh))
  return FaceBox(max(0, x - mx), max(0, y - my), min(w, x + bw + mx), min(h, y + bh + my))


def crop(frames: np.ndarray, box: FaceBox) -> np.ndarray:
  """Crops every frame of a ``(T, H, W[, C])`` clip with ``box``."""
  return np.asarray(frames)[:, box.y0:box.y1, box.x0:box.x1]


def detect_and_crop(frames: np.ndarray, *, margin: float = 0.0,
                    whole_frame_fallback: bool = False, name: str = "clip",
                    **detect_kwargs) -> tuple[np.ndarray, FaceBox]:
  """Detects the face on the first frame and crops every frame with that box.

  Args:
    frames: ``(T, H, W)`` grayscale or ``(T, H, W, 3)`` BGR clip.
    margin: relative margin (see :func:`face_box`).
    whole_frame_fallback: use the whole frame when no face is found.
    name: the clip's name for error messages.
    **detect_kwargs: passed to :func:`detect_faces`.

  Returns:
    ``(cropped frames, box)``; ``box`` maps crop pixels back to the original frames.
  """
  frames = np.asarray(frames)
  if frames.ndim not in (3, 4) or frames.shape[0] < 1:
    raise ValueError(f"frames of {name} must be (T, H, W) or (T, H, W, C), got {frames.shape}")
  box = face_box(frames[0], margin=margin, whole_frame_fallback=whole_frame_fallback, name=name,
                 **detect_kwargs)
  return crop(frames, box), box
