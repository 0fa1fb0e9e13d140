"""Readers, augmentation and batching of the MTL data (mtl_flax.data)."""
import pathlib

import cv2
import numpy as np
import pytest

from mtl_flax.data import augment
from mtl_flax.data import pipeline
from mtl_flax.data import readers
from subtle_core.faces import ibug


def _parse_pts_reference(path):
  """Independent parser: the numeric lines between the braces, minus one."""
  lines = pathlib.Path(path).read_text().splitlines()
  body = lines[lines.index("{") + 1:lines.index("}")]
  return np.array([[float(v) for v in line.split()] for line in body]) - 1.0


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def _pts_text(points, n_points=None, header_spaces="  "):
  n = len(points) if n_points is None else n_points
  body = "\n".join(f"{x} {y}" for x, y in points)
  return f"version: 1\nn_points:{header_spaces}{n}\n{{\n{body}\n}}\n"


def _dot_image(size, x, y, value=255):
  image = np.zeros((size, size, 3), np.uint8)
  image[int(round(y)), int(round(x))] = value
  return cv2.GaussianBlur(image, (7, 7), 1.5)


def _peak(image):
  """Intensity centroid of the bright dot (sub-pixel, pixel-centre coordinates)."""
  grey = image[..., 0].astype(np.float64)
  grey = np.where(grey > 0.3 * grey.max(), grey, 0.0)
  ys, xs = np.mgrid[:grey.shape[0], :grey.shape[1]]
  return np.array([(xs * grey).sum(), (ys * grey).sum()]) / grey.sum()


# ------------------------------------------------------------------------------------- .pts


@pytest.mark.parametrize("name", ["einstein.pts", "takeo.pts", "breakingbad.pts"])
def test_read_pts_real_files_are_zero_based(shared, name):
  path = shared("landmarks", name)
  points = readers.read_pts(path)
  assert points.shape == (68, 2) and points.dtype == np.float32
  np.testing.assert_allclose(points, _parse_pts_reference(path), rtol=0, atol=1e-4)


def test_read_pts_header_with_extra_spaces(tmp_path):
  pts = np.arange(136, dtype=float).reshape(68, 2) + 1
  path = _write(tmp_path / "a.pts", "  version:   1 \n n_points :   68  \n  {  \n" +
                "\n".join(f"  {x}   {y} " for x, y in pts) + "\n }\n")
  np.testing.assert_allclose(readers.read_pts(path), pts - 1)


@pytest.mark.parametrize("text,message", [
    (_pts_text(np.ones((67, 2))), "n_points is 67"),
    (_pts_text(np.ones((67, 2)), n_points=68), "found 67 point lines"),
    (_pts_text([(1, 2)] * 30 + [("1.0", "abc")] + [(1, 2)] * 37), "not numeric"),
    (_pts_text(np.ones((68, 2))).replace("{", ""), "opening brace"),
    (_pts_text(np.ones((68, 2))).replace("}", ""), "closing brace"),
])
def test_read_pts_malformed_names_file(tmp_path, text, message):
  path = _write(tmp_path / "bad.pts", text)
  with pytest.raises(ValueError, match=message) as err:
    readers.read_pts(path)
  assert str(path) in str(err.value)


def test_read_pts_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pts"):
    readers.read_pts(tmp_path / "nope.pts")


def test_write_pts_round_trip(tmp_path):
  points = np.random.default_rng(0).uniform(0, 50, (68, 2)).astype(np.float32)
  readers.write_pts(tmp_path / "x.pts", points)
  np.testing.assert_allclose(readers.read_pts(tmp_path / "x.pts"), points, atol=1e-5)


def test_unreadable_image_names_file(tmp_path):
  path = _write(tmp_path / "broken.png", "not an image")
  with pytest.raises(ValueError, match="broken.png"):
    readers.read_image(path)


# ------------------------------------------------------------------------------------- 300-W


