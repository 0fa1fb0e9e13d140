"""Synthetic micro-expression databases with ground truth, written in the real releases' layouts.

Each clip is a subject's neutral face that makes one brief onset-apex-offset movement of specific
action units (benchmark classes: 1 = Negative, 2 = Positive, 3 = Surprise):

* Positive: AU12 (lip corners up and out), often with AU6 (cheeks, lower lids);
* Negative: AU4 (brows down and together), with AU7, AU15, AU24 or AU9 in some clips;
* Surprise: AU1 + AU2 (brows up), often with AU5 (upper lids) and a slight AU26.

A database spec (:class:`DatabaseSpec`) fixes the domain: frame rate, sensor (colour, or grey
near-infrared-like with its own contrast, gamma and noise), frame size and face size, class
balance, numbers of subjects and clips. ``SMIC_VIS`` and ``SMIC_NIR`` share their sessions: the
same subjects make the same movements, filmed by two sensors (as in the real SMIC).

Writers lay the clips out as released:

* CASME II: ``{root}/CASME2_RAW_selected/sub{NN}/{Filename}/img{N}.jpg`` (N from 1) and the coding
  sheet ``{root}/CASME2-coding-20140508.xlsx`` (Subject, Filename, -, OnsetFrame, ApexFrame,
  OffsetFrame, -, Action Units, Estimated Emotion);
* SMIC: ``{root}/SMIC/{HS|VIS|NIR}/s{k}/micro/{negative|positive|surprise}/{clip}/``
  ``image{NNNNNN}.bmp``  (NIR frames are 8-bit grey).

Everything is deterministic for a seed: regenerating gives bit-identical files.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import cv2
import numpy as np

from subtle_core import atomic
from subtle_core import images as image_files
from subtle_core.faces import ibug
from subtle_core.faces import render
from subtle_core.seeding import tagged_rng
from tgsr_jax import cdmer_io
from tgsr_jax import layout

NEGATIVE, POSITIVE, SURPRISE = 1, 2, 3
CLASS_NAMES = cdmer_io.CLASS_NAMES  # the benchmark's: 1 Negative, 2 Positive, 3 Surprise
OTHERS = 0  # CASME II clips outside the three classes ("others"), dropped by the 3-class mapping


@dataclasses.dataclass(frozen=True)
class Sensor:
  """How a camera turns the rendered RGB scene into stored frames.

  Attributes:
    name: a label.
    grey: store single-channel frames (near-infrared-like).
    grey_weights: RGB weights of the grey conversion (skin is bright in near infrared).
    gain: exposure gain applied before the tone curve.
    gamma: tone-curve exponent (output = (gain * x) ** gamma).
    contrast: contrast around mid-grey after the tone curve.
    colour_balance: per-channel gains (colour sensors only).
    noise_sigma: Gaussian noise (grey levels) added to every frame.
    blur_sigma: optical blur (pixels) of the whole frame; 0 for none.
  """
  name: str
  grey: bool = False
  grey_weights: tuple[float, float, float] = (0.299, 0.587, 0.114)
  gain: float = 1.0
  gamma: float = 1.0
  contrast: float = 1.0
  colour_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
  noise_sigma: float = 1.5
  blur_sigma: float = 0.0


@dataclasses.dataclass(frozen=True)
class DatabaseSpec:
  """The domain of one synthetic database.

  Attributes:
    name: key in :data:`DATABASES`.
    layout: 'casme2' or 'smic' (which writer lays it out).
    fps: frame rate; clip lengths in frames follow from the durations.
    frame_size: (H, W) of the frames.
    face_width: (min, max) width in pixels of the face box.
    sensor: the camera model.
    illumination: the lighting of the sessions.
    num_subjects: subjects.
    num_clips: clips of the three classes (CASME II writes ``num_others`` more).
    class_weights: relative frequency of (Negative, Positive, Surprise).
    duration_s: (min, max) onset-to-offset duration in seconds.
    padding_s: (min, max) neutral time before the onset and after the offset that is written.
    intensity: (min, max) apex intensity of the main action unit (1 = a posed expression).
    jitter: amplitude of the head movement, as a fraction of the face width.
    num_others: CASME II "others" clips (label 0).
    session: clips of databases with the same session string share subjects and movements.
    smic_folder: SMIC subset folder (HS, VIS, NIR).
  """
  name: str
  layout: str
  fps: float
  frame_size: tuple[int, int]
  face_width: tuple[float, float]
  sensor: Sensor
  illumination: render.Illumination
  num_subjects: int
  num_clips: int
  class_weights: tuple[float, float, float]
  duration_s: tuple[float, float]
  padding_s: tuple[float, float] = (0.0, 0.0)
  intensity: tuple[float, float] = (0.22, 0.38)
  jitter: float = 0.003
  num_others: int = 0
  session: str = ""
  smic_folder: str = ""


_SMIC_LIGHT = render.Illumination(direction=(-0.2, -0.5, 0.85), ambient=0.45, diffuse=0.62,
                                  colour=(1.0, 0.97, 0.9), background_top=(0.55, 0.56, 0.55),
                                  background_bottom=(0.40, 0.41, 0.42))
_NIR_LIGHT = render.Illumination(direction=(0.05, -0.25, 0.97), ambient=0.35, diffuse=0.75,
                                 colour=(1.0, 1.0, 1.0), background_top=(0.30, 0.30, 0.30),
                                 background_bottom=(0.22, 0.22, 0.22))

DATABASES: dict[str, DatabaseSpec] = {
    "CASME2": DatabaseSpec(
        name="CASME2", layout="casme2", fps=200.0, frame_size=(480, 640), face_width=(220, 260),
        sensor=Sensor("casme2-colour", gain=1.05, gamma=0.95, contrast=1.05, noise_sigma=1.5),
        illumination=render.Illumination(direction=(-0.3, -0.4, 0.87), ambient=0.45, diffuse=0.65,
                                         colour=(1.0, 0.98, 0.95),
                                         background_top=(0.70, 0.71, 0.72),
                                         background_bottom=(0.55, 0.56, 0.58)),
        num_subjects=8, num_clips=30, class_weights=(0.6, 0.22, 0.18),
        duration_s=(0.12, 0.22), padding_s=(0.01, 0.025), num_others=3, session="CASME2"),
    "SMIC_HS": DatabaseSpec(
        name="SMIC_HS", layout="smic", fps=100.0, frame_size=(240, 320), face_width=(105, 125),
        sensor=Sensor("smic-hs", gain=0.9, gamma=1.1, contrast=0.95,
                      colour_balance=(1.0, 1.0, 0.92), noise_sigma=3.0),
        illumination=_SMIC_LIGHT, num_subjects=8, num_clips=36, class_weights=(0.43, 0.31, 0.26),
        duration_s=(0.25, 0.4), session="SMIC_HS", smic_folder="HS"),
    "SMIC_VIS": DatabaseSpec(
        name="SMIC_VIS", layout="smic", fps=25.0, frame_size=(240, 320), face_width=(100, 120),
        sensor=Sensor("smic-vis", gain=1.0, gamma=1.0, contrast=1.0,
                      colour_balance=(1.02, 1.0, 0.95), noise_sigma=2.0, blur_sigma=0.5),
        illumination=_SMIC_LIGHT, num_subjects=6, num_clips=30, class_weights=(0.4, 0.32, 0.28),
        duration_s=(0.3, 0.48), session="SMIC_VN", smic_folder="VIS"),
    "SMIC_NIR": DatabaseSpec(
        name="SMIC_NIR", layout="smic", fps=25.0, frame_size=(240, 320), face_width=(100, 120),
        sensor=Sensor("smic-nir", grey=True, grey_weights=(0.62, 0.28, 0.10), gain=1.25,
                      gamma=0.8, contrast=0.85, noise_sigma=4.0, blur_sigma=0.7),
        illumination=_NIR_LIGHT, num_subjects=6, num_clips=30, class_weights=(0.4, 0.32, 0.28),
        duration_s=(0.3, 0.48), session="SMIC_VN", smic_folder="NIR"),
}


# ---------------------------------------------------------------------------------------------
# Clips.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipEvent:
  """What happens in a clip, independent of the sensor that films it.

  Attributes:
    label: 1 Negative, 2 Positive, 3 Surprise (0 for CASME II "others").
    action_units: ``{au: apex intensity}``.
    face_box: ``(x, y, w, h)`` of the neutral face (pixels).
    num_frames: clip length T.
    onset, apex, offset: 0-based frame indices (the movement spans onset..offset).
    profile: (T,) movement intensity in [0, 1] (0 = neutral, 1 = apex).
    pose: (T, 3) per-frame head jitter: x shift, y shift (pixels), in-plane angle (degrees).
    flicker: (T,) global light gain per frame.
    illumination: the lighting of this clip.
    noise_seed: seed of the sensor noise.
  """
  label: int
  action_units: Mapping[int, float]
  face_box: tuple[float, float, float, float]
  num_frames: int
  onset: int
  apex: int
  offset: int
  profile: np.ndarray
  pose: np.ndarray
  flicker: np.ndarray
  illumination: render.Illumination
  noise_seed: int


@dataclasses.dataclass(frozen=True)
class Clip:
  """A rendered clip with its ground truth.

  Attributes:
    frames: uint8 (T, H, W, 3) RGB, or (T, H, W) grey for a grey (near-infrared) sensor.
    label: 1 Negative, 2 Positive, 3 Surprise (0 "others").
    face_box: the true ``(x, y, w, h)`` of the neutral face.
    landmarks: (T, 68, 2) pixel landmarks of every frame (with the head jitter).
    neutral_landmarks: (68, 2) landmarks of the neutral face (no jitter).
    apex_landmarks: (68, 2) landmarks at the apex intensity (no jitter).
    onset, apex, offset: 0-based frame indices.
    action_units: ``{au: apex intensity}``.
    fps: frame rate.
  """
  frames: np.ndarray
  label: int
  face_box: tuple[float, float, float, float]
  landmarks: np.ndarray
  neutral_landmarks: np.ndarray
  apex_landmarks: np.ndarray
  onset: int
  apex: int
  offset: int
  action_units: Mapping[int, float]
  fps: float


def class_action_units(label: int, rng: np.random.Generator,
                       intensity: tuple[float, float] = (0.22, 0.38)) -> dict[int, float]:
  """Draws the action units (apex intensities) of a clip of class ``label``.

  Args:
    label: 1 Negative, 2 Positive, 3 Surprise, or 0 for an "others" movement.
    rng: random generator.
    intensity: range of the main action unit's apex intensity.

  Returns:
    ``{au: intensity}``.
  """
  a = float(rng.uniform(*intensity))
  r = float(rng.uniform())
  if label == POSITIVE:
    aus = {12: a}
    if r < 0.6:
      aus[6] = a * float(rng.uniform(0.5, 0.8))
  elif label == NEGATIVE:
    aus = {4: a}
    if r < 0.3:
      aus[7] = a * float(rng.uniform(0.5, 0.8))
    elif r < 0.5:
      aus[15] = a * float(rng.uniform(0.6, 0.9))
    elif r < 0.65:
      aus[24] = a * float(rng.uniform(0.6, 0.9))
    elif r < 0.8:
      aus[9] = a * float(rng.uniform(0.5, 0.8))
  elif label == SURPRISE:
    aus = {1: a, 2: a * float(rng.uniform(0.8, 1.0))}
    if r < 0.6:
      aus[5] = a * float(rng.uniform(0.5, 0.9))
    if rng.uniform() < 0.4:
      aus[26] = a * float(rng.uniform(0.2, 0.4))
  elif label == OTHERS:
    choices = ({14: a}, {17: a}, {10: a * 0.8}, {"R14": a})
    aus = dict(choices[int(rng.integers(len(choices)))])
  else:
    raise ValueError(f"label must be 0, 1, 2 or 3, got {label!r}")
  return aus


def _profile(num_frames: int, onset: int, apex: int, offset: int) -> np.ndarray:
  t = np.arange(num_frames, dtype=np.float64)
  p = np.zeros(num_frames)
  rise = (t >= onset) & (t <= apex)
  p[rise] = 0.5 - 0.5 * np.cos(np.pi * (t[rise] - onset) / max(apex - onset, 1))
  fall = (t > apex) & (t <= offset)
  p[fall] = 0.5 + 0.5 * np.cos(np.pi * (t[fall] - apex) / max(offset - apex, 1))
  p[apex] = 1.0
  return p


def sample_event(spec: DatabaseSpec, label: int, rng: np.random.Generator) -> ClipEvent:
  """Draws the movement, timing, face box, head jitter and lighting of one clip.

  Only fields that two sensors of one session share are used (frame rate, frame size, face size,
  durations, jitter), so the same generator state gives the same event for ``SMIC_VIS`` and
  ``SMIC_NIR``.
  """
  hgt, wid = spec.frame_size
  aus = class_action_units(label, rng, spec.intensity)
  bw = float(rng.uniform(*spec.face_width))
  x = (wid - bw) / 2 + float(rng.uniform(-0.08, 0.08)) * wid
  y = (hgt - bw) * float(rng.uniform(0.25, 0.45))
  box = (x, y, bw, bw)
  fps = spec.fps
  span = max(int(round(float(rng.uniform(*spec.duration_s)) * fps)), 3)
  min_pad = 1 if spec.padding_s[1] > 0 else 0
  pad_before = max(int(round(float(rng.uniform(*spec.padding_s)) * fps)), min_pad)
  pad_after = max(int(round(float(rng.uniform(*spec.padding_s)) * fps)), min_pad)
  onset = pad_before
  offset = onset + span - 1
  apex = onset + int(round(float(rng.uniform(0.35, 0.55)) * (span - 1)))
  apex = min(max(apex, onset + 1), offset - 1)
  num_frames = offset + 1 + pad_after
  # Smooth head jitter: a few sinusoids of 0.3-2 Hz (same in seconds whatever the frame rate).
  t = np.arange(num_frames) / fps
  pose = np.zeros((num_frames, 3))
  for k, amp in enumerate((spec.jitter * bw, spec.jitter * bw, 0.25)):
    freq = rng.uniform(0.3, 2.0, size=3)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.normal(size=3) / np.sqrt(3)
    wave = (weights[None, :] * np.sin(2 * np.pi * freq[None, :] * t[:, None] + phase)).sum(1)
    pose[:, k] = amp * (wave - wave[0])
  flicker = 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 6.3))
  base = spec.illumination
  d = np.asarray(base.direction) + rng.normal(0, 0.08, size=3)
  illum = dataclasses.replace(
      base, direction=tuple(float(v) for v in d),
      ambient=float(base.ambient * rng.uniform(0.95, 1.05)))
  return ClipEvent(label=int(label), action_units=aus, face_box=box, num_frames=num_frames,
                   onset=onset, apex=apex, offset=offset,
                   profile=_profile(num_frames, onset, apex, offset), pose=pose, flicker=flicker,
                   illumination=illum, noise_seed=int(rng.integers(2**31 - 1)))


def _tone_lut(sensor: Sensor, gain: float) -> np.ndarray:
  """(256, C) uint8 look-up table of the sensor's tone curve (per channel for colour)."""
  x = np.arange(256, dtype=np.float64) / 255.0
  chans = 1 if sensor.grey else 3
  balance = (1.0,) if sensor.grey else sensor.colour_balance
  out = np.empty((256, chans), np.uint8)
  for c in range(chans):
    y = np.clip(x * sensor.gain * gain * balance[c], 0, 1) ** sensor.gamma
    y = 0.5 + sensor.contrast * (y - 0.5)
    out[:, c] = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return out


