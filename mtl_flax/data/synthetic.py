"""Synthetic data for the multi-task experiments, drawn with :mod:`subtle_core.faces.render`.

* :func:`make_expression_dataset`: face crops showing one of 13 subtle mental-state expressions
  (each class a small combination of action units at low intensity; class 0 is neutral).
* :func:`make_landmark_dataset`: face crops with random expressions and pose jitter, and their
  68 ground-truth landmarks; its subjects are disjoint from the expression dataset's.
* :func:`make_planted_expression_dataset` and :func:`make_planted_landmark_dataset`: the MTL
  runs' default data (``config.data.synthetic``, docs/synthetic_mtl.md). Each expression class
  is a known small landmark displacement field (:func:`planted_class_displacements`); the
  landmark faces, of another domain and other subjects, show the same fields (variant
  'planted') or none (variant 'control'); every face's ground truth comes back as a
  :class:`PlantedTruth`.
* :func:`make_basic_expression_dataset` and :func:`make_expression_sequences`: the 7 basic
  expressions (CK+ codes) at full intensity, as crops or as neutral-to-peak frame sequences, for
  fine-tuning.

The two domains 'A' and 'B' differ in rendering style (light direction and colour, contrast,
gamma, noise, blur), so the two datasets of the MTL issue have a measurable shift.

Writers lay data out like the real releases so the readers of :mod:`mtl_flax.data.readers` run
on them: :func:`write_image_folder_dataset` (LSEMSW-style), :func:`write_300w`,
:func:`write_ckplus`, :func:`write_oulu_casia`.

Images are uint8 RGB. Landmarks are 0-based pixel-centre coordinates (OpenCV's convention);
normalised landmarks are ``(x + 0.5) / S``, the convention of :mod:`mtl_flax.data.readers`.
Everything is deterministic for a seed.
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

# 13 subtle mental-state expressions: (name, action units at intensity 1 of the class scale).
EXPRESSION_CLASSES: tuple[tuple[str, Mapping], ...] = (
    ("neutral", {}),
    ("slight_smile", {12: 1.0}),
    ("brows_raised", {1: 1.0, 2: 1.0}),
    ("frown", {4: 1.0}),
    ("lip_corners_down", {15: 1.0}),
    ("squint_frown", {4: 0.8, 7: 1.0}),
    ("warm_smile", {6: 1.0, 12: 0.8}),
    ("nose_wrinkle", {9: 1.0}),
    ("dimpler", {14: 1.2}),
    ("lips_pressed", {17: 0.8, 24: 1.0}),
    ("wide_eyes", {5: 1.2}),
    ("worried", {1: 1.0, 4: 0.6, 15: 0.6}),
    ("lips_apart", {25: 1.0, 26: 0.3}),
)
EXPRESSION_CLASS_NAMES: tuple[str, ...] = tuple(n for n, _ in EXPRESSION_CLASSES)

# CK+ emotion codes 1-7 (0 = neutral) and the action units of the posed expressions.
BASIC_EXPRESSIONS: dict[int, tuple[str, Mapping]] = {
    1: ("anger", {4: 1.0, 5: 0.5, 7: 0.8, 23: 0.9}),
    2: ("contempt", {"R12": 0.8, "R14": 1.0}),
    3: ("disgust", {9: 1.0, 10: 0.5, 15: 0.6, 16: 0.4}),
    4: ("fear", {1: 0.9, 2: 0.6, 4: 0.6, 5: 1.0, 20: 0.9, 25: 0.8, 26: 0.3}),
    5: ("happy", {6: 0.9, 12: 1.0, 25: 0.4}),
    6: ("sadness", {1: 1.0, 4: 0.6, 15: 1.0, 17: 0.5}),
    7: ("surprise", {1: 1.0, 2: 1.0, 5: 0.8, 25: 0.6, 26: 1.0}),
}
OULU_CASIA_FOLDERS = {1: "Anger", 3: "Disgust", 4: "Fear", 5: "Happiness", 6: "Sadness",
                      7: "Surprise"}


@dataclasses.dataclass(frozen=True)
class DomainStyle:
  """Rendering style of a domain.

  Attributes:
    direction: mean light direction (x right, y down, z towards the camera).
    direction_jitter: per-subject standard deviation of the light direction.
    colour: RGB light colour.
    ambient, diffuse: shading terms.
    background: (top, bottom) RGB of the background.
    contrast: contrast around mid-grey.
    gamma: tone-curve exponent.
    noise_sigma: Gaussian noise (grey levels).
    blur_sigma: blur in pixels of a 96 x 96 crop (scaled with the image size).
  """
  direction: tuple[float, float, float]
  direction_jitter: float
  colour: tuple[float, float, float]
  ambient: float
  diffuse: float
  background: tuple[tuple[float, float, float], tuple[float, float, float]]
  contrast: float
  gamma: float
  noise_sigma: float
  blur_sigma: float


DOMAINS: dict[str, DomainStyle] = {
    # Bright, warm, frontal-left studio light; sharp and clean.
    "A": DomainStyle(direction=(-0.3, -0.4, 0.87), direction_jitter=0.08,
                     colour=(1.0, 0.95, 0.86), ambient=0.45, diffuse=0.65,
                     background=((0.75, 0.74, 0.70), (0.60, 0.58, 0.55)), contrast=1.05,
                     gamma=0.95, noise_sigma=1.5, blur_sigma=0.0),
    # Dim, cool side light from the right; low contrast, noisy and soft ("in the wild").
    "B": DomainStyle(direction=(0.55, -0.25, 0.80), direction_jitter=0.12,
                     colour=(0.80, 0.88, 1.0), ambient=0.35, diffuse=0.60,
                     background=((0.35, 0.40, 0.45), (0.22, 0.25, 0.30)), contrast=0.8,
                     gamma=1.15, noise_sigma=5.0, blur_sigma=0.8),
}


def _style(domain: str) -> DomainStyle:
  if domain not in DOMAINS:
    raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {domain!r}")
  return DOMAINS[domain]


def subject_pool(seed: int, kind: str, num: int) -> list[render.SubjectParams]:
  """The subjects of a dataset kind ('expression', 'landmark', 'basic') for a seed.

  Different kinds draw from independent streams, so their subjects are disjoint.
  """
  if kind not in ("expression", "landmark", "basic"):
    raise ValueError(f"kind must be 'expression', 'landmark' or 'basic', got {kind!r}")
  rng = tagged_rng(seed, "subjects", kind)
  return [render.sample_subject(rng) for _ in range(int(num))]


def _illumination(style: DomainStyle, rng: np.random.Generator) -> render.Illumination:
  d = np.asarray(style.direction) + rng.normal(0, style.direction_jitter, size=3)
  d[2] = abs(d[2]) + 0.3
  return render.Illumination(direction=tuple(float(v) for v in d),
                             ambient=float(style.ambient * rng.uniform(0.92, 1.08)),
                             diffuse=style.diffuse, colour=style.colour,
                             background_top=style.background[0],
                             background_bottom=style.background[1])


def _tone(img: np.ndarray, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
  x = np.arange(256, dtype=np.float64) / 255.0
  lut = 0.5 + style.contrast * (x ** style.gamma - 0.5)
  lut = np.clip(lut * 255.0 + 0.5, 0, 255).astype(np.uint8)
  out = cv2.LUT(img, lut)
  if style.blur_sigma > 0:
    out = cv2.GaussianBlur(out, (0, 0), style.blur_sigma * img.shape[0] / 96.0)
  if style.noise_sigma > 0:
    noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(style.noise_sigma)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
  return out


def _crop_box(size: int, rng: np.random.Generator, margin=(0.1, 0.14)) -> tuple:
  """Face box of a detector-style crop: the face fills the crop up to a small margin."""
  m = float(rng.uniform(*margin)) * size
  return (m + rng.uniform(-0.02, 0.02) * size, m + rng.uniform(-0.02, 0.02) * size,
          size - 2 * m, size - 2 * m)


def _sessions(order, subjects, pool, style: DomainStyle, image_size: int,
              rng: np.random.Generator):
  """Yields ``(i, prepared face, face box)`` for the samples in ``order`` (grouped by subject).

  One session (face box, illumination) per subject, drawn from ``rng`` when its first sample
  comes, so the draws interleave with the caller's per-sample draws as a single loop's would.
  """
  size = (image_size, image_size)
  current, prep, box = -1, None, None
  for i in order:
    if subjects[i] != current:
      current = subjects[i]
      box = _crop_box(image_size, rng)
      prep = render.prepare_face(pool[current], image_size=size, face_box=box,
                                 illumination=_illumination(style, rng))
    yield i, prep, box


def _check_count(name: str, value: int) -> int:
  if int(value) < 1:
    raise ValueError(f"{name} must be >= 1, got {value!r}")
  return int(value)


def make_expression_dataset(num: int, *, num_classes: int = 13, image_size: int = 96,
                            seed: int, domain: str = "A", images_per_subject: int = 8):
  """Face crops of subtle mental-state expressions.

  Args:
    num: number of images.
    num_classes: the first ``num_classes`` of :data:`EXPRESSION_CLASSES` (at most 13).
    image_size: side S of the square crops.
    seed: the seed.
    domain: rendering style, 'A' or 'B'.
    images_per_subject: about how many images each subject contributes.

  Returns:
    ``(images uint8 (N, S, S, 3) RGB, labels int32 (N,) in [0, num_classes), subjects int32
    (N,))``; classes are balanced (``labels = permutation of arange(N) % num_classes``).
  """
  num = _check_count("num", num)
  if not 1 <= num_classes <= len(EXPRESSION_CLASSES):
    raise ValueError(f"num_classes must be in [1, {len(EXPRESSION_CLASSES)}], got {num_classes}")
  style = _style(domain)
  num_subjects = max(1, -(-num // _check_count("images_per_subject", images_per_subject)))
  pool = subject_pool(seed, "expression", num_subjects)
  rng = tagged_rng(seed, "expression-images", domain)
  labels = (np.arange(num) % num_classes)[rng.permutation(num)].astype(np.int32)
  subjects = (np.arange(num) % num_subjects)[rng.permutation(num)].astype(np.int32)
  order = np.argsort(subjects, kind="stable")
  images = np.empty((num, image_size, image_size, 3), np.uint8)
  for i, prep, box in _sessions(order, subjects, pool, style, image_size, rng):
    scale = float(rng.uniform(0.45, 0.75))
    aus = {k: v * scale for k, v in EXPRESSION_CLASSES[labels[i]][1].items()}
    # A faint random nuisance movement, so that classes are not separated by exact zeros.
    nuisance = render.ACTION_UNITS[int(rng.integers(len(render.ACTION_UNITS)))]
    aus[nuisance] = aus.get(nuisance, 0.0) + float(rng.uniform(0.0, 0.08))
    lm = render.apply_action_units(prep.neutral, box, aus)
    pose = render.pose_matrix(box, angle_deg=rng.uniform(-2, 2), scale=rng.uniform(0.98, 1.02),
                              shift=rng.uniform(-0.01, 0.01, size=2) * image_size)
    img = render.render_prepared(prep, render.transform_points(pose, lm))
    images[i] = _tone(img, style, rng)
  return images, labels, subjects


def _random_expression(rng: np.random.Generator) -> dict:
  aus = {}
  for _ in range(int(rng.integers(0, 4))):
    aus[render.ACTION_UNITS[int(rng.integers(len(render.ACTION_UNITS)))]] = float(
        rng.uniform(0.0, 0.8))
  return aus


def make_landmark_dataset(num: int, *, image_size: int = 96, seed: int, domain: str = "B",
                          images_per_subject: int = 4, return_subjects: bool = False):
  """Face crops with random expressions and pose, and their 68 landmarks.

  Args:
    num: number of images.
    image_size: side S of the square crops.
    seed: the seed; the subjects are disjoint from :func:`make_expression_dataset`'s.
    domain: rendering style, 'A' or 'B'.
    images_per_subject: about how many images each subject contributes.
    return_subjects: also return the subject ids.

  Returns:
    ``(images uint8 (N, S, S, 3) RGB, landmarks float32 (N, 68, 2))`` with landmarks ``(x, y)``
    normalised to (0, 1) as ``(pixel + 0.5) / S``; plus ``subjects int32 (N,)`` when
    ``return_subjects``.
  """
  num = _check_count("num", num)
  style = _style(domain)
  num_subjects = max(1, -(-num // _check_count("images_per_subject", images_per_subject)))
  pool = subject_pool(seed, "landmark", num_subjects)
  rng = tagged_rng(seed, "landmark-images", domain)
  subjects = (np.arange(num) % num_subjects)[rng.permutation(num)].astype(np.int32)
  order = np.argsort(subjects, kind="stable")
  images = np.empty((num, image_size, image_size, 3), np.uint8)
  landmarks = np.empty((num, ibug.NUM_LANDMARKS, 2), np.float32)
  size = (image_size, image_size)
  lo, hi = 0.02 * image_size, 0.98 * image_size - 1
  current, prep, box = -1, None, None
  for i in order:
    if subjects[i] != current:
      current = subjects[i]
      box = _crop_box(image_size, rng, margin=(0.13, 0.17))
      prep = render.prepare_face(pool[current], image_size=size, face_box=box,
                                 illumination=_illumination(style, rng))
    lm = render.apply_action_units(prep.neutral, box, _random_expression(rng))
    for attempt in range(20):
      shrink = 0.97 ** attempt  # rarely needed: keeps every point inside the crop
      pose = render.pose_matrix(box, angle_deg=rng.uniform(-15, 15) * shrink,
                                scale=rng.uniform(0.88, 1.08) * shrink,
                                shift=rng.uniform(-0.05, 0.05, size=2) * image_size * shrink)
      moved = render.transform_points(pose, lm)
      if moved.min() >= lo and moved.max() <= hi:
        break
    img = render.render_prepared(prep, moved)
    images[i] = _tone(img, style, rng)
    landmarks[i] = (moved + 0.5) / image_size
  if return_subjects:
    return images, landmarks, subjects
  return images, landmarks


# ---------------------------------------------------------------------------------------------
# Planted shared structure (docs/synthetic_mtl.md): the expression classes are known landmark
# displacement fields, and the landmark faces of the 'planted' variant show the same fields.
# ---------------------------------------------------------------------------------------------

# The synthetic data of the MTL runs (`config.data.synthetic`): 'planted' (the landmark faces show
# the expression classes' displacement fields), 'control' (the same data with neutral landmark
# faces) and 'independent' (the generators above: random action units, no planted link).
SYNTHETIC_VARIANTS = ("planted", "control", "independent")
# Every class's field is its action-unit combination of EXPRESSION_CLASSES at this intensity: a
# subtle expression (1 is a strong posed one; see render.action_unit_displacement).
PLANTED_INTENSITY = 0.5
# The landmark faces show a field at PLANTED_INTENSITY times a factor drawn from this range.
PLANTED_LANDMARK_FACTOR = (0.5, 1.5)
# Pose jitter of every planted face (both datasets): detector-aligned crops, as in the expression
# data, so that the two domains differ in subjects, light and tone only.
_PLANTED_POSE = {"angle_deg": 2.0, "scale": 0.02, "shift": 0.01}


@dataclasses.dataclass(frozen=True)
class PlantedTruth:
  """What the planted generators did to every face (the ground truth the tests check).

  Face i is rendered at ``landmarks[i] = transform_points(poses[i], neutral[i] +
  displacement[i])`` (pixels), with ``displacement[i] = class_displacements[shown_class[i]] *
  factor[i] * face_boxes[i, 2]`` (box units times the box width; the boxes are square).

  Attributes:
    class_displacements: float64 (C, 68, 2), each class's displacement field in box units
      (class 0, neutral, is zero).
    moved: bool (C, 68), the landmarks each class moves (its field is zero elsewhere).
    landmarks: float64 (N, 68, 2), the rendered face's landmarks in pixels (0-based centres).
    neutral: float64 (N, 68, 2), the subject's neutral landmarks in the face box, before pose.
    displacement: float64 (N, 68, 2), the planted displacement in pixels, before pose.
    poses: float64 (N, 2, 3), the similarity applied after the displacement.
    face_boxes: float64 (N, 4), ``(x, y, w, h)`` of every face's box (w = h).
    shown_class: int32 (N,), the class whose field the face shows (the label of an expression
      face; drawn at random for a landmark face).
    factor: float64 (N,), the field's multiple (1 for expression faces, 0 for every face of the
      control's landmark dataset).
  """
  class_displacements: np.ndarray
  moved: np.ndarray
  landmarks: np.ndarray
  neutral: np.ndarray
  displacement: np.ndarray
  poses: np.ndarray
  face_boxes: np.ndarray
  shown_class: np.ndarray
  factor: np.ndarray


def planted_class_displacements(num_classes: int = len(EXPRESSION_CLASSES),
                                intensity: float = PLANTED_INTENSITY) -> np.ndarray:
  """The planted displacement field of every expression class, in box units.

  Class c's field is :func:`render.action_unit_displacement` of its action units in
  :data:`EXPRESSION_CLASSES` times ``intensity``; the neutral class's field is zero.

  Returns:
    float64 (num_classes, 68, 2).
  """
  if not 1 <= num_classes <= len(EXPRESSION_CLASSES):
    raise ValueError(f"num_classes must be in [1, {len(EXPRESSION_CLASSES)}], got {num_classes}")
  return np.stack([render.action_unit_displacement(aus) * float(intensity)
                   for _, aus in EXPRESSION_CLASSES[:num_classes]])


def _planted_pose(box, image_size: int, rng: np.random.Generator) -> np.ndarray:
  j = _PLANTED_POSE
  return render.pose_matrix(box, angle_deg=rng.uniform(-j["angle_deg"], j["angle_deg"]),
                            scale=rng.uniform(1 - j["scale"], 1 + j["scale"]),
                            shift=rng.uniform(-j["shift"], j["shift"], size=2) * image_size)


def _planted_faces(kind: str, shown_class, factor, *, num_subjects: int, image_size: int,
                   seed: int, domain: str, num_classes: int):
  """Renders faces showing ``factor[i]`` times the field of ``shown_class[i]``.

  Returns ``(images, landmarks_pixels, subjects, PlantedTruth)``; the subjects are drawn from the
  pool of ``kind`` and the random stream is tagged with ``kind`` and ``domain``.
  """
  num = len(shown_class)
  style = _style(domain)
  fields = planted_class_displacements(num_classes)
  pool = subject_pool(seed, kind, num_subjects)
  rng = tagged_rng(seed, f"planted-{kind}-images", domain)
  subjects = (np.arange(num) % num_subjects)[rng.permutation(num)].astype(np.int32)
  order = np.argsort(subjects, kind="stable")
  images = np.empty((num, image_size, image_size, 3), np.uint8)
  landmarks = np.empty((num, ibug.NUM_LANDMARKS, 2))
  neutral = np.empty_like(landmarks)
  displacement = np.empty_like(landmarks)
  poses = np.empty((num, 2, 3))
  boxes = np.empty((num, 4))
  for i, prep, box in _sessions(order, subjects, pool, style, image_size, rng):
    displacement[i] = fields[shown_class[i]] * factor[i] * box[2]
    poses[i] = _planted_pose(box, image_size, rng)
    neutral[i], boxes[i] = prep.neutral, box
    landmarks[i] = render.transform_points(poses[i], prep.neutral + displacement[i])
    images[i] = _tone(render.render_prepared(prep, landmarks[i]), style, rng)
  truth = PlantedTruth(class_displacements=fields, moved=np.any(fields != 0, axis=-1),
                       landmarks=landmarks, neutral=neutral, displacement=displacement, poses=poses,
                       face_boxes=boxes, shown_class=np.asarray(shown_class, np.int32),
                       factor=np.asarray(factor, np.float64))
  return images, landmarks, subjects, truth


def make_planted_expression_dataset(num: int, *, num_classes: int = 13, image_size: int = 96,
                                    seed: int, domain: str = "A", images_per_subject: int = 8):
  """Expression faces whose classes are the planted displacement fields (docs/synthetic_mtl.md).

  A face of class c is its subject's neutral face moved by exactly
  ``planted_class_displacements()[c]`` (no intensity jitter, no other movement), then posed by a
  small similarity. Classes therefore differ only at the landmarks their fields move.

  Args:
    num: number of images.
    num_classes: the first ``num_classes`` of :data:`EXPRESSION_CLASSES` (at most 13).
    image_size: side S of the square crops.
    seed: the seed (subjects from :func:`subject_pool` ``(seed, 'expression', ...)``).
    domain: rendering style, 'A' or 'B'.
    images_per_subject: about how many images each subject contributes.

  Returns:
    ``(images uint8 (N, S, S, 3), labels int32 (N,), subjects int32 (N,), truth)`` with
    ``truth`` a :class:`PlantedTruth` (``shown_class == labels``, ``factor == 1``); classes are
    balanced (``labels = permutation of arange(N) % num_classes``).
  """
  num = _check_count("num", num)
  planted_class_displacements(num_classes)  # checks num_classes
  num_subjects = max(1, -(-num // _check_count("images_per_subject", images_per_subject)))
  rng = tagged_rng(seed, "planted-expression-labels")
  labels = (np.arange(num) % num_classes)[rng.permutation(num)].astype(np.int32)
  images, _, subjects, truth = _planted_faces(
      "expression", labels, np.ones(num), num_subjects=num_subjects, image_size=image_size,
      seed=seed, domain=domain, num_classes=num_classes)
  return images, labels, subjects, truth


def make_planted_landmark_dataset(num: int, *, num_classes: int = 13, image_size: int = 96,
                                  seed: int, domain: str = "B", images_per_subject: int = 4,
                                  control: bool = False):
  """Landmark faces of another domain showing the expression classes' fields (or none).

  Every face shows the field of a class drawn uniformly from ``range(num_classes)`` at a factor
  drawn from :data:`PLANTED_LANDMARK_FACTOR`, so its 68 landmark targets carry the same
  displacements that separate the expression classes (but no class label). With ``control`` the
  factor is 0 (neutral faces) and every other draw (subjects, light, box, pose, noise) is the same.

  Args:
    num: number of images.
    num_classes: classes whose fields are shown (as the expression dataset's).
    image_size: side S of the square crops.
    seed: the seed (subjects from :func:`subject_pool` ``(seed, 'landmark', ...)``).
    domain: rendering style, 'A' or 'B'.
    images_per_subject: about how many images each subject contributes.
    control: show no displacement (the control variant).

  Returns:
    ``(images uint8 (N, S, S, 3), landmarks float32 (N, 68, 2), subjects int32 (N,), truth)``
    with landmarks normalised as ``(pixel + 0.5) / S`` and ``truth`` a :class:`PlantedTruth`.
  """
  num = _check_count("num", num)
  planted_class_displacements(num_classes)  # checks num_classes
  num_subjects = max(1, -(-num // _check_count("images_per_subject", images_per_subject)))
  rng = tagged_rng(seed, "planted-landmark-fields")
  shown = rng.integers(num_classes, size=num).astype(np.int32)
  factor = rng.uniform(*PLANTED_LANDMARK_FACTOR, size=num)
  if control:
    factor = np.zeros(num)
  images, pixels, subjects, truth = _planted_faces(
      "landmark", shown, factor, num_subjects=num_subjects, image_size=image_size, seed=seed,
      domain=domain, num_classes=num_classes)
  landmarks = ((pixels + 0.5) / image_size).astype(np.float32)
  return images, landmarks, subjects, truth


def make_basic_expression_dataset(num_subjects: int, *, image_size: int = 96, seed: int,
                                  images_per_expression: int = 1, domain: str = "A",
                                  codes: Sequence[int] = tuple(BASIC_EXPRESSIONS)):
  """Face crops of the posed basic expressions (CK+ codes), for fine-tuning.

  Args:
    num_subjects: subjects; each shows every expression of ``codes``.
    image_size: side S of the crops.
    seed: the seed (subjects disjoint from the other datasets').
    images_per_expression: images per subject and expression (intensity 0.7-1.0 each).
    domain: rendering style.
    codes: CK+ codes to include (1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness,
      7 surprise).

  Returns:
    ``(images uint8 (N, S, S, 3), labels int32 (N,) CK+ codes, subjects int32 (N,))``.
  """
  num_subjects = _check_count("num_subjects", num_subjects)
  codes = tuple(int(c) for c in codes)
  if not codes or any(c not in BASIC_EXPRESSIONS for c in codes):
    raise ValueError(f"codes must be CK+ codes in 1..7, got {codes!r}")
  style = _style(domain)
  pool = subject_pool(seed, "basic", num_subjects)
  rng = tagged_rng(seed, "basic-images", domain)
  per = len(codes) * int(images_per_expression)
  images = np.empty((num_subjects * per, image_size, image_size, 3), np.uint8)
  labels = np.empty(num_subjects * per, np.int32)
  subjects = np.repeat(np.arange(num_subjects, dtype=np.int32), per)
  size = (image_size, image_size)
  k = 0
  for s in range(num_subjects):
    box = _crop_box(image_size, rng)
    prep = render.prepare_face(pool[s], image_size=size, face_box=box,
                               illumination=_illumination(style, rng))
    for code in codes:
      for _ in range(int(images_per_expression)):
        scale = float(rng.uniform(0.7, 1.0))
        aus = {a: v * scale for a, v in BASIC_EXPRESSIONS[code][1].items()}
        lm = render.apply_action_units(prep.neutral, box, aus)
        pose = render.pose_matrix(box, angle_deg=rng.uniform(-4, 4),
                                  shift=rng.uniform(-0.02, 0.02, size=2) * image_size)
        images[k] = _tone(render.render_prepared(prep, render.transform_points(pose, lm)), style,
                          rng)
        labels[k] = code
        k += 1
  return images, labels, subjects


@dataclasses.dataclass(frozen=True)
class ExpressionSequence:
  """A neutral-to-peak sequence of full frames (as CK+ and Oulu-CASIA record them).

  Attributes:
    frames: uint8 (T, H, W, 3) RGB, or (T, H, W) grey.
    label: CK+ code 1-7 of the posed expression.
    subject: subject number (1-based, used in folder names).
    landmarks: (T, 68, 2) 0-based pixel landmarks.
    face_box: the true ``(x, y, w, h)``.
    labelled: False for sequences released without an emotion label (CK+ has many).
  """
  frames: np.ndarray
  label: int
  subject: int
  landmarks: np.ndarray
  face_box: tuple
  labelled: bool = True


def make_expression_sequences(num_subjects: int, *, seed: int, frame_size=(240, 320),
                              num_frames=(6, 10), grey: bool = False, domain: str = "A",
                              codes: Sequence[int] = tuple(BASIC_EXPRESSIONS),
                              unlabelled_fraction: float = 0.0) -> list[ExpressionSequence]:
  """Neutral-to-peak sequences of the basic expressions, every subject showing every code.

  Args:
    num_subjects: subjects (numbered from 1).
    seed: the seed.
    frame_size: (H, W) of the frames; the face is about 45 % of the height.
    num_frames: (min, max) frames per sequence.
    grey: store grey frames (as most of CK+).
    domain: rendering style.
    codes: CK+ codes to record (Oulu-CASIA has no contempt: pass ``(1, 3, 4, 5, 6, 7)``).
    unlabelled_fraction: fraction of sequences marked unlabelled.

  Returns:
    A list of :class:`ExpressionSequence`.
  """
  num_subjects = _check_count("num_subjects", num_subjects)
  if any(int(c) not in BASIC_EXPRESSIONS for c in codes):
    raise ValueError(f"codes must be CK+ codes in 1..7, got {codes!r}")
  style = _style(domain)
  pool = subject_pool(seed, "basic", num_subjects)
  rng = tagged_rng(seed, "sequences", domain)
  hgt, wid = int(frame_size[0]), int(frame_size[1])
  out = []
  for s in range(num_subjects):
    w = float(rng.uniform(0.42, 0.5)) * hgt
    box = ((wid - w) / 2 + rng.uniform(-0.05, 0.05) * wid, (hgt - w) * rng.uniform(0.3, 0.45),
           w, w)
    prep = render.prepare_face(pool[s], image_size=(hgt, wid), face_box=box,
                               illumination=_illumination(style, rng))
    for code in codes:
      t_len = int(rng.integers(num_frames[0], num_frames[1] + 1))
      scale = float(rng.uniform(0.7, 1.0))
      disp = render.action_unit_displacement(
          {a: v * scale for a, v in BASIC_EXPRESSIONS[int(code)][1].items()}) * [w, w]
      frames, lms = [], []
      for t in range(t_len):
        ramp = 0.5 - 0.5 * np.cos(np.pi * t / max(t_len - 1, 1))
        pose = render.pose_matrix(box, angle_deg=rng.normal(0, 0.3),
                                  shift=rng.normal(0, 0.003 * w, size=2))
        lm = render.transform_points(pose, prep.neutral + ramp * disp)
        img = _tone(render.render_prepared(prep, lm), style, rng)
        frames.append(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if grey else img)
        lms.append(lm)
      out.append(ExpressionSequence(
          frames=np.stack(frames), label=int(code), subject=s + 1, landmarks=np.stack(lms),
          face_box=box, labelled=bool(rng.uniform() >= unlabelled_fraction)))
  return out


# ---------------------------------------------------------------------------------------------
# Writers.
# ---------------------------------------------------------------------------------------------


def _check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise ValueError(f"images must be uint8 (N, H, W[, 3]), got {images.dtype} {images.shape}")
  return images


def write_image_folder_dataset(root, images, labels, class_names: Sequence[str]) -> list[str]:
  """Writes an LSEMSW-style class-per-folder dataset.

  Layout: ``{root}/{class_name}/{index:06d}.png`` and ``{root}/labels.csv`` with columns
  ``path,label`` (path relative to root, label the integer class index).

  Args:
    root: output folder.
    images: uint8 (N, H, W, 3) RGB.
    labels: (N,) ints in ``[0, len(class_names))``.
    class_names: folder name of every class.

  Returns:
    The relative paths written, in image order.
  """
  root = os.fspath(root)
  images = _check_images(images)
  labels = np.asarray(labels)
  if labels.shape != (len(images),):
    raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
  if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
    raise ValueError(f"labels must be in [0, {len(class_names)}), got range "
                     f"[{labels.min()}, {labels.max()}]")
  rel = []
  for i, (img, lab) in enumerate(zip(images, labels)):
    path = f"{class_names[int(lab)]}/{i:06d}.png"
    os.makedirs(os.path.join(root, class_names[int(lab)]), exist_ok=True)
    image_files.write_image(os.path.join(root, path), img)
    rel.append(path)
  text = "path,label\n" + "".join(f"{p},{int(l)}\n" for p, l in zip(rel, labels))
  atomic.write_bytes(os.path.join(root, "labels.csv"), text.encode())
  return rel


def pts_text(landmarks_pixels: np.ndarray) -> str:
  """iBUG ``.pts`` text of 0-based pixel landmarks (written 1-based)."""
  pts = np.asarray(landmarks_pixels, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ValueError(f"landmarks must be (N, 2), got {pts.shape}")
  lines = "".join(f"{x + 1:.6f} {y + 1:.6f}\n" for x, y in pts)
  return f"version: 1\nn_points:  {len(pts)}\n{{\n{lines}}}\n"


def write_300w(root, images, landmarks_pixels) -> list[str]:
  """Writes images with iBUG ``.pts`` files beside them (the 300-W layout).

  Layout: ``{root}/image_{i:04d}.png`` and ``{root}/image_{i:04d}.pts`` (header ``version: 1``,
  ``n_points:  68``, ``{``, one ``x y`` line per point in 1-based pixel coordinates, ``}``).

  Args:
    root: output folder.
    images: uint8 (N, H, W, 3) RGB.
    landmarks_pixels: (N, 68, 2) 0-based pixel coordinates (e.g. ``normalised * S - 0.5``).

  Returns:
    The image paths written.
  """
  root = os.fspath(root)
  images = _check_images(images)
  lms = np.asarray(landmarks_pixels, np.float64)
  if lms.shape != (len(images), ibug.NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks_pixels must be ({len(images)}, 68, 2), got {lms.shape}")
  os.makedirs(root, exist_ok=True)
  paths = []
  for i, (img, lm) in enumerate(zip(images, lms)):
    stem = os.path.join(root, f"image_{i:04d}")
    image_files.write_image(stem + ".png", img)
    atomic.write_bytes(stem + ".pts", pts_text(lm).encode())
    paths.append(stem + ".png")
  return paths


def write_ckplus(root, sequences: Sequence[ExpressionSequence]) -> list[str]:
  """Writes sequences in the CK+ layout.

  Layout: ``{root}/cohn-kanade-images/S{sss}/{seq}/S{sss}_{seq}_{frame:08d}.png`` (frames from
  1, neutral to peak) and, for labelled sequences only,
  ``{root}/Emotion/S{sss}/{seq}/S{sss}_{seq}_{last:08d}_emotion.txt`` holding the code as
  ``   3.0000000e+00``. Sequences are numbered 001, 002, ... per subject in list order.

  Returns:
    The sequence folders written.
  """
  root = os.fspath(root)
  counters: dict[int, int] = {}
  folders = []
  for seq in sequences:
    n = counters.get(seq.subject, 0) + 1
    counters[seq.subject] = n
    sname, qname = f"S{seq.subject:03d}", f"{n:03d}"
    folder = os.path.join(root, "cohn-kanade-images", sname, qname)
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(seq.frames):
      image_files.write_image(os.path.join(folder, f"{sname}_{qname}_{t + 1:08d}.png"), frame)
    if seq.labelled:
      efolder = os.path.join(root, "Emotion", sname, qname)
      os.makedirs(efolder, exist_ok=True)
      name = f"{sname}_{qname}_{len(seq.frames):08d}_emotion.txt"
      atomic.write_bytes(os.path.join(efolder, name), f"   {float(seq.label):.7e}\n".encode())
    folders.append(folder)
  return folders


def write_oulu_casia(root, sequences: Sequence[ExpressionSequence]) -> list[str]:
  """Writes sequences in the Oulu-CASIA layout (visible light, strong illumination).

  Layout: ``{root}/OriginalImg/VL/Strong/P{ppp:03d}/{Anger|Disgust|Fear|Happiness|Sadness|
  Surprise}/{frame:03d}.jpeg`` with frames from 000. Contempt (code 2) has no folder and raises.

  Returns:
    The sequence folders written.
  """
  root = os.fspath(root)
  folders = []
  for seq in sequences:
    if seq.label not in OULU_CASIA_FOLDERS:
      raise ValueError(f"Oulu-CASIA has no expression with CK+ code {seq.label}; "
                       f"expected one of {sorted(OULU_CASIA_FOLDERS)}")
    folder = os.path.join(root, "OriginalImg", "VL", "Strong", f"P{seq.subject:03d}",
                          OULU_CASIA_FOLDERS[seq.label])
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(seq.frames):
      image_files.write_image(os.path.join(folder, f"{t:03d}.jpeg"), frame)
    folders.append(folder)
  return folders