def test_load_300w_real_files(shared):
  root = shared("landmarks")
  data = readers.load_300w(root, image_size=96)  # breakingbad.pts has no image: skipped
  assert data.images.shape == (2, 96, 96, 3) and data.images.dtype == np.uint8
  assert data.landmarks.shape == (2, 68, 2)
  assert (data.landmarks > 0).all() and (data.landmarks < 1).all()
  for path, got in zip(data.paths, data.landmarks):
    zero_based = _parse_pts_reference(pathlib.Path(path).with_suffix(".pts"))
    x0, y0, side, _ = readers.landmark_box(zero_based, margin=1.3)
    # Independent form of the crop: the point's continuous coordinate relative to the box.
    expected = (zero_based + 0.5 - np.array([x0, y0])) / side
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_crop_moves_image_and_landmarks_together(tmp_path):
  size = 120
  points = np.random.default_rng(1).uniform(30, 90, (68, 2))
  points[30] = (61.0, 47.0)
  image = _dot_image(size, *points[30])
  path = tmp_path / "face.png"
  cv2.imwrite(str(path), image)
  readers.write_pts(tmp_path / "face.pts", points)
  data = readers.load_300w(tmp_path, image_size=48)
  crop_point = augment.denormalise_landmarks(data.landmarks[0, 30], 48)
  np.testing.assert_allclose(_peak(data.images[0]), crop_point, atol=0.5)


def test_load_300w_image_without_pts(tmp_path):
  cv2.imwrite(str(tmp_path / "lonely.png"), np.zeros((20, 20, 3), np.uint8))
  with pytest.raises(FileNotFoundError, match="lonely.pts"):
    readers.load_300w(tmp_path)


# ------------------------------------------------------------------------------------- CK+, Oulu, folders


def _png(path, value=100, size=(40, 50)):
  path.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(path), np.full(size, value, np.uint8))


def _ckplus_tree(root):
  for subject, seq, frames, code in [("S005", "001", 4, "3.0000000e+00"),
                                     ("S005", "002", 3, None),
                                     ("S010", "004", 5, "   5.0000000e+00\n")]:
    for f in range(1, frames + 1):
      _png(root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{f:08d}.png",
           value=10 * f)
    if code is not None:
      _write(root / "Emotion" / subject / seq / f"{subject}_{seq}_{frames:08d}_emotion.txt", code)


def test_load_ckplus(tmp_path):
  _ckplus_tree(tmp_path)
  data = readers.load_ckplus(tmp_path, peak_frames=2, image_size=32, face_detection=False)
  assert data.images.shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(data.labels, [3, 3, 5, 5])  # S005/002 has no emotion: skipped
  np.testing.assert_array_equal(data.subjects, [5, 5, 10, 10])
  assert [pathlib.Path(p).name for p in data.paths] == [
      "S005_001_00000003.png", "S005_001_00000004.png", "S010_004_00000004.png",
      "S010_004_00000005.png"]
  assert data.images[1].mean() == pytest.approx(40, abs=1)  # the last (peak) frame
  neutral = readers.load_ckplus(tmp_path, peak_frames=1, include_neutral=True, image_size=32,
                                face_detection=False)
  np.testing.assert_array_equal(neutral.labels, [0, 3, 0, 5])


def test_load_ckplus_bad_emotion_code(tmp_path):
  _ckplus_tree(tmp_path)
  bad = _write(tmp_path / "Emotion/S010/004/S010_004_00000005_emotion.txt", "9.0")
  with pytest.raises(ValueError, match="0-7") as err:
    readers.load_ckplus(tmp_path, face_detection=False)
  assert str(bad) in str(err.value)
  for text in ("nan", "inf", "-inf", "2.5"):
    _write(bad, text)
    with pytest.raises(ValueError, match="0-7") as err:
      readers.load_ckplus(tmp_path, face_detection=False)
    assert str(bad) in str(err.value)


def test_load_oulu_casia(tmp_path):
  base = tmp_path / "OriginalImg" / "VL" / "Strong"
  for subject in ("P001", "P002"):
    for expr in ("Anger", "Surprise"):
      for f in range(4):
        _png(base / subject / expr / f"{f:03d}.jpeg", value=50 + f)
  data = readers.load_oulu_casia(tmp_path, peak_frames=3, image_size=24, face_detection=False)
  assert data.images.shape == (12, 24, 24, 3)
  np.testing.assert_array_equal(data.labels, [0] * 3 + [5] * 3 + [0] * 3 + [5] * 3)
  np.testing.assert_array_equal(data.subjects, [1] * 6 + [2] * 6)
  _png(base / "P002" / "Boredom" / "000.jpeg")
  with pytest.raises(ValueError, match="Boredom"):
    readers.load_oulu_casia(tmp_path, face_detection=False)


