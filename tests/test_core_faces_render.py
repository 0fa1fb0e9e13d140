"""Tests of the parametric face renderer (subtle_core.faces.render)."""
import cv2
import numpy as np
import pytest

from subtle_core.faces import ibug
from subtle_core.faces import render

_CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def _iou(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
  iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
  inter = ix * iy
  return inter / (aw * ah + bw * bh - inter)


def test_neutral_landmarks_structure():
  rng = np.random.default_rng(0)
  for _ in range(20):
    subject = render.sample_subject(rng)
    box = (rng.uniform(0, 100), rng.uniform(0, 100), rng.uniform(80, 250), rng.uniform(80, 250))
    lm = render.neutral_landmarks(subject, box)
    assert lm.shape == (68, 2)
    x, y, w, h = box
    assert np.all(lm[:, 0] > x) and np.all(lm[:, 0] < x + w)
    assert np.all(lm[:, 1] > y) and np.all(lm[:, 1] < y + h)
    # The subject's right eye (36-41) is on the image left, brows above eyes above mouth.
    assert lm[36:42, 0].max() < lm[42:48, 0].min()
    assert lm[17:22, 0].mean() < lm[22:27, 0].mean()
    assert lm[17:27, 1].max() < lm[36:48, 1].min()
    assert lm[36:48, 1].max() < lm[30, 1] < lm[48:68, 1].min()
    assert lm[8, 1] > lm[:, 1].max() - 0.01 * h  # chin lowest
    assert lm[0, 0] < lm[:17, 0].min() + 0.01 * w and lm[16, 0] > lm[:17, 0].max() - 0.01 * w
    # Mirror table maps the left half onto the right half.
    mirrored = lm[ibug.MIRROR_INDEX]
    centre = x + w / 2
    np.testing.assert_allclose(2 * centre - mirrored[:, 0], lm[:, 0], atol=0.05 * w)


def test_subject_and_render_determinism():
  a = render.sample_subject(np.random.default_rng(7))
  b = render.sample_subject(np.random.default_rng(7))
  c = render.sample_subject(np.random.default_rng(8))
  assert a == b and a != c
  box = (40, 30, 120, 120)
  lm_a, lm_c = render.neutral_landmarks(a, box), render.neutral_landmarks(c, box)
  np.testing.assert_array_equal(lm_a, render.neutral_landmarks(b, box))
  assert np.abs(lm_a - lm_c).max() > 0.5
  img1 = render.render_face(a, lm_a, image_size=(200, 200), face_box=box,
                            rng=np.random.default_rng(1))
  img2 = render.render_face(b, lm_a, image_size=(200, 200), face_box=box,
                            rng=np.random.default_rng(1))
  img3 = render.render_face(c, lm_c, image_size=(200, 200), face_box=box,
                            rng=np.random.default_rng(1))
  assert img1.dtype == np.uint8 and img1.shape == (200, 200, 3)
  np.testing.assert_array_equal(img1, img2)
  assert np.abs(img1.astype(int) - img3).mean() > 5


def test_action_units_move_expected_landmarks():
  subject = render.sample_subject(np.random.default_rng(3))
  box = (0, 0, 112, 112)
  lm = render.neutral_landmarks(subject, box)
  smile = render.apply_action_units(lm, box, {12: 0.3})
  d = smile - lm
  assert d[48, 1] < -1 and d[54, 1] < -1  # corners up
  assert d[48, 0] < 0 < d[54, 0]  # and out
  assert np.abs(d[:27]).max() < 1.0 and np.abs(d[36:48]).max() < 1.0
  frown = render.apply_action_units(lm, box, {4: 0.3}) - lm
  assert np.all(frown[17:27, 1] > 0) and frown[21, 0] > 0 > frown[22, 0]
  assert np.abs(frown[48:]).max() == 0
  raise_ = render.apply_action_units(lm, box, {1: 0.3, 2: 0.3}) - lm
  assert np.all(raise_[17:27, 1] < -0.5)
  # Unilateral AU: only the subject's left side (image right) moves.
  left = render.apply_action_units(lm, box, {"L12": 0.5}) - lm
  assert np.abs(left[48]).max() == 0 and left[54, 1] < -1
  # The points the global pose is fitted on never move with an expression.
  for au, disp in render.AU_DISPLACEMENTS.items():
    assert np.abs(disp[render._RIGID]).max() == 0, au  # noqa: SLF001
  with pytest.raises(ValueError, match="action unit"):
    render.apply_action_units(lm, box, {99: 1.0})


def test_expression_moves_texture_locally():
  """A subtle AU12 changes pixels around the mouth, not around the eyes."""
  subject = render.sample_subject(np.random.default_rng(5))
  box = (20, 20, 112, 112)
  prep = render.prepare_face(subject, image_size=(160, 160), face_box=box)
  lm = render.neutral_landmarks(subject, box)
  neutral = render.render_prepared(prep, lm).astype(np.float64)
  smile = render.render_prepared(prep, render.apply_action_units(lm, box, {12: 0.25}))
  diff = np.abs(smile - neutral).sum(-1)
  mouth = diff[int(lm[50, 1]) - 8:int(lm[57, 1]) + 8, int(lm[48, 0]) - 8:int(lm[54, 0]) + 8]
  brows = diff[int(lm[19, 1]) - 6:int(lm[37, 1]) - 2, int(lm[17, 0]):int(lm[26, 0])]
  assert mouth.sum() > 100 and brows.sum() == 0
  # Skin texture next to the corner moved too (warped layer), not only the drawn lips.
  cheek = diff[int(lm[48, 1]) - 6:int(lm[48, 1]) + 2, int(lm[48, 0]) - 10:int(lm[48, 0]) - 3]
  assert cheek.mean() > 0.5


@pytest.mark.parametrize("size,face", [((480, 640), (220, 260)), ((240, 320), (100, 130))])
def test_haar_cascade_detects_rendered_faces(size, face):
  rng = np.random.default_rng(11)
  hgt, wid = size
  hits = 0
  n = 40
  for _ in range(n):
    subject = render.sample_subject(rng)
    w = rng.uniform(*face)
    box = ((wid - w) / 2 + rng.uniform(-0.1, 0.1) * wid, (hgt - w) * rng.uniform(0.25, 0.45), w, w)
    img = render.render_face(subject, render.neutral_landmarks(subject, box), image_size=size,
                             face_box=box, rng=rng)
    det = _CASCADE.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), scaleFactor=1.1,
                                    minNeighbors=5)
    if len(det):
      largest = max(det, key=lambda d: d[2] * d[3])
      hits += _iou(largest, box) > 0.5
  assert hits / n >= 0.95


def test_similarity_transform_recovers_pose():
  rng = np.random.default_rng(2)
  pts = rng.uniform(0, 100, size=(20, 2))
  m = render.pose_matrix((0, 0, 100, 100), angle_deg=7.0, scale=1.1, shift=(3, -2))
  est = render.similarity_transform(pts, render.transform_points(m, pts))
  np.testing.assert_allclose(est, m, atol=1e-9)
  # cv2's estimator as an independent reference.
  ref, _ = cv2.estimateAffinePartial2D(pts.astype(np.float32),
                                       render.transform_points(m, pts).astype(np.float32))
  np.testing.assert_allclose(est, ref, atol=1e-3)


def test_bad_arguments_raise():
  subject = render.sample_subject(np.random.default_rng(0))
  with pytest.raises(ValueError, match="face_box"):
    render.neutral_landmarks(subject, (0, 0, -1, 10))
  with pytest.raises(ValueError, match="68"):
    render.render_face(subject, np.zeros((5, 2)), image_size=(50, 50), face_box=(0, 0, 40, 40))