class _NoiseBank:
  """Cheap per-frame Gaussian noise: two shifted, sign-flipped slices of fixed noise fields."""

  def __init__(self, shape, sigma: float, rng: np.random.Generator, pad: int = 24):
    self.shape = shape
    self.pad = pad
    self.rng = rng
    big = (shape[0] + pad, shape[1] + pad) + tuple(shape[2:])
    scale = sigma / np.sqrt(2.0)
    self.banks = [np.round(rng.standard_normal(big, dtype=np.float32) * scale).astype(np.int16)
                  for _ in range(2)]

  def sample(self) -> np.ndarray:
    h, w = self.shape[:2]
    off = self.rng.integers(0, self.pad + 1, size=4)
    signs = self.rng.choice(np.array([-1, 1], np.int16), size=2)
    a = self.banks[0][off[0]:off[0] + h, off[1]:off[1] + w]
    b = self.banks[1][off[2]:off[2] + h, off[3]:off[3] + w]
    return a * signs[0] + b * signs[1]


def _sensor_tone(rgb: np.ndarray, sensor: Sensor, lut: np.ndarray) -> np.ndarray:
  if sensor.grey:
    w = np.asarray(sensor.grey_weights, np.float32).reshape(1, 3)
    return cv2.LUT(cv2.transform(rgb, w), lut[:, 0])
  return cv2.LUT(rgb, lut.reshape(256, 1, 3))