def test_load_image_folder_and_csv(tmp_path):
  for name, value in (("happy", 10), ("sad", 20)):
    for i in range(3):
      _png(tmp_path / name / f"{i:06d}.png", value=value)
  # What a Mac or a notebook leaves in a dataset: no class, no image.
  _png(tmp_path / ".ipynb_checkpoints" / "000000.png")
  (tmp_path / "happy" / "._000000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
  folders = readers.load_image_folder(tmp_path, image_size=16)
  assert folders.class_names == ("happy", "sad")
  np.testing.assert_array_equal(folders.labels, [0, 0, 0, 1, 1, 1])
  _write(tmp_path / "labels.csv",
         "path,label\nsad/000000.png,1\nhappy/000001.png,0\nsad/000002.png,sad\n")
  rows = readers.load_image_folder(tmp_path, class_names=("happy", "sad"), image_size=16)
  np.testing.assert_array_equal(rows.labels, [1, 0, 1])
  assert rows.images[0].mean() == pytest.approx(20, abs=1)
  _write(tmp_path / "labels.csv", "path,label\nsad/000000.png,1\nhappy/000001.png,13\n")
  with pytest.raises(ValueError, match=r"labels.csv row 2: label 13 out of range \[0, 13\)"):
    readers.load_image_folder(tmp_path, num_classes=13)


def test_haar_crop_finds_nothing_on_blank_image():
  blank = np.full((80, 100, 3), 128, np.uint8)
  assert readers.detect_face(blank) is None
  assert readers.crop_face(blank, image_size=32, face_detection=True).shape == (32, 32, 3)


def test_haar_crop_uses_the_shared_retry_pass():
  from subtle_core.faces import detect
  from subtle_core.faces import render
  subject = render.sample_subject(np.random.default_rng(4))
  box = (60, 50, 120, 120)
  rgb = render.render_face(subject, render.neutral_landmarks(subject, box), image_size=(240, 240),
                           face_box=box)
  image = cv2.resize(rgb, (220, 220), interpolation=cv2.INTER_AREA)
  # The reader's first pass alone (its size floor of 20 pixels) misses this face ...
  assert len(detect.detect_faces(image, channels="rgb", min_side=20)) == 0
  # ... and the second pass finds it: the reader crops the face, not the centre square.
  found = readers.detect_face(image)
  truth = [v * 220 / 240 for v in box]
  assert _iou(found, truth) > 0.6
  crop = readers.crop_face(image, image_size=32, face_detection=True)
  assert not np.array_equal(crop, readers.crop_face(image, image_size=32))


# ------------------------------------------------------------------------------------- augmentation


def test_flip_twice_is_identity_and_symmetric_face_is_fixed(shared):
  points = readers.read_pts(shared("landmarks", "einstein.pts"))
  normalised = (points - points.min(0)) / (points.max(0) - points.min(0)) * 0.8 + 0.1
  image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
  img2, pts2 = augment.horizontal_flip(*augment.horizontal_flip(image, normalised))
  np.testing.assert_array_equal(img2, image)
  np.testing.assert_allclose(pts2, normalised, atol=1e-6)
  mirrored = normalised[ibug.MIRROR_INDEX].copy()
  mirrored[:, 0] = 1 - mirrored[:, 0]
  symmetric = (normalised + mirrored) / 2  # a perfectly left-right symmetric face
  _, flipped = augment.horizontal_flip(image, symmetric)
  np.testing.assert_allclose(flipped, symmetric, atol=1e-6)
  # The flipped right outer eye corner is where the left one was mirrored to.
  _, flipped_real = augment.horizontal_flip(image, normalised)
  np.testing.assert_allclose(flipped_real[45], [1 - normalised[36, 0], normalised[36, 1]],
                             atol=1e-6)


def test_flip_moves_pixels_with_points():
  size = 40
  point = np.zeros((68, 2), np.float32) + 0.5
  point[36] = augment.normalise_landmarks(np.array([9.0, 14.0]), size)
  image = _dot_image(size, 9, 14)
  flipped, moved = augment.horizontal_flip(image, point)
  np.testing.assert_allclose(_peak(flipped),
                             augment.denormalise_landmarks(moved[45], size), atol=0.5)


def test_affine_landmarks_match_cv2_transform_and_pixels():
  size = 64
  rng = np.random.default_rng(3)
  matrix = augment.affine_matrix(size, rotation_deg=17.0, scale=1.1, shift=(0.05, -0.03))
  points_px = rng.uniform(15, 48, (68, 2)).astype(np.float32)
  points_px[0] = (30.0, 22.0)
  image = _dot_image(size, *points_px[0])
  warped, moved = augment.warp(image, matrix, size, points_px)
  expected = cv2.transform(points_px[None].astype(np.float64), matrix)[0]
  np.testing.assert_allclose(moved, expected, atol=1e-4)
  np.testing.assert_allclose(_peak(warped), moved[0], atol=0.5)


def test_random_crop_and_landmark_augmentation_consistent():
  size = 48
  rng = np.random.default_rng(0)
  points = rng.uniform(0.3, 0.7, (68, 2)).astype(np.float32)
  points[10] = augment.normalise_landmarks(np.array([20.0, 27.0]), size)
  image = _dot_image(size, 20, 27)
  params = augment.LandmarkAugment(flip_probability=0.0, noise_std=0.0)
  for seed in range(3):
    for fn in (lambda i, p, r: augment.random_crop(i, p, r),
               lambda i, p, r: augment.augment_landmarks(i, p, r, params)):
      out, moved = fn(image, points, np.random.default_rng(seed))
      np.testing.assert_allclose(_peak(out), augment.denormalise_landmarks(moved[10], size),
                                 atol=0.5)


def test_augmentation_is_seeded():
  image = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
  points = np.full((68, 2), 0.5, np.float32)
  a = augment.augment_landmarks(image, points, np.random.default_rng(7))
  b = augment.augment_landmarks(image, points, np.random.default_rng(7))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  noisy = augment.gaussian_noise(image, np.random.default_rng(1), 5.0)
  assert 3 < np.std(noisy.astype(float) - image) < 7


# ------------------------------------------------------------------------------------- pipeline


def test_subject_kfold_is_subject_independent():
  subjects = np.repeat(np.arange(23), np.random.default_rng(0).integers(1, 6, 23))
  folds = pipeline.subject_kfold(subjects, 5, seed=1)
  assert len(folds) == 5
  seen = np.concatenate([test for _, test in folds])
  np.testing.assert_array_equal(np.sort(seen), np.arange(len(subjects)))  # each sample once
  for train, test in folds:
    assert not set(subjects[train]) & set(subjects[test])
    assert len(train) + len(test) == len(subjects)
  counts = [len(np.unique(subjects[test])) for _, test in folds]
  assert max(counts) - min(counts) <= 1
  with pytest.raises(ValueError, match="3 subjects cannot fill 5"):
    pipeline.subject_kfold([1, 2, 3, 3], 5)


def test_epoch_batches_cover_each_sample_once_per_epoch():
  n, b = 10, 4
  stream = np.concatenate([pipeline.epoch_batch_indices(n, b, s, seed=3) for s in range(5)])
  for epoch in range(2):
    np.testing.assert_array_equal(np.sort(stream[epoch * n:(epoch + 1) * n]), np.arange(n))
  np.testing.assert_array_equal(pipeline.epoch_batch_indices(n, b, 3, seed=3), stream[12:16])


def test_train_batch_is_a_function_of_the_step():
  rng = np.random.default_rng(0)
  datasets = {
      "expression": pipeline.TaskData(rng.integers(0, 255, (9, 16, 16, 3), dtype=np.uint8),
                                      rng.integers(0, 13, 9).astype(np.int32)),
      "landmarks": pipeline.TaskData(rng.integers(0, 255, (7, 16, 16, 3), dtype=np.uint8),
                                     rng.uniform(0.2, 0.8, (7, 68, 2)).astype(np.float32)),
  }
  tasks = ("expression", "landmarks")
  a = pipeline.train_batch(5, datasets, tasks, 4, seed=1)
  b = pipeline.train_batch(5, datasets, tasks, 4, seed=1)
  c = pipeline.train_batch(6, datasets, tasks, 4, seed=1)
  assert a["images"].shape == (2, 4, 16, 16, 3)
  assert a["labels"].shape == (4,) and a["landmarks"].shape == (4, 136)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["images"], c["images"])
  plain = pipeline.train_batch(5, datasets, tasks, 4, seed=1, augmentation=False)
  idx = pipeline.epoch_batch_indices(9, 4, 5, seed=1, stream=0)
  np.testing.assert_array_equal(plain["images"][0], datasets["expression"].images[idx])
  np.testing.assert_array_equal(a["labels"], datasets["expression"].targets[idx])


