"""Tests of the synthetic MTL datasets and their release-layout writers."""
import csv
import os
import re

import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from configs import mtl as mtl_configs
from mtl_flax import datasets
from mtl_flax import settings
from mtl_flax import tasks
from mtl_flax.data import synthetic
from subtle_core.faces import render


def test_expression_dataset_shapes_and_determinism():
  x, y, s = synthetic.make_expression_dataset(40, seed=3, image_size=48)
  assert x.shape == (40, 48, 48, 3) and x.dtype == np.uint8
  assert y.dtype == np.int32 and s.dtype == np.int32
  assert y.min() >= 0 and y.max() < 13 and np.bincount(y, minlength=13).min() >= 3
  x2, y2, s2 = synthetic.make_expression_dataset(40, seed=3, image_size=48)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  np.testing.assert_array_equal(s, s2)
  x3, _, _ = synthetic.make_expression_dataset(40, seed=4, image_size=48)
  assert np.abs(x.astype(int) - x3).mean() > 5
  _, y4, _ = synthetic.make_expression_dataset(20, num_classes=4, seed=3, image_size=32)
  assert set(y4.tolist()) == {0, 1, 2, 3}
  with pytest.raises(ValueError, match="num_classes"):
    synthetic.make_expression_dataset(5, num_classes=14, seed=0)
  with pytest.raises(ValueError, match="domain"):
    synthetic.make_expression_dataset(5, seed=0, domain="C")


def test_landmark_dataset_and_disjoint_subjects():
  x, lm, subj = synthetic.make_landmark_dataset(30, seed=3, image_size=64, return_subjects=True)
  assert x.shape == (30, 64, 64, 3) and x.dtype == np.uint8
  assert lm.shape == (30, 68, 2) and lm.dtype == np.float32
  assert lm.min() > 0 and lm.max() < 1
  assert subj.shape == (30,)
  # (x, y) order: the right eye (36-41) is left of the left eye unless rotated > 90 degrees.
  assert np.all(lm[:, 36:42, 0].mean(1) < lm[:, 42:48, 0].mean(1))
  assert np.all(lm[:, 17:27, 1].mean(1) < lm[:, 48:68, 1].mean(1))
  # The eye pixels are darker than the cheek below them (the landmarks sit on the features).
  px = lm * 64 - 0.5
  grey = x.mean(-1)
  contrast = []
  for img, p in zip(grey, px):
    eye = p[36:42].mean(0)  # the right pupil
    cheek = eye + (p[33] - p[27]) * 0.5
    ey, ex = int(round(eye[1])), int(round(eye[0]))
    cy, cx = int(round(cheek[1])), int(round(cheek[0]))
    contrast.append(img[cy - 1:cy + 2, cx - 1:cx + 2].mean()
                    - img[ey - 1:ey + 2, ex - 1:ex + 2].min())
  assert np.mean(contrast) > 15 and np.mean(np.array(contrast) > 0) > 0.8
  np.testing.assert_array_equal(synthetic.make_landmark_dataset(30, seed=3, image_size=64)[1], lm)
  expr = synthetic.subject_pool(3, "expression", 20)
  land = synthetic.subject_pool(3, "landmark", 20)
  basic = synthetic.subject_pool(3, "basic", 20)
  assert not set(expr) & set(land) and not set(expr) & set(basic) and not set(land) & set(basic)


def test_domain_shift_is_measurable():
  xa, _ = synthetic.make_landmark_dataset(40, seed=1, image_size=48, domain="A")
  xb, _ = synthetic.make_landmark_dataset(40, seed=1, image_size=48, domain="B")
  ma, mb = xa.reshape(40, -1, 3).mean(1), xb.reshape(40, -1, 3).mean(1)
  # Mean brightness and colour balance (blue - red) separate the domains image by image.
  assert ma.mean() - mb.mean() > 30
  assert (mb[:, 2] - mb[:, 0]).min() > (ma[:, 2] - ma[:, 0]).max()
  # B has the lower contrast.
  assert xb.std(axis=(1, 2, 3)).mean() < xa.std(axis=(1, 2, 3)).mean()