def render_clip(spec: DatabaseSpec, subject: render.SubjectParams, event: ClipEvent) -> Clip:
  """Renders an event with the spec's sensor.

  Args:
    spec: the database (frame size, sensor, frame rate).
    subject: who makes the movement.
    event: the movement (:func:`sample_event`).

  Returns:
    The :class:`Clip`; frames are (T, H, W, 3) RGB, or (T, H, W) grey when ``spec.sensor.grey``.
  """
  box = event.face_box
  sensor = spec.sensor
  neutral = render.neutral_landmarks(subject, box)
  prep = render.prepare_face(subject, image_size=spec.frame_size, face_box=box,
                             illumination=event.illumination)
  disp = render.action_unit_displacement(event.action_units) * [box[2], box[3]]
  noise_rng = np.random.default_rng(event.noise_seed)
  shape = tuple(spec.frame_size) + (() if sensor.grey else (3,))
  noise = _NoiseBank(shape, sensor.noise_sigma, noise_rng) if sensor.noise_sigma > 0 else None
  lut = _tone_lut(sensor, 1.0)
  # The still background is toned (and blurred) once; each frame re-renders the changed region
  # with a margin that hides the blur's border.
  static = _sensor_tone(prep.skin, sensor, lut)
  blur = sensor.blur_sigma
  if blur > 0:
    static = cv2.GaussianBlur(static, (0, 0), blur)
  pad = int(np.ceil(3 * blur)) + 1 if blur > 0 else 0
  frames = np.empty((event.num_frames,) + shape, np.uint8)
  landmarks = np.empty((event.num_frames, ibug.NUM_LANDMARKS, 2))
  for t in range(event.num_frames):
    lm = neutral + event.profile[t] * disp
    dx, dy, ang = event.pose[t]
    if dx or dy or ang:
      lm = render.transform_points(render.pose_matrix(box, angle_deg=ang, shift=(dx, dy)), lm)
    landmarks[t] = lm
    (x0, y0, x1, y1), patch = render.render_region(prep, lm, margin=2 * pad)
    frame = frames[t]
    frame[...] = static
    if x1 > x0 and y1 > y0:
      toned = _sensor_tone(patch, sensor, lut)
      if blur > 0:
        toned = cv2.GaussianBlur(toned, (0, 0), blur)
      # Keep the inner part, whose blur saw real neighbours (not the patch border).
      ix0 = x0 + (pad if x0 > 0 else 0)
      iy0 = y0 + (pad if y0 > 0 else 0)
      ix1 = x1 - (pad if x1 < shape[1] else 0)
      iy1 = y1 - (pad if y1 < shape[0] else 0)
      frame[iy0:iy1, ix0:ix1] = toned[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    if event.flicker[t] != 1.0:
      cv2.convertScaleAbs(frame, frame, alpha=float(event.flicker[t]))
    if noise is not None:
      cv2.add(frame, noise.sample(), dst=frame, dtype=cv2.CV_8U)
  return Clip(frames=frames, label=event.label, face_box=box, landmarks=landmarks,
              neutral_landmarks=neutral, apex_landmarks=neutral + disp, onset=event.onset,
              apex=event.apex, offset=event.offset, action_units=dict(event.action_units),
              fps=spec.fps)


def generate_clip(spec: DatabaseSpec, subject: render.SubjectParams, label: int,
                  rng: np.random.Generator) -> Clip:
  """Draws and renders one clip of class ``label`` (see :func:`sample_event`, :func:`render_clip`).

  Args:
    spec: the database domain (e.g. ``DATABASES['CASME2']``).
    subject: the subject (:func:`subtle_core.faces.render.sample_subject`).
    label: 1 Negative, 2 Positive, 3 Surprise (0: a CASME II "others" movement).
    rng: the random generator (the only source of randomness).

  Returns:
    A :class:`Clip`.
  """
  return render_clip(spec, subject, sample_event(spec, label, rng))


# ---------------------------------------------------------------------------------------------
# Ground-truth regions.
# ---------------------------------------------------------------------------------------------


def landmark_regions(points: np.ndarray, box, *, scales: Sequence[int] = layout.SCALES,
                     crop_size: int = 112) -> np.ndarray:
  """Which multi-scale grid region contains each point: bool (N, R).

  The box is cropped and resized to ``crop_size`` as the feature pipeline does; blocks are
  ``layout.block_bounds(crop_size, s)`` (row-major, in :func:`layout.region_table` order).
  Points outside the box belong to no region.
  """
  x, y, w, h = (float(b) for b in box)
  pts = np.asarray(points, np.float64).reshape(-1, 2)
  cx = (pts[:, 0] - x) / w * crop_size
  cy = (pts[:, 1] - y) / h * crop_size
  inside = (cx >= 0) & (cx < crop_size) & (cy >= 0) & (cy < crop_size)
  table = layout.region_table(tuple(scales))
  out = np.zeros((len(pts), len(table)), bool)
  for s in sorted(set(int(v) for v in scales)):
    bounds = layout.block_bounds(crop_size, s)
    col = np.clip(np.searchsorted(bounds, cx, side="right") - 1, 0, s - 1)
    row = np.clip(np.searchsorted(bounds, cy, side="right") - 1, 0, s - 1)
    for r, (ts, tr, tc, _) in enumerate(table):
      if ts == s:
        out[:, r] = inside & (row == tr) & (col == tc)
  return out


def moving_regions(neutral_landmarks: np.ndarray, apex_landmarks: np.ndarray, box, *,
                   scales: Sequence[int] = layout.SCALES, min_displacement_px: float = 0.5,
                   crop_size: int = 112) -> np.ndarray:
  """Regions of the multi-scale grid that contain a landmark that moves.

  Args:
    neutral_landmarks: (68, 2) pixel landmarks of the neutral face.
    apex_landmarks: (68, 2) pixel landmarks at the apex.
    box: ``(x, y, w, h)`` crop box (the detected one in the pipeline, or the true one).
    scales: grid scales (default 1, 2, 4, 8: 85 regions).
    min_displacement_px: a landmark moves when it travels at least this far, in pixels of the
      ``crop_size`` x ``crop_size`` resized crop.
    crop_size: side of the resized crop.

  Returns:
    bool (R,) (85 for the default scales), in :func:`tgsr_jax.layout.region_table` order; a
    region is marked when the neutral or the apex position of a moving landmark lies in it.
  """
  n = np.asarray(neutral_landmarks, np.float64)
  a = np.asarray(apex_landmarks, np.float64)
  if n.shape != a.shape or n.ndim != 2 or n.shape[1] != 2:
    raise ValueError(f"landmarks must both be (N, 2), got {n.shape} and {a.shape}")
  _, _, w, h = (float(b) for b in box)
  step = (a - n) * [crop_size / w, crop_size / h]
  moves = np.linalg.norm(step, axis=1) >= min_displacement_px
  hit = (landmark_regions(n[moves], box, scales=scales, crop_size=crop_size).any(0)
         | landmark_regions(a[moves], box, scales=scales, crop_size=crop_size).any(0))
  return hit


# ---------------------------------------------------------------------------------------------
# Writers.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipTruth:
  """Ground truth of one written clip.

  Attributes:
    path: the clip's folder.
    database: database name.
    subject: subject number (as in the folder name).
    clip: the clip's name (CASME II Filename or SMIC clip folder).
    label: 1 Negative, 2 Positive, 3 Surprise; 0 for CASME II "others".
    emotion: the emotion word written (CASME II) or the SMIC class folder.
    face_box: true ``(x, y, w, h)`` of the neutral face in the frames.
    neutral_landmarks, apex_landmarks: (68, 2) pixel landmarks (no jitter).
    action_units: ``{au: apex intensity}``.
    onset, apex, offset: frame numbers as in the file names (1-based).
    num_frames: frames written.
  """
  path: str
  database: str
  subject: int
  clip: str
  label: int
  emotion: str
  face_box: tuple[float, float, float, float]
  neutral_landmarks: np.ndarray
  apex_landmarks: np.ndarray
  action_units: Mapping[int, float]
  onset: int
  apex: int
  offset: int
  num_frames: int


@dataclasses.dataclass(frozen=True)
class DatabaseTruth:
  """Ground truth of a written database."""
  name: str
  root: str
  spec: DatabaseSpec
  clips: tuple[ClipTruth, ...]

  @property
  def labels(self) -> np.ndarray:
    return np.array([c.label for c in self.clips], np.int32)

  @property
  def subjects(self) -> np.ndarray:
    return np.array([c.subject for c in self.clips], np.int32)


def _class_counts(total: int, weights: Sequence[float]) -> list[int]:
  w = np.asarray(weights, np.float64)
  w = w / w.sum()
  counts = np.floor(w * total).astype(int)
  order = np.argsort(-(w * total - counts), kind="stable")
  for i in order[:total - counts.sum()]:
    counts[i] += 1
  return counts.tolist()


def _plan(spec: DatabaseSpec, num_clips: int, num_subjects: int,
          rng: np.random.Generator) -> list[tuple[int, int]]:
  """(subject index, label) of every clip; every subject gets at least one clip."""
  counts = _class_counts(num_clips, spec.class_weights)
  labels = np.concatenate([np.full(c, lab) for c, lab in
                           zip(counts, (NEGATIVE, POSITIVE, SURPRISE))]).astype(int)
  labels = labels[rng.permutation(len(labels))]
  subj = np.concatenate([np.arange(num_subjects),
                         rng.integers(0, num_subjects, size=max(num_clips - num_subjects, 0))])
  subj = subj[:num_clips][rng.permutation(num_clips)]
  return sorted(zip(subj.tolist(), labels.tolist()), key=lambda p: p[0])


def _session(spec: DatabaseSpec, seed: int, num_clips: int | None):
  """The session's generator, subjects and clip plan (one session: SMIC_VIS and SMIC_NIR)."""
  num_clips = spec.num_clips if num_clips is None else int(num_clips)
  if num_clips < 1:
    raise ValueError(f"num_clips must be >= 1, got {num_clips}")
  rng = tagged_rng(seed, spec.session or spec.name)
  num_subjects = min(spec.num_subjects, num_clips)
  subjects = [render.sample_subject(rng) for _ in range(num_subjects)]
  return rng, subjects, _plan(spec, num_clips, num_subjects, rng)


def _action_units_text(aus: Mapping) -> object:
  keys = sorted((render._parse_au(k) for k in aus), key=lambda k: (k[0], k[1]))  # noqa: SLF001
  parts = [f"{side}{au}" for au, side in keys]
  return int(parts[0]) if len(parts) == 1 and parts[0].isdigit() else "+".join(parts)


def _clip_truth(path, spec, subject_no, name, clip: Clip, emotion, first_number) -> ClipTruth:
  return ClipTruth(path=str(path), database=spec.name, subject=int(subject_no), clip=name,
                   label=int(clip.label), emotion=emotion,
                   face_box=tuple(float(b) for b in clip.face_box),
                   neutral_landmarks=clip.neutral_landmarks, apex_landmarks=clip.apex_landmarks,
                   action_units=dict(clip.action_units), onset=clip.onset + first_number,
                   apex=clip.apex + first_number, offset=clip.offset + first_number,
                   num_frames=len(clip.frames))


CASME2_HEADER = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                 "Action Units", "Estimated Emotion")
CASME2_SHEET = "CASME2-coding-20140508.xlsx"


