"""A clip's face box from its first frame, and cropping (detection itself: test_core_faces.py)."""
import cv2
import numpy as np
import pytest

from subtle_core.faces import render
from tgsr_jax import face


def _synthetic_face(seed=0, box=(50, 40, 100, 100), size=(200, 180)):
  subject = render.sample_subject(np.random.default_rng(seed))
  rgb = render.render_face(subject, render.neutral_landmarks(subject, box), image_size=size,
                           face_box=box)
  return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _iou(a, b):
  ax0, ay0, ax1, ay1 = a
  bx0, by0, bx1, by1 = b
  inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
  return inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)


def test_detects_synthetic_face_and_crops_all_frames():
  first = _synthetic_face()
  clip = np.stack([first, first // 2 + 10, first // 3])
  cropped, box = face.detect_and_crop(clip, margin=0.0)
  assert box.detected
  assert _iou(box.as_tuple(), (50, 40, 150, 140)) > 0.7  # the face box it was drawn in
  assert cropped.shape == (3, box.height, box.width)
  np.testing.assert_array_equal(cropped[1], clip[1, box.y0:box.y1, box.x0:box.x1])
  # A margin grows the box on every side, clipped to the frame.
  wide = face.face_box(first, margin=0.1)
  assert wide.x0 < box.x0 and wide.y0 < box.y0 and wide.x1 > box.x1 and wide.y1 > box.y1
  huge = face.face_box(first, margin=2.0)
  assert huge.as_tuple() == (0, 0, 180, 200)
  # Colour (BGR) frames give the same box as grayscale.
  assert face.face_box(np.repeat(first[..., None], 3, -1)) == box


def test_no_face_raises_unless_fallback():
  blank = np.full((2, 80, 90), 128, np.uint8)
  with pytest.raises(face.NoFaceError, match="sub01/EP01"):
    face.detect_and_crop(blank, name="sub01/EP01")
  cropped, box = face.detect_and_crop(blank, whole_frame_fallback=True)
  assert not box.detected and box.as_tuple() == (0, 0, 90, 80)
  assert cropped.shape == blank.shape
  with pytest.raises(ValueError, match="margin"):
    face.face_box(blank[0], margin=-0.1)


def test_real_face_box_holds_the_eyes(shared):
  image = cv2.imread(str(shared("landmarks", "takeo.ppm")))
  lines = shared("landmarks", "takeo.pts").read_text().split("{")[1].split("}")[0].split("\n")
  points = np.array([[float(v) for v in line.split()] for line in lines if line.strip()]) - 1
  box = face.face_box(image)
  eyes = points[36:48]
  assert box.detected
  assert np.all((eyes[:, 0] > box.x0) & (eyes[:, 0] < box.x1))
  assert np.all((eyes[:, 1] > box.y0) & (eyes[:, 1] < box.y1))
