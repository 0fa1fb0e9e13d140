"""The shared face conventions and detector (subtle_core.faces.ibug, subtle_core.faces.detect)."""
import concurrent.futures
import threading

import cv2
import numpy as np
import pytest

from subtle_core.faces import detect
from subtle_core.faces import ibug
from subtle_core.faces import render


def _mirror_from_pairs():
  """Independent construction of the iBUG-68 mirror permutation from symmetric pairs."""
  pairs = []
  pairs += [(i, 16 - i) for i in range(17)]  # jaw 0..16
  pairs += [(17 + i, 26 - i) for i in range(10)]  # brows 17..26
  pairs += [(i, i) for i in range(27, 31)]  # nose bridge
  pairs += [(31 + i, 35 - i) for i in range(5)]  # nostrils 31..35
  # Eyes: 36-41 (right) and 42-47 (left), both clockwise from the outer/inner corner.
  pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
  pairs += [(45, 36), (44, 37), (43, 38), (42, 39), (47, 40), (46, 41)]
  pairs += [(48 + i, 54 - i) for i in range(7)]  # outer lip top 48..54
  pairs += [(55 + i, 59 - i) for i in range(5)]  # outer lip bottom 55..59
  pairs += [(60 + i, 64 - i) for i in range(5)]  # inner lip top 60..64
  pairs += [(65 + i, 67 - i) for i in range(3)]  # inner lip bottom 65..67
  perm = np.full(68, -1, dtype=np.int64)
  for a, b in pairs:
    perm[a] = b
  return perm


