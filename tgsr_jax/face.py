"""A clip's face box from its first frame, and cropping every frame with it.

The TGSR preprocessing detects the face once, on the first frame, and crops every frame of the clip
with that box, so the crop does not jitter and the small facial movements stay in place. Detection
is :func:`subtle_core.faces.detect.largest_face` (OpenCV's bundled Haar cascade with its retry
pass), shared with the MTL readers.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from subtle_core.faces import detect


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


def face_box(frame: np.ndarray, *, margin: float = 0.0, whole_frame_fallback: bool = False,
             name: str = "clip", **detect_kwargs) -> FaceBox:
  """The crop box of a clip from its first frame: the largest detection enlarged by ``margin``.

  Detection is :func:`subtle_core.faces.detect.largest_face`: scale factor 1.1, 5 neighbours and,
  when that finds nothing and no ``detect_kwargs`` are given, a second pass with scale factor 1.05
  and 3 neighbours before declaring the clip faceless.

  Args:
    frame: the first frame, ``(H, W)`` or ``(H, W, 3)`` BGR.
    margin: relative margin added on every side (0.1 adds 10 % of the box width left and right
      and 10 % of its height above and below), clipped to the image.
    whole_frame_fallback: return the whole frame (``detected=False``) instead of raising when no
      face is found.
    name: the clip's name for the error message.
    **detect_kwargs: the first pass's ``scale_factor``, ``min_neighbors`` or
      ``min_size_fraction`` (see :func:`subtle_core.faces.detect.detect_faces`).

  Returns:
    the :class:`FaceBox`.

  Raises:
    NoFaceError: when no face is found and ``whole_frame_fallback`` is False.
  """
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  h, w = np.asarray(frame).shape[:2]
  found = detect.largest_face(frame, **detect_kwargs)
  if found is None:
    if whole_frame_fallback:
      return FaceBox(0, 0, w, h, detected=False)
    raise NoFaceError(f"no face detected on the first frame of {name} ({w}x{h}); set "
                      "whole_frame_fallback=True to use the whole frame")
  x, y, bw, bh = found
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
    **detect_kwargs: passed to :func:`face_box`.

  Returns:
    ``(cropped frames, box)``; ``box`` maps crop pixels back to the original frames.
  """
  frames = np.asarray(frames)
  if frames.ndim not in (3, 4) or frames.shape[0] < 1:
    raise ValueError(f"frames of {name} must be (T, H, W) or (T, H, W, C), got {frames.shape}")
  box = face_box(frames[0], margin=margin, whole_frame_fallback=whole_frame_fallback, name=name,
                 **detect_kwargs)
  return crop(frames, box), box