def test_thirteen_classes_are_learnable():
  x, y, s = synthetic.make_expression_dataset(260, seed=0, image_size=48, images_per_subject=20)
  g = np.stack([cv2.resize(cv2.cvtColor(i, cv2.COLOR_RGB2GRAY), (24, 24),
                           interpolation=cv2.INTER_AREA) for i in x])
  g = g.reshape(len(x), -1).astype(np.float32) / 255
  for sub in np.unique(s):  # remove identity: differences from the subject's mean face
    g[s == sub] -= g[s == sub].mean(0)
  train = np.arange(len(x)) < 173
  clf = LogisticRegression(C=10, max_iter=500).fit(g[train], y[train])
  assert clf.score(g[~train], y[~train]) > 3 / 13  # chance is 1/13


def test_basic_expressions_and_sequences():
  x, y, s = synthetic.make_basic_expression_dataset(3, seed=0, image_size=48)
  assert x.shape == (21, 48, 48, 3) and sorted(set(y.tolist())) == list(range(1, 8))
  assert np.array_equal(np.bincount(s), [7, 7, 7])
  seqs = synthetic.make_expression_sequences(2, seed=0, frame_size=(120, 160), num_frames=(4, 5),
                                             codes=(5, 7))
  assert len(seqs) == 4
  for q in seqs:
    assert q.frames.shape[1:] == (120, 160, 3) and 4 <= len(q.frames) <= 5
    # Neutral first, peak last: the first frame is the neutral face.
    moved = np.abs(q.landmarks[-1] - q.landmarks[0]).max()
    assert moved > 0.03 * q.face_box[2]
    assert np.abs(q.frames[-1].astype(int) - q.frames[0]).mean() > 0.5


def test_image_folder_and_300w_writers(tmp_path):
  x, y, _ = synthetic.make_expression_dataset(6, seed=0, image_size=32, num_classes=3)
  names = ["calm", "smile", "raised"]
  rel = synthetic.write_image_folder_dataset(tmp_path / "lsemsw", x, y, names)
  with open(tmp_path / "lsemsw" / "labels.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["path"] for r in rows] == rel and [int(r["label"]) for r in rows] == y.tolist()
  for i, r in enumerate(rows):
    assert r["path"] == f"{names[y[i]]}/{i:06d}.png"
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "lsemsw" / r["path"])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, x[i])
  with pytest.raises(ValueError, match="labels"):
    synthetic.write_image_folder_dataset(tmp_path / "bad", x, y + 3, names)

  xl, lm = synthetic.make_landmark_dataset(3, seed=0, image_size=40)
  pixels = lm.astype(np.float64) * 40 - 0.5
  synthetic.write_300w(tmp_path / "300w", xl, pixels)
  for i in range(3):
    text = (tmp_path / "300w" / f"image_{i:04d}.pts").read_text()
    lines = text.splitlines()
    assert lines[:3] == ["version: 1", "n_points:  68", "{"] and lines[-1] == "}"
    assert len(lines) == 72
    pts = np.array([[float(v) for v in ln.split()] for ln in lines[3:-1]])
    np.testing.assert_allclose(pts - 1, pixels[i], atol=0.01)  # 1-based in the file
    assert cv2.imread(str(tmp_path / "300w" / f"image_{i:04d}.png")).shape == (40, 40, 3)