def write_casme2(root, spec: DatabaseSpec, *, seed: int, num_clips: int | None = None,
                 num_others: int | None = None) -> DatabaseTruth:
  """Writes a CASME II-like database and its coding sheet; returns the ground truth.

  Layout: ``{root}/CASME2_RAW_selected/sub{NN}/{Filename}/img{N}.jpg`` (N = 1..T) and
  ``{root}/CASME2-coding-20140508.xlsx``. Onset/apex/offset numbers refer to the img numbers;
  a few neutral frames are written before the onset and after the offset. Negative clips are
  coded 'disgust' or 'repression', Positive 'happiness', Surprise 'surprise'; extra 'others'
  clips (label 0 in the truth) are dropped by the 3-class mapping.
  """
  import openpyxl  # IO-only dependency

  root = os.fspath(root)
  num_others = spec.num_others if num_others is None else int(num_others)
  rng, subjects, plan = _session(spec, seed, num_clips)
  plan += [(int(rng.integers(len(subjects))), OTHERS) for _ in range(num_others)]
  plan.sort(key=lambda p: p[0])
  rows, truths = [], []
  episode = {}
  for k, (si, label) in enumerate(plan):
    clip_rng = tagged_rng(seed, spec.name, k)
    clip = generate_clip(spec, subjects[si], label, clip_rng)
    ep = episode.get(si, 0) + 1
    episode[si] = ep
    name = f"EP{(ep * 7) % 20 + 1:02d}_{ep:02d}" + ("f" if clip_rng.uniform() < 0.3 else "")
    sub = f"{si + 1:02d}"
    folder = os.path.join(root, "CASME2_RAW_selected", f"sub{sub}", name)
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(clip.frames):
      image_files.write_image(os.path.join(folder, f"img{t + 1}.jpg"), frame)
    if label == POSITIVE:
      emotion = "happiness"
    elif label == SURPRISE:
      emotion = "surprise"
    elif label == NEGATIVE:
      emotion = "repression" if any(a in clip.action_units for a in (15, 24)) and \
          clip_rng.uniform() < 0.7 else "disgust"
    else:
      emotion = "others"
    rows.append((sub, name, None, clip.onset + 1, clip.apex + 1, clip.offset + 1, None,
                 _action_units_text(clip.action_units), emotion))
    truths.append(_clip_truth(folder, spec, si + 1, name, clip, emotion, 1))
  wb = openpyxl.Workbook()
  ws = wb.active
  ws.title = "Sheet1"
  ws.append(list(CASME2_HEADER))
  for row in rows:
    ws.append(list(row))
  with atomic.atomic_path(os.path.join(root, CASME2_SHEET)) as tmp:
    wb.save(tmp)
  return DatabaseTruth(name=spec.name, root=root, spec=spec, clips=tuple(truths))