def _iou(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
  iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
  return ix * iy / (aw * ah + bw * bh - ix * iy)


def _face(seed, box, size):
  subject = render.sample_subject(np.random.default_rng(seed))
  return render.render_face(subject, render.neutral_landmarks(subject, box), image_size=size,
                            face_box=box)


# ------------------------------------------------------------------------------------- iBUG-68


def test_mirror_permutation_pairs():
  m = ibug.MIRROR_INDEX
  np.testing.assert_array_equal(m, _mirror_from_pairs())
  np.testing.assert_array_equal(m[m], np.arange(68))  # an involution
  for a, b in [(0, 16), (8, 8), (17, 26), (21, 22), (27, 27), (31, 35), (33, 33), (36, 45),
               (37, 44), (39, 42), (40, 47), (41, 46), (48, 54), (51, 51), (57, 57), (59, 55),
               (60, 64), (62, 62), (66, 66), (65, 67)]:
    assert m[a] == b and m[b] == a


def test_index_groups_partition_the_68_points():
  groups = [ibug.JAW, ibug.RIGHT_BROW, ibug.LEFT_BROW, ibug.NOSE_BRIDGE, ibug.NOSE_LOWER,
            ibug.RIGHT_EYE, ibug.LEFT_EYE, ibug.OUTER_LIPS, ibug.INNER_LIPS]
  np.testing.assert_array_equal(np.concatenate(groups), np.arange(ibug.NUM_LANDMARKS))
  # The mirror maps each side's group onto the other side's.
  for right, left in [(ibug.RIGHT_EYE, ibug.LEFT_EYE), (ibug.RIGHT_BROW, ibug.LEFT_BROW)]:
    assert set(ibug.MIRROR_INDEX[right]) == set(left)
  assert ibug.MIRROR_INDEX[ibug.RIGHT_EYE_OUTER_CORNER] == ibug.LEFT_EYE_OUTER_CORNER
  with pytest.raises(ValueError, match="read-only"):
    ibug.MIRROR_INDEX[0] = 3  # shared by both systems: not editable in place


def test_conventions_on_a_real_annotation(shared):
  text = shared("landmarks", "einstein.pts").read_text()
  body = text.split("{")[1].split("}")[0].split()
  points = np.array(body, np.float64).reshape(-1, 2) - 1
  # The subject's right eye is on the image left, its outer corner the leftmost eye point.
  assert points[ibug.RIGHT_EYE, 0].max() < points[ibug.LEFT_EYE, 0].min()
  assert points[ibug.RIGHT_EYE_OUTER_CORNER, 0] == points[36:48, 0].min()
  assert points[ibug.LEFT_EYE_OUTER_CORNER, 0] == points[36:48, 0].max()
  # A mirrored annotation (x -> -x, points permuted) is again a face with the same layout.
  flipped = points[ibug.MIRROR_INDEX] * [-1, 1]
  assert flipped[ibug.RIGHT_EYE, 0].max() < flipped[ibug.LEFT_EYE, 0].min()
  assert flipped[0, 0] < flipped[8, 0] < flipped[16, 0]  # jaw from image left to right


# ------------------------------------------------------------------------------------- detector


def test_largest_detection_wins():
  small = _face(1, box=(20, 20, 60, 60), size=(260, 300))
  big = _face(2, box=(130, 60, 150, 150), size=(260, 300))
  # Two faces side by side on one image.
  image = np.where(np.arange(300)[None, :, None] < 110, small, big)
  found = detect.detect_faces(image, channels="rgb", min_size_fraction=0.1)
  assert len(found) >= 2
  areas = found[:, 2] * found[:, 3]
  assert np.all(np.diff(areas) <= 0)  # largest first
  assert _iou(detect.largest_face(image, channels="rgb"), (130, 60, 150, 150)) > 0.6


def test_channel_orders_and_grey_give_the_same_face():
  rgb = _face(0, box=(50, 40, 100, 100), size=(200, 180))
  grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
  box = detect.largest_face(grey)
  assert _iou(box, (50, 40, 100, 100)) > 0.7
  assert detect.largest_face(rgb, channels="rgb") == box
  assert detect.largest_face(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr") == box
  assert detect.largest_face(grey[..., None]) == box
  assert detect.largest_face(grey.astype(np.float32) + 0.2) == box  # rounded to uint8
  np.testing.assert_array_equal(detect.to_gray_uint8(rgb, "rgb"), grey)
  with pytest.raises(ValueError, match="channels"):
    detect.detect_faces(rgb, channels="hsv")
  with pytest.raises(ValueError, match=r"\(H, W\)"):
    detect.detect_faces(np.zeros((2, 8, 8, 3), np.uint8))
  with pytest.raises(TypeError, match="min_neighbours"):
    detect.largest_face(grey, min_neighbours=3)


def test_retry_pass_finds_a_face_the_first_pass_misses():
  # A face of about 110 pixels in a 220-pixel image: its scale falls between two levels of the
  # default pyramid (scale factor 1.1, 5 neighbours), which finds nothing.
  image = cv2.resize(_face(4, box=(60, 50, 120, 120), size=(240, 240)), (220, 220),
                     interpolation=cv2.INTER_AREA)
  truth = [v * 220 / 240 for v in (60, 50, 120, 120)]
  assert len(detect.detect_faces(image, channels="rgb")) == 0
  retry = detect.detect_faces(image, channels="rgb", **detect.RETRY_PARAMS)
  box = detect.largest_face(image, channels="rgb")
  assert box == tuple(int(v) for v in retry[0]) and _iou(box, truth) > 0.6
  # A caller who sets the pass parameters gets exactly that pass, without the retry.
  assert detect.largest_face(image, channels="rgb", scale_factor=1.1) is None
  # The size floor holds for both passes.
  assert detect.largest_face(image, channels="rgb", min_side=150) is None


def test_no_face_on_a_blank_image():
  blank = np.full((80, 100, 3), 128, np.uint8)
  assert detect.detect_faces(blank).shape == (0, 4)
  assert detect.largest_face(blank) is None


def test_detection_from_many_threads_matches_one_thread():
  images = [_face(s, box=(30 + 5 * s, 30, 90, 90), size=(170, 180)) for s in range(4)]
  images.append(np.full((100, 100, 3), 90, np.uint8))
  expected = [detect.largest_face(im, channels="rgb") for im in images]
  assert sum(e is not None for e in expected) == 4
  cascades = set()

  def work(k):
    cascades.add(id(detect._cascade()))  # noqa: SLF001
    return detect.largest_face(images[k % len(images)], channels="rgb")

  barrier = threading.Barrier(4)

  def start(k):
    barrier.wait(timeout=60)  # the four threads detect at the same time
    return work(k)

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    got = list(pool.map(start, range(4))) + list(pool.map(work, range(4, 4 * len(images))))
  assert got == [expected[k % len(images)] for k in range(4 * len(images))]
  assert len(cascades) == 4  # one classifier per thread