def test_ckplus_and_oulu_writers(tmp_path):
  seqs = synthetic.make_expression_sequences(2, seed=1, frame_size=(96, 128), num_frames=(3, 4),
                                             codes=(1, 3), unlabelled_fraction=0.5, grey=True)
  assert any(not q.labelled for q in seqs) and any(q.labelled for q in seqs)
  synthetic.write_ckplus(tmp_path / "ck", seqs)
  counters = {}
  for q in seqs:
    counters[q.subject] = counters.get(q.subject, 0) + 1
    sname, qname = f"S{q.subject:03d}", f"{counters[q.subject]:03d}"
    folder = tmp_path / "ck" / "cohn-kanade-images" / sname / qname
    files = sorted(os.listdir(folder))
    assert files == [f"{sname}_{qname}_{t:08d}.png" for t in range(1, len(q.frames) + 1)]
    assert cv2.imread(str(folder / files[0]), cv2.IMREAD_UNCHANGED).ndim == 2
    efolder = tmp_path / "ck" / "Emotion" / sname / qname
    if q.labelled:
      (emotion,) = os.listdir(efolder)
      assert emotion == f"{sname}_{qname}_{len(q.frames):08d}_emotion.txt"
      text = (efolder / emotion).read_text()
      assert re.fullmatch(r"   \d\.0000000e\+00\n", text) and float(text) == q.label
    else:
      assert not efolder.exists()

  oulu = synthetic.make_expression_sequences(1, seed=2, frame_size=(96, 128), num_frames=(3, 3),
                                             codes=(1, 5, 7))
  synthetic.write_oulu_casia(tmp_path / "oulu", oulu)
  base = tmp_path / "oulu" / "OriginalImg" / "VL" / "Strong" / "P001"
  assert sorted(os.listdir(base)) == ["Anger", "Happiness", "Surprise"]
  assert sorted(os.listdir(base / "Anger")) == ["000.jpeg", "001.jpeg", "002.jpeg"]
  contempt = synthetic.make_expression_sequences(1, seed=2, frame_size=(96, 128),
                                                 num_frames=(2, 2), codes=(2,))
  with pytest.raises(ValueError, match="Oulu-CASIA"):
    synthetic.write_oulu_casia(tmp_path / "oulu2", contempt)


# --- The planted shared structure (docs/synthetic_mtl.md). ---


def test_planted_class_fields_are_the_classes_action_units():
  fields = synthetic.planted_class_displacements()
  assert fields.shape == (13, 68, 2)
  for c, (_, aus) in enumerate(synthetic.EXPRESSION_CLASSES):
    # Reference: the action-unit table summed by hand.
    ref = sum((render.AU_DISPLACEMENTS[au] * v for au, v in aus.items()), np.zeros((68, 2)))
    np.testing.assert_allclose(fields[c], ref * synthetic.PLANTED_INTENSITY, atol=1e-12)
  assert not fields[0].any()  # neutral
  moved = np.any(fields != 0, axis=-1)
  assert moved[1:].any(axis=1).all()  # every other class moves something
  # Distinct classes have distinct fields, and each is small: under 4 % of the box.
  flat = fields.reshape(13, -1)
  assert np.linalg.norm(flat[:, None] - flat[None], axis=-1)[~np.eye(13, dtype=bool)].min() > 0
  assert np.abs(fields).max() < 0.04
  with pytest.raises(ValueError, match="num_classes"):
    synthetic.planted_class_displacements(14)


def _check_truth_geometry(truth, subjects, pool):
  """Landmarks = pose(base + displacement), base = the renderer's neutral face of the subject."""
  for i in range(len(subjects)):
    base = render.neutral_landmarks(pool[subjects[i]], truth.face_boxes[i])
    np.testing.assert_allclose(truth.neutral[i], base, atol=1e-9)
    width = truth.face_boxes[i, 2]
    assert truth.face_boxes[i, 3] == width
    planted = truth.class_displacements[truth.shown_class[i]] * truth.factor[i] * width
    np.testing.assert_allclose(truth.displacement[i], planted, atol=1e-9)
    posed = (base + planted) @ truth.poses[i][:, :2].T + truth.poses[i][:, 2]
    np.testing.assert_allclose(truth.landmarks[i], posed, atol=1e-9)
    # The pose is a small similarity (rotation under 2 degrees, scale within 2 %).
    scale = np.sqrt(abs(np.linalg.det(truth.poses[i][:, :2])))
    angle = np.degrees(np.arctan2(truth.poses[i][1, 0], truth.poses[i][0, 0]))
    assert abs(scale - 1) <= 0.0201 and abs(angle) <= 2.001


