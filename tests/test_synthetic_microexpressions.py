"""Tests of the synthetic micro-expression databases and their release-layout writers."""
import dataclasses
import os
import re

import cv2
import numpy as np
import openpyxl
import pytest

from subtle_core.faces import render
from tgsr_jax import layout
from tgsr_jax.synthetic import microexpressions as me

_CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def _quiet(spec, **kw):
  """A spec without head jitter and sensor noise (so apex - neutral is the movement only)."""
  return dataclasses.replace(spec, jitter=0.0,
                             sensor=dataclasses.replace(spec.sensor, noise_sigma=0.0), **kw)


def _crop(frame, box, size=112):
  x, y, w, h = box
  grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
  m = np.array([[size / w, 0, -x * size / w], [0, size / h, -y * size / h]])
  return cv2.warpAffine(grey.astype(np.float32), m, (size, size), flags=cv2.INTER_AREA)


def _block_mask(flags8, size=112):
  bounds = layout.block_bounds(size, 8)
  mask = np.zeros((size, size), bool)
  for r in range(8):
    for c in range(8):
      if flags8[r, c]:
        mask[bounds[r]:bounds[r + 1], bounds[c]:bounds[c + 1]] = True
  return mask


def test_apex_difference_concentrates_in_moving_regions():
  spec = _quiet(me.DATABASES["CASME2"], fps=60.0, frame_size=(240, 320), face_width=(110, 120))
  rng = np.random.default_rng(0)
  flagged = {}
  for label in (me.NEGATIVE, me.POSITIVE, me.SURPRISE):
    for _ in range(3):
      clip = me.generate_clip(spec, render.sample_subject(rng), label, rng)
      assert clip.frames.shape[1:] == (240, 320, 3) and clip.label == label
      assert 0 <= clip.onset < clip.apex < clip.offset < len(clip.frames)
      regions = me.moving_regions(clip.neutral_landmarks, clip.apex_landmarks, clip.face_box)
      assert regions.shape == (85,) and regions.dtype == bool
      energy = (_crop(clip.frames[clip.apex], clip.face_box)
                - _crop(clip.frames[0], clip.face_box)) ** 2
      assert energy.sum() > 0
      mask = _block_mask(regions[21:].reshape(8, 8))
      assert energy[mask].sum() / energy.sum() > 0.6
      # Subtle: at most a few pixels at the 112 x 112 face scale.
      step = np.abs(clip.apex_landmarks - clip.neutral_landmarks).max() * 112 / clip.face_box[2]
      assert 0.5 < step < 5.0
      flagged.setdefault(label, []).append(regions[21:].reshape(8, 8))
  common = {k: np.mean(v, 0) > 0.5 for k, v in flagged.items()}
  # Negative and Surprise move the brows (rows 2-3 of the 8 x 8 grid), Positive the mouth.
  assert common[me.POSITIVE][5:].any() and not common[me.POSITIVE][:4].any()
  assert common[me.NEGATIVE][:4].any() and common[me.SURPRISE][:4].any()
  keys = list(common)
  for i in range(3):
    for j in range(i + 1, 3):
      assert not np.array_equal(common[keys[i]], common[keys[j]])


def test_landmark_regions_against_loop():
  rng = np.random.default_rng(1)
  box = (10.0, 20.0, 90.0, 110.0)
  pts = rng.uniform([0, 10], [110, 140], size=(50, 2))
  got = me.landmark_regions(pts, box)
  table = layout.region_table()
  for i, (px, py) in enumerate(pts):
    cx, cy = (px - box[0]) / box[2] * 112, (py - box[1]) / box[3] * 112
    for r, (s, row, col, _) in enumerate(table):
      b = layout.block_bounds(112, s)
      inside = b[col] <= cx < b[col + 1] and b[row] <= cy < b[row + 1]
      assert got[i, r] == inside
  # One moving point: one region per scale; a shifted (detected) box moves the block.
  neutral = np.array([[15.0, 25.0], [60.0, 60.0]])
  apex = neutral + [[0.0, -2.0], [0.0, 0.0]]
  flags = me.moving_regions(neutral, apex, (0, 0, 112, 112))
  assert flags.sum() == 4 and flags[[0, 1, 5, 21 + 9]].all()  # 8 x 8 block (row 1, col 1)
  flags = me.moving_regions(neutral, apex, (-14, -14, 112, 112))
  assert flags[21 + 18] and flags.sum() == 4  # (row 2, col 2)
  assert not me.moving_regions(neutral, apex, (0, 0, 112, 112), min_displacement_px=3).any()