# ------------------------------------------------------------------------------------- with the synthetic writers


def _iou(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
  return inter / (aw * ah + bw * bh - inter)


def test_readers_load_the_synthetic_releases(tmp_path):
  synthetic = pytest.importorskip("mtl_flax.data.synthetic")
  seqs = synthetic.make_expression_sequences(2, seed=0, frame_size=(120, 160), num_frames=(3, 4),
                                             unlabelled_fraction=0.3)
  synthetic.write_ckplus(tmp_path / "ck", seqs)
  ck = readers.load_ckplus(tmp_path / "ck", peak_frames=2, image_size=32)
  labelled = [q for q in seqs if q.labelled]
  assert len(labelled) < len(seqs)  # unlabelled sequences exist and are skipped
  np.testing.assert_array_equal(ck.labels, np.repeat([q.label for q in labelled], 2))
  np.testing.assert_array_equal(ck.subjects, np.repeat([q.subject for q in labelled], 2))
  # The Haar cascade finds the drawn face.
  frame = seqs[0].frames[-1]
  assert _iou(readers.detect_face(frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, -1)),
              seqs[0].face_box) > 0.5

  oulu_seqs = synthetic.make_expression_sequences(2, seed=1, frame_size=(120, 160),
                                                  num_frames=(3, 3), codes=(1, 3, 4, 5, 6, 7))
  synthetic.write_oulu_casia(tmp_path / "oulu", oulu_seqs)
  oulu = readers.load_oulu_casia(tmp_path / "oulu", peak_frames=1, image_size=32)
  ck_to_oulu = {1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
  assert sorted(zip(oulu.subjects, oulu.labels)) == sorted(
      (q.subject, ck_to_oulu[q.label]) for q in oulu_seqs)

  images, labels, _ = synthetic.make_expression_dataset(6, image_size=32, seed=0)
  synthetic.write_image_folder_dataset(tmp_path / "lsemsw", images, labels,
                                       synthetic.EXPRESSION_CLASS_NAMES)
  folder = readers.load_image_folder(tmp_path / "lsemsw", num_classes=13, image_size=32)
  np.testing.assert_array_equal(np.sort(folder.labels), np.sort(labels))


def test_separate_test_root_uses_the_training_class_order(tmp_path):
  import ml_collections
  from mtl_flax import train
  for root, names in (("train", ("anger", "happy", "sad")), ("test", ("happy", "sad"))):
    for value, name in enumerate(names):
      _png(tmp_path / root / name / "000000.png", value=10 * value)
  data_config = ml_collections.ConfigDict({
      "source": "image_folder", "path": str(tmp_path / "train"),
      "test_path": str(tmp_path / "test"), "face_detection": False,
      "cache_dir": str(tmp_path / "cache")})
  train_set, test_set = train.load_task_data("expression", data_config, image_size=16,
                                             num_classes=13, seed=0)
  np.testing.assert_array_equal(train_set.targets, [0, 1, 2])
  np.testing.assert_array_equal(test_set.targets, [1, 2])  # happy, sad: not 0, 1
  _png(tmp_path / "test" / "fear" / "000000.png")
  with pytest.raises(ValueError, match=r"class folders \['fear'\] are not among class_names"):
    train.load_task_data("expression", data_config, image_size=16, num_classes=13, seed=0)


def test_synthetic_landmark_split_is_by_subject():
  import ml_collections
  from mtl_flax import train
  from mtl_flax.data import synthetic
  data_config = ml_collections.ConfigDict({"source": "synthetic", "num": 24,
                                           "test_fraction": 0.25})
  train_set, test_set = train.load_task_data("landmarks", data_config, image_size=24,
                                             num_classes=13, seed=0)
  assert len(train_set) + len(test_set) == 24 and len(test_set) == 8
  assert not set(train_set.subjects.tolist()) & set(test_set.subjects.tolist())
  _, _, subjects = synthetic.make_landmark_dataset(24, image_size=24, seed=1, domain="B",
                                                   return_subjects=True)
  assert sorted(train_set.subjects.tolist() + test_set.subjects.tolist()) == sorted(
      subjects.tolist())


def _noise_png(path, seed):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = np.random.default_rng(seed).integers(0, 256, (30, 40, 3)).astype(np.uint8)
  cv2.imwrite(str(path), cv2.GaussianBlur(image, (3, 3), 1))


def _tree_state(root):
  return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_image_folder_source_reads_through_the_cache(tmp_path, caplog, monkeypatch):
  import logging
  import os

  import ml_collections
  from mtl_flax import datasets
  root = tmp_path / "lsemsw"
  for i in range(8):
    _noise_png(root / ("happy", "sad")[i % 2] / f"{i:02d}.png", seed=i)
  config = ml_collections.ConfigDict({
      "source": "image_folder", "path": str(root), "test_path": "", "face_detection": False,
      "test_fraction": 0.25, "cache_dir": str(tmp_path / "cache")})

  def load(**fields):
    caplog.clear()
    with caplog.at_level(logging.INFO):
      out = datasets.load_task_data("expression", ml_collections.ConfigDict(
          {**config.to_dict(), **fields}), image_size=16, num_classes=13, seed=3,
                                    progress=False)
    decoded = [r.getMessage() for r in caplog.records if " images, " in r.getMessage()]
    return out, decoded

  def cold_reference():
    # Today's reader, one image at a time and no cache, then the split of the same seed.
    full = readers.load_image_folder(root, num_classes=13, image_size=16, num_workers=1)
    train_idx, test_idx = pipeline.split_random(len(full.labels), 0.25, seed=3)
    return [(full.images[i], full.labels[i]) for i in (train_idx, test_idx)]

  def check(got):
    for data, (images, labels) in zip(got, cold_reference()):
      np.testing.assert_array_equal(data.images, images)
      np.testing.assert_array_equal(data.targets, labels)

  (train_set, test_set), decoded = load()
  assert len(train_set) == 6 and len(test_set) == 2 and decoded[0].endswith(
      f"8 images, 8 decoded, 0 from the cache (cache {tmp_path / 'cache'})")
  check((train_set, test_set))
  # Second start: no image decoded; both sets memory-mapped from one crop file.
  (train_set, test_set), decoded = load()
  assert "8 images, 0 decoded" in decoded[0]
  assert isinstance(train_set.images, np.memmap) and isinstance(test_set.images, np.memmap)
  assert train_set.images.filename == test_set.images.filename
  check((train_set, test_set))
  # A touched file (same bytes, new time) and an added file are decoded, nothing else.
  st = os.stat(root / "sad" / "03.png")
  os.utime(root / "sad" / "03.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  assert "8 images, 1 decoded" in load()[1][0]
  _noise_png(root / "happy" / "08.png", seed=8)
  (train_set, test_set), decoded = load()
  assert "9 images, 1 decoded" in decoded[0]
  check((train_set, test_set))
  # New content under an old name.
  _noise_png(root / "happy" / "00.png", seed=99)
  got, decoded = load()
  assert "9 images, 1 decoded" in decoded[0]
  check(got)
  # Nothing was written into the dataset root.
  written = {f"{('happy', 'sad')[i % 2]}/{i:02d}.png" for i in range(9)} | {"happy", "sad"}
  assert set(_tree_state(root)) == written
  # The default cache folder is the user's ($XDG_CACHE_HOME/subtle/datasets); 'none' writes
  # nothing and hands over in-memory arrays.
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  load(cache_dir="")
  assert list((tmp_path / "xdg" / "subtle" / "datasets").glob("image_folder-lsemsw-*.npy"))
  (train_set, _), decoded = load(cache_dir="none")
  assert not isinstance(train_set.images, np.memmap) and decoded[0].endswith("(no cache)")
  check(load(cache_dir="none")[0])
  assert set(_tree_state(root)) == written
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"data\.expression\.cache_dir: .*file is a file"):
    load(cache_dir=str(tmp_path / "file"))