def test_planted_expression_faces_move_exactly_the_class_field():
  x, y, s, truth = synthetic.make_planted_expression_dataset(39, seed=5, image_size=48)
  assert x.shape == (39, 48, 48, 3) and x.dtype == np.uint8
  assert np.array_equal(np.bincount(y, minlength=13), np.full(13, 3))
  np.testing.assert_array_equal(truth.shown_class, y)
  np.testing.assert_array_equal(truth.factor, 1.0)
  _check_truth_geometry(truth, s, synthetic.subject_pool(5, "expression", int(s.max()) + 1))
  # Two faces of one subject differ (before pose) by exactly the difference of their fields, so
  # classes differ only at the landmarks their fields move.
  unposed = truth.neutral + truth.displacement
  pairs = [(i, j) for i in range(39) for j in range(i) if s[i] == s[j] and y[i] != y[j]]
  assert pairs
  for i, j in pairs:
    w = truth.face_boxes[i, 2]
    diff = unposed[i] - unposed[j]
    np.testing.assert_allclose(diff, (truth.class_displacements[y[i]]
                                      - truth.class_displacements[y[j]]) * w, atol=1e-9)
    still = ~(truth.moved[y[i]] | truth.moved[y[j]])
    assert np.all(diff[still] == 0)
  # The images: deterministic, and the eye is dark against the cheek where the landmarks say.
  again = synthetic.make_planted_expression_dataset(39, seed=5, image_size=48)
  np.testing.assert_array_equal(again[0], x)
  for img, p in zip(x.mean(-1), truth.landmarks):
    eye = np.round(p[36:42].mean(0)).astype(int)
    cheek = np.round(p[36:42].mean(0) + (p[33] - p[27]) * 0.5).astype(int)
    assert (img[cheek[1] - 1:cheek[1] + 2, cheek[0] - 1:cheek[0] + 2].mean()
            - img[eye[1] - 1:eye[1] + 2, eye[0] - 1:eye[0] + 2].min()) > 15


def test_planted_field_changes_the_image_only_near_the_moved_landmarks():
  # The renderer's locality: class c's face differs from the neutral face (same subject, light,
  # pose) only near the landmarks c moves.
  pool = synthetic.subject_pool(0, "expression", 1)
  box = (8.0, 8.0, 48.0, 48.0)
  prep = render.prepare_face(pool[0], image_size=(64, 64), face_box=box)
  fields = synthetic.planted_class_displacements()
  neutral = render.render_prepared(prep, prep.neutral).astype(int)
  ys, xs = np.mgrid[:64, :64]
  for c in (1, 2, 8, 12):  # mouth, brows, mouth corners, jaw
    img = render.render_prepared(prep, prep.neutral + fields[c] * box[2]).astype(int)
    changed = np.abs(img - neutral).max(-1) > 2
    assert changed.any()
    pts = prep.neutral[fields[c].any(-1)]
    dist = np.sqrt((xs[..., None] - pts[:, 0]) ** 2 + (ys[..., None] - pts[:, 1]) ** 2).min(-1)
    assert dist[changed].max() < 0.2 * box[2]