def test_haar_detects_first_frames_of_every_database():
  rng = np.random.default_rng(3)
  hits = n = 0
  for spec in me.DATABASES.values():
    for k in range(12):
      event = me.sample_event(spec, 1 + k % 3, rng)
      event = dataclasses.replace(event, num_frames=1, profile=event.profile[:1],
                                  pose=event.pose[:1], flicker=event.flicker[:1])
      frame = me.render_clip(spec, render.sample_subject(rng), event).frames[0]
      assert frame.ndim == (2 if spec.sensor.grey else 3)
      grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
      det = _CASCADE.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5)
      n += 1
      if len(det):
        x, y, w, h = max(det, key=lambda d: d[2] * d[3])
        bx, by, bw, bh = event.face_box
        ix = max(0, min(x + w, bx + bw) - max(x, bx))
        iy = max(0, min(y + h, by + bh) - max(y, by))
        hits += ix * iy / (w * h + bw * bh - ix * iy) > 0.5
  assert hits / n >= 0.95


def test_casme2_writer_layout(tmp_path):
  spec = dataclasses.replace(me.DATABASES["CASME2"], fps=40.0, num_others=1)
  truth = me.write_casme2(tmp_path, spec, seed=5, num_clips=3)
  assert len(truth.clips) == 4 and sorted(truth.labels.tolist())[0] == me.OTHERS
  wb = openpyxl.load_workbook(tmp_path / "CASME2-coding-20140508.xlsx")
  rows = list(wb.active.iter_rows(values_only=True))
  assert rows[0] == ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                     "Action Units", "Estimated Emotion")
  assert len(rows) == 5
  emotions = {"happiness": 2, "disgust": 1, "repression": 1, "surprise": 3, "others": 0}
  for row, clip in zip(rows[1:], truth.clips):
    subject, name, _, onset, apex, offset, _, aus, emotion = row
    assert isinstance(subject, str) and re.fullmatch(r"\d\d", subject)
    assert re.fullmatch(r"EP\d\d_\d\d[a-z]?", name)
    folder = tmp_path / "CASME2_RAW_selected" / f"sub{subject}" / name
    assert str(folder) == clip.path
    files = os.listdir(folder)
    numbers = sorted(int(re.fullmatch(r"img(\d+)\.jpg", f).group(1)) for f in files)
    assert numbers == list(range(1, len(files) + 1)) and len(files) == clip.num_frames
    assert 1 < onset < apex < offset < len(files)  # neutral frames before and after
    assert (onset, apex, offset) == (clip.onset, clip.apex, clip.offset)
    assert emotions[emotion] == clip.label
    assert isinstance(aus, (int, str)) and str(aus).replace("+", "").replace("R", "").isdigit()
    img = cv2.imread(str(folder / "img1.jpg"))
    assert img.shape == (480, 640, 3)


def test_smic_writers_share_sessions_and_are_deterministic(tmp_path):
  vis = me.write_database(tmp_path / "a", "SMIC_VIS", seed=9, num_clips=3)
  nir = me.write_database(tmp_path / "a", "SMIC_NIR", seed=9, num_clips=3)
  again = me.write_database(tmp_path / "b", "SMIC_NIR", seed=9, num_clips=3)
  other = me.write_database(tmp_path / "c", "SMIC_NIR", seed=10, num_clips=3)
  folders = {1: "negative", 2: "positive", 3: "surprise"}
  abbrev = {1: "ne", 2: "po", 3: "sur"}
  for v, n in zip(vis.clips, nir.clips):
    assert (v.clip, v.label, v.subject) == (n.clip, n.label, n.subject)
    np.testing.assert_array_equal(v.apex_landmarks, n.apex_landmarks)
    assert re.fullmatch(rf"s{v.subject}_{abbrev[v.label]}_\d\d", v.clip)
    expected = (tmp_path / "a" / "SMIC" / "NIR" / f"s{n.subject}" / "micro" / folders[n.label]
                / n.clip)
    assert n.path == str(expected)
    files = sorted(os.listdir(n.path))
    assert files == [f"image{i:06d}.bmp" for i in range(1, len(files) + 1)]
    assert (n.onset, n.offset, n.num_frames) == (1, len(files), len(files))
    grey = cv2.imread(os.path.join(n.path, files[0]), cv2.IMREAD_UNCHANGED)
    colour = cv2.imread(os.path.join(v.path, files[0]), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2 and colour.ndim == 3
  for n, a in zip(nir.clips, again.clips):
    for f in os.listdir(n.path):
      with open(os.path.join(n.path, f), "rb") as x, open(os.path.join(a.path, f), "rb") as y:
        assert x.read() == y.read()
  assert [c.apex_landmarks.tobytes() for c in other.clips] != \
      [c.apex_landmarks.tobytes() for c in nir.clips]


def test_write_database_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown database"):
    me.write_database(tmp_path, "CASME3", seed=0)
  with pytest.raises(ValueError, match="num_clips"):
    me.write_database(tmp_path, "SMIC_HS", seed=0, num_clips=0)