SMIC_CLASS_FOLDERS = {NEGATIVE: "negative", POSITIVE: "positive", SURPRISE: "surprise"}
_SMIC_ABBREV = {NEGATIVE: "ne", POSITIVE: "po", SURPRISE: "sur"}


def write_smic(root, spec: DatabaseSpec, *, seed: int,
               num_clips: int | None = None) -> DatabaseTruth:
  """Writes a SMIC-like subset; returns the ground truth.

  Layout: ``{root}/SMIC/{HS|VIS|NIR}/s{k}/micro/{negative|positive|surprise}/{clip}/image
  {NNNNNN}.bmp`` with clips named like ``s3_ne_01`` and frames numbered from image000001.bmp;
  the whole folder is the movement (onset = first frame, offset = last). Databases with the same
  ``spec.session`` (SMIC_VIS and SMIC_NIR) get the same subjects, clips and movements.
  """
  root = os.fspath(root)
  if not spec.smic_folder:
    raise ValueError(f"spec {spec.name!r} has no smic_folder (HS, VIS or NIR)")
  _, subjects, plan = _session(spec, seed, num_clips)
  counter: dict[tuple[int, int], int] = {}
  truths = []
  for k, (si, label) in enumerate(plan):
    clip_rng = tagged_rng(seed, spec.session or spec.name, k)
    clip = generate_clip(spec, subjects[si], label, clip_rng)
    n = counter.get((si, label), 0) + 1
    counter[(si, label)] = n
    name = f"s{si + 1}_{_SMIC_ABBREV[label]}_{n:02d}"
    folder = os.path.join(root, "SMIC", spec.smic_folder, f"s{si + 1}", "micro",
                          SMIC_CLASS_FOLDERS[label], name)
    os.makedirs(folder, exist_ok=True)
    # SMIC folders hold the movement only.
    first, last = clip.onset, clip.offset
    for t in range(first, last + 1):
      image_files.write_image(os.path.join(folder, f"image{t - first + 1:06d}.bmp"),
                              clip.frames[t])
    truth = _clip_truth(folder, spec, si + 1, name, clip, SMIC_CLASS_FOLDERS[label], 1 - first)
    truths.append(dataclasses.replace(truth, num_frames=last - first + 1))
  return DatabaseTruth(name=spec.name, root=root, spec=spec, clips=tuple(truths))