def test_planted_landmark_faces_show_the_fields_and_the_control_none():
  x, lm, s, truth = synthetic.make_planted_landmark_dataset(40, seed=2, image_size=48)
  xc, lmc, sc, control = synthetic.make_planted_landmark_dataset(40, seed=2, image_size=48,
                                                                 control=True)
  assert x.shape == (40, 48, 48, 3) and lm.shape == (40, 68, 2) and lm.dtype == np.float32
  np.testing.assert_allclose(lm, (truth.landmarks + 0.5) / 48, atol=1e-6)
  np.testing.assert_allclose(lmc, (control.landmarks + 0.5) / 48, atol=1e-6)
  assert lm.min() > 0 and lm.max() < 1
  pool = synthetic.subject_pool(2, "landmark", int(s.max()) + 1)
  _check_truth_geometry(truth, s, pool)
  _check_truth_geometry(control, sc, pool)
  # Planted: every class's field, at 0.5-1.5 times the expression faces' intensity.
  assert len(set(truth.shown_class.tolist())) >= 10  # 40 draws from 13 classes
  lo, hi = synthetic.PLANTED_LANDMARK_FACTOR
  assert truth.factor.min() >= lo and truth.factor.max() <= hi
  moved = truth.shown_class > 0
  assert np.abs(truth.displacement[moved]).max(axis=(1, 2)).min() > 0
  # Control: no displacement at all, and everything else drawn identically.
  assert not control.displacement.any() and not control.factor.any()
  np.testing.assert_array_equal(sc, s)
  np.testing.assert_array_equal(control.poses, truth.poses)
  np.testing.assert_array_equal(control.neutral, truth.neutral)
  np.testing.assert_allclose(control.landmarks, truth.landmarks - np.einsum(
      "nij,nkj->nki", truth.poses[:, :, :2], truth.displacement), atol=1e-9)
  # So the two differ exactly on the faces showing a (non-neutral) field.
  same = np.all(x.reshape(40, -1) == xc.reshape(40, -1), axis=1)
  np.testing.assert_array_equal(same, ~moved)
  # Other subjects and another domain than the expression faces.
  assert not set(pool) & set(synthetic.subject_pool(2, "expression", 20))
  xe, *_ = synthetic.make_planted_expression_dataset(40, seed=2, image_size=48)
  assert xe.mean() - x.mean() > 30


def test_synthetic_variant_reaches_the_task_generators():
  expression, landmarks = tasks.get("expression"), tasks.get("landmarks")
  xe, ye, se = expression.synthetic(26, 32, 13, 4, "planted")
  ref = synthetic.make_planted_expression_dataset(26, image_size=32, seed=4)
  np.testing.assert_array_equal(xe, ref[0])
  np.testing.assert_array_equal(ye, ref[1])
  np.testing.assert_array_equal(expression.synthetic(26, 32, 13, 4, "control")[0], xe)
  xo, _, _ = expression.synthetic(26, 32, 13, 4, "independent")
  np.testing.assert_array_equal(xo, synthetic.make_expression_dataset(26, image_size=32,
                                                                      seed=4)[0])
  _, points, _ = landmarks.synthetic(12, 32, 13, 5, "control")
  ref = synthetic.make_planted_landmark_dataset(12, image_size=32, seed=5, control=True)
  np.testing.assert_array_equal(points, ref[1])
  with pytest.raises(ValueError, match=r"data\.landmarks\.synthetic.*'planted', 'control'"):
    landmarks.synthetic(12, 32, 13, 5, "plant")


def test_config_field_selects_the_variant_everywhere():
  config = mtl_configs.get_config("runlocal")
  assert config.data.synthetic == "planted"
  config.data.synthetic = "control"  # as --config.data.synthetic=control does
  resolved = config.copy_and_resolve_references()
  assert resolved.data.expression.synthetic == resolved.data.landmarks.synthetic == "control"
  run = settings.train_settings(config)
  assert run.data_for("landmarks").synthetic == "control"
  described = datasets.describe_data(run.tasks, run.data_for, 0)
  assert described["landmarks"].endswith("variant 'control' (docs/synthetic_mtl.md)")
  train_data, test_data = datasets.load_datasets(run.tasks, run.data_for, image_size=32,
                                                 num_classes=13, seed=0)
  points = np.concatenate([train_data["landmarks"].targets, test_data["landmarks"].targets])
  ref = synthetic.make_planted_landmark_dataset(16, image_size=32, seed=1, control=True)[1]
  np.testing.assert_array_equal(np.sort(points.reshape(16, -1), 0),
                                np.sort(ref.reshape(16, -1), 0))
  config.data.synthetic = "plant"
  with pytest.raises(ValueError, match=r"data\.expression\.synthetic \(set by data\.synthetic\)"):
    datasets.check_data_config("expression", config.data.expression)
  # A config written before the field existed generated the independent data.
  del config.data.expression["synthetic"]
  assert settings.train_settings(config).data_for("expression").synthetic == "independent"