def database_paths(root, name: str) -> tuple[str, ...]:
  """The files and folders that :func:`write_database` creates for ``name`` under ``root``.

  Other databases written under the same root are not among them (SMIC_VIS and SMIC_NIR share
  ``SMIC/`` but not their ``SMIC/VIS`` and ``SMIC/NIR`` folders).
  """
  spec = name if isinstance(name, DatabaseSpec) else DATABASES.get(name)
  if spec is None:
    raise ValueError(f"unknown database {name!r}; expected one of {sorted(DATABASES)}")
  root = os.fspath(root)
  if spec.layout == "casme2":
    return (os.path.join(root, "CASME2_RAW_selected"), os.path.join(root, CASME2_SHEET))
  return (os.path.join(root, "SMIC", spec.smic_folder),)


def write_database(root, name: str, *, seed: int, num_clips: int | None = None) -> DatabaseTruth:
  """Generates and writes database ``name`` (a key of :data:`DATABASES`) under ``root``.

  Args:
    root: output root; the release layout is created below it.
    name: 'CASME2', 'SMIC_HS', 'SMIC_VIS' or 'SMIC_NIR' (or a :class:`DatabaseSpec`).
    seed: the seed; the same seed rewrites bit-identical files.
    num_clips: clips of the three classes (default: the spec's ``num_clips``).

  Returns:
    The :class:`DatabaseTruth` (per clip: folder, label, subject, true face box, neutral and apex
    landmarks, action units, onset/apex/offset frame numbers).
  """
  spec = name if isinstance(name, DatabaseSpec) else DATABASES.get(name)
  if spec is None:
    raise ValueError(f"unknown database {name!r}; expected one of {sorted(DATABASES)}")
  os.makedirs(os.fspath(root), exist_ok=True)
  if spec.layout == "casme2":
    return write_casme2(root, spec, seed=seed, num_clips=num_clips)
  if spec.layout == "smic":
    return write_smic(root, spec, seed=seed, num_clips=num_clips)
  raise ValueError(f"spec {spec.name!r} has unknown layout {spec.layout!r}")
