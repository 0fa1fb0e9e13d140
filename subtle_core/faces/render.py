"""A parametric face renderer with 68 landmarks known by construction.

Faces are drawn in a face box ``(x, y, w, h)`` (pixels, top-left corner and size). Geometry is
expressed in *box units*: ``u = (x - box_x) / w`` and ``v = (y - box_y) / h``. The box is the
region a frontal face detector reports (eyes at ``v ~ 0.4``, mouth at ``v ~ 0.8``); every
landmark of a neutral face lies inside it.

Landmarks follow the iBUG / 300-W 68-point convention of :mod:`subtle_core.faces.ibug` (0-based;
36-41 the subject's right eye on the image left, 42-47 the left eye; the pupils are the means of
36-41 and 42-47).

Rendering has two layers:

* a *skin layer* (background, hair, shaded head, neck, ears, skin texture, eye-socket and nose
  shading, nasolabial folds) drawn once for the neutral geometry, then warped per frame with
  ``cv2.remap`` by the global similarity between the neutral and the given landmarks plus a smooth
  displacement field interpolated from the landmarks' residual displacements, so the skin texture
  moves with an expression;
* *features* (brows, eyes with sclera, iris and pupil, lids, nostrils, lips, mouth interior)
  drawn with sub-pixel anti-aliased polygons at the given landmark positions.

Everything is a pure function of its arguments and of the ``np.random.Generator`` passed in.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import cv2
import numpy as np

from subtle_core.faces.ibug import (INNER_LIPS, JAW, LEFT_BROW, LEFT_EYE, MIRROR_INDEX,
                                    NOSE_BRIDGE, NOSE_LOWER, NUM_LANDMARKS, OUTER_LIPS,
                                    RIGHT_BROW, RIGHT_EYE)

# Landmarks that barely move with expressions; the global pose is fitted on them.
_RIGID = np.array([0, 16, 27, 28, 36, 39, 42, 45])  # no action unit moves these


@dataclasses.dataclass(frozen=True)
class SubjectParams:
  """Identity of one synthetic subject: geometry in box units and appearance colours (RGB 0-1)."""
  face_half_width: float
  jaw_top: float
  chin: float
  jaw_taper: float
  eye_v: float
  eye_distance: float
  eye_width: float
  eye_upper: float
  eye_lower: float
  eye_tilt: float
  brow_gap: float
  brow_arch: float
  brow_thickness: float
  brow_inner_gap: float
  nose_tip_v: float
  nose_half_width: float
  mouth_v: float
  mouth_half_width: float
  upper_lip: float
  lower_lip: float
  asymmetry: tuple[float, ...]  # (68 * 2) small per-landmark offsets in box units
  skin_rgb: tuple[float, float, float]
  lip_rgb: tuple[float, float, float]
  hair_rgb: tuple[float, float, float]
  brow_rgb: tuple[float, float, float]
  iris_rgb: tuple[float, float, float]
  clothes_rgb: tuple[float, float, float]
  hairline: float
  hair_volume: float
  texture_seed: int
  texture_strength: float


@dataclasses.dataclass(frozen=True)
class Illumination:
  """Lighting of a rendered face.

  Attributes:
    direction: light direction (x right, y down, z towards the camera); normalised internally.
    ambient: ambient term of the Lambertian shading.
    diffuse: diffuse term.
    colour: RGB gains of the light (multiplies every colour).
    background_top: RGB (0-1) of the background at the top of the image.
    background_bottom: RGB (0-1) of the background at the bottom.
  """
  direction: tuple[float, float, float] = (-0.35, -0.45, 0.82)
  ambient: float = 0.42
  diffuse: float = 0.68
  colour: tuple[float, float, float] = (1.0, 0.98, 0.95)
  background_top: tuple[float, float, float] = (0.62, 0.64, 0.66)
  background_bottom: tuple[float, float, float] = (0.45, 0.47, 0.50)


DEFAULT_ILLUMINATION = Illumination()


def _mix(a, b, t):
  return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def sample_subject(rng: np.random.Generator) -> SubjectParams:
  """Draws a random subject (face shape, spacing of the features, colours, hair).

  Args:
    rng: the random generator; the only source of randomness.

  Returns:
    A frozen :class:`SubjectParams`.
  """
  u = rng.uniform
  tone = u(0.0, 1.0)
  skin = _mix((0.95, 0.80, 0.70), (0.50, 0.34, 0.25), tone)
  skin = tuple(float(np.clip(c * u(0.95, 1.05), 0.05, 1.0)) for c in skin)
  lip = tuple(float(np.clip(c, 0, 1)) for c in
              (skin[0] * u(0.78, 0.92), skin[1] * u(0.50, 0.62), skin[2] * u(0.55, 0.68)))
  hair_choices = [(0.08, 0.06, 0.05), (0.22, 0.15, 0.10), (0.40, 0.28, 0.17), (0.55, 0.45, 0.30),
                  (0.30, 0.30, 0.30), (0.12, 0.10, 0.10)]
  # Darker skin tones get dark hair (light hair on dark skin is rare and lowers detection).
  dark_hair = (0, 1, 5)
  pick = int(rng.integers(len(hair_choices)))
  hair = hair_choices[pick if tone < 0.45 else dark_hair[pick % 3]]
  hair = tuple(float(c * u(0.85, 1.15)) for c in hair)
  # Brows darker than both the hair and the skin: light brows defeat frontal face detectors.
  brow_scale = u(0.5, 0.75), u(0.3, 0.42)
  brow = tuple(float(min(h * brow_scale[0], k * brow_scale[1])) for h, k in zip(hair, skin))
  iris_choices = [(0.25, 0.15, 0.08), (0.35, 0.22, 0.12), (0.30, 0.40, 0.50), (0.30, 0.38, 0.22),
                  (0.15, 0.10, 0.06)]
  iris = iris_choices[int(rng.integers(len(iris_choices)))]
  clothes = tuple(float(c) for c in u(0.1, 0.8, size=3))
  asym = rng.normal(0.0, 0.003, size=NUM_LANDMARKS * 2)
  return SubjectParams(
      face_half_width=float(u(0.43, 0.47)),
      jaw_top=float(u(0.36, 0.42)),
      chin=float(u(0.95, 0.985)),
      jaw_taper=float(u(0.0, 0.3)),
      eye_v=float(u(0.38, 0.42)),
      eye_distance=float(u(0.36, 0.41)),
      eye_width=float(u(0.125, 0.145)),
      eye_upper=float(u(0.030, 0.038)),
      eye_lower=float(u(0.022, 0.028)),
      eye_tilt=float(u(0.0, 0.015)),
      brow_gap=float(u(0.075, 0.095)),
      brow_arch=float(u(0.012, 0.025)),
      brow_thickness=float(u(0.018, 0.028)),
      brow_inner_gap=float(u(0.04, 0.06)),
      nose_tip_v=float(u(0.58, 0.62)),
      nose_half_width=float(u(0.075, 0.095)),
      mouth_v=float(u(0.77, 0.80)),
      mouth_half_width=float(u(0.14, 0.17)),
      upper_lip=float(u(0.026, 0.036)),
      lower_lip=float(u(0.032, 0.045)),
      asymmetry=tuple(float(a) for a in asym),
      skin_rgb=skin,
      lip_rgb=lip,
      hair_rgb=hair,
      brow_rgb=brow,
      iris_rgb=iris,
      clothes_rgb=clothes,
      hairline=float(u(0.06, 0.16)),
      hair_volume=float(u(0.03, 0.10)),
      texture_seed=int(rng.integers(2**31 - 1)),
      texture_strength=float(u(0.02, 0.05)),
  )


def _template(s: SubjectParams) -> np.ndarray:
  """Neutral landmarks of a subject in box units, (68, 2)."""
  p = np.zeros((NUM_LANDMARKS, 2))
  # Jaw: the lower half of an ellipse, narrowed towards the chin.
  phi = np.pi * np.arange(17) / 16
  p[JAW, 0] = 0.5 - s.face_half_width * np.cos(phi) * (1 - s.jaw_taper * np.sin(phi) ** 4)
  p[JAW, 1] = s.jaw_top + (s.chin - s.jaw_top) * np.sin(phi)
  # Eyes.
  ew, hu, hl, tilt = s.eye_width / 2, s.eye_upper, s.eye_lower, s.eye_tilt / 2
  for idx, cx, sign in ((RIGHT_EYE, 0.5 - s.eye_distance / 2, 1),
                        (LEFT_EYE, 0.5 + s.eye_distance / 2, -1)):
    cy = s.eye_v
    # Order: corner, upper, upper, corner, lower, lower (clockwise from image-left corner).
    left = (cx - ew, cy - sign * tilt)
    right = (cx + ew, cy + sign * tilt)
    pts = [left, (cx - ew / 3, cy - hu), (cx + ew / 3, cy - hu), right,
           (cx + ew / 3, cy + hl), (cx - ew / 3, cy + hl)]
    p[idx] = pts
  # Brows: right brow outer (17) to inner (21); left brow inner (22) to outer (26).
  brow_v = s.eye_v - s.brow_gap
  for idx, cx, outer_first in ((RIGHT_BROW, 0.5 - s.eye_distance / 2, True),
                               (LEFT_BROW, 0.5 + s.eye_distance / 2, False)):
    side = -1 if outer_first else 1
    x_out = cx + side * (ew + 0.025)
    x_in = 0.5 + side * s.brow_inner_gap
    t = np.linspace(0, 1, 5)  # 0 = outer, 1 = inner
    xs = x_out + (x_in - x_out) * t
    ys = brow_v + 0.008 - s.brow_arch * (1 - ((t - 0.4) / 0.6) ** 2)
    if not outer_first:
      xs, ys = xs[::-1], ys[::-1]
    p[idx, 0], p[idx, 1] = xs, ys
  # Nose.
  bridge_top = s.eye_v - 0.015
  p[NOSE_BRIDGE, 0] = 0.5
  p[NOSE_BRIDGE, 1] = np.linspace(bridge_top, s.nose_tip_v, 4)
  nw, tip = s.nose_half_width, s.nose_tip_v
  p[NOSE_LOWER] = [(0.5 - nw, tip + 0.035), (0.5 - nw / 2, tip + 0.05), (0.5, tip + 0.058),
                   (0.5 + nw / 2, tip + 0.05), (0.5 + nw, tip + 0.035)]
  # Mouth (closed).
  mw, ul, ll, y0 = s.mouth_half_width, s.upper_lip, s.lower_lip, s.mouth_v
  p[OUTER_LIPS] = [
      (0.5 - mw, y0), (0.5 - 0.6 * mw, y0 - 0.8 * ul), (0.5 - 0.22 * mw, y0 - ul),
      (0.5, y0 - 0.85 * ul), (0.5 + 0.22 * mw, y0 - ul), (0.5 + 0.6 * mw, y0 - 0.8 * ul),
      (0.5 + mw, y0), (0.5 + 0.6 * mw, y0 + 0.8 * ll), (0.5 + 0.25 * mw, y0 + 0.98 * ll),
      (0.5, y0 + ll), (0.5 - 0.25 * mw, y0 + 0.98 * ll), (0.5 - 0.6 * mw, y0 + 0.8 * ll)]
  p[INNER_LIPS] = [
      (0.5 - 0.88 * mw, y0), (0.5 - 0.35 * mw, y0 - 0.003), (0.5, y0 - 0.002),
      (0.5 + 0.35 * mw, y0 - 0.003), (0.5 + 0.88 * mw, y0), (0.5 + 0.35 * mw, y0 + 0.003),
      (0.5, y0 + 0.003), (0.5 - 0.35 * mw, y0 + 0.003)]
  p += np.asarray(s.asymmetry).reshape(NUM_LANDMARKS, 2)
  return p


def _box(face_box) -> tuple[float, float, float, float]:
  box = tuple(float(b) for b in face_box)
  if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"face_box must be (x, y, w, h) with w, h > 0, got {face_box!r}")
  return box


def to_pixels(points_uv: np.ndarray, face_box) -> np.ndarray:
  """Box units -> pixel (x, y)."""
  x, y, w, h = _box(face_box)
  return np.asarray(points_uv, dtype=np.float64) * [w, h] + [x, y]


def to_box_units(points_px: np.ndarray, face_box) -> np.ndarray:
  """Pixel (x, y) -> box units."""
  x, y, w, h = _box(face_box)
  return (np.asarray(points_px, dtype=np.float64) - [x, y]) / [w, h]


def neutral_landmarks(subject: SubjectParams, face_box) -> np.ndarray:
  """The subject's neutral 68 landmarks in pixels.

  Args:
    subject: the subject.
    face_box: ``(x, y, w, h)`` of the face in pixels.

  Returns:
    float64 array (68, 2) of pixel ``(x, y)`` positions, iBUG-68 order, inside the box.
  """
  return to_pixels(_template(subject), face_box)


# ---------------------------------------------------------------------------------------------
# Action units: displacements (box units) at intensity 1 (a strong, posed expression).
# ---------------------------------------------------------------------------------------------


def _au_table() -> dict[int, np.ndarray]:
  def d():
    return np.zeros((NUM_LANDMARKS, 2))

  def both(arr, pairs):
    """Sets a displacement on image-left points and its mirror on image-right ones."""
    for i, (dx, dy) in pairs.items():
      arr[i] += (dx, dy)
      j = MIRROR_INDEX[i]
      if j != i:
        arr[j] += (-dx, dy)
    return arr

  t = {}
  # AU1 inner brow raiser.
  t[1] = both(d(), {21: (0, -0.06), 20: (0, -0.05), 19: (0, -0.032), 18: (0, -0.015),
                    17: (0, -0.005)})
  # AU2 outer brow raiser.
  t[2] = both(d(), {17: (0, -0.055), 18: (0, -0.06), 19: (0, -0.04), 20: (0, -0.02),
                    21: (0, -0.008)})
  # AU4 brow lowerer: brows down and together, upper lids pushed down a little.
  t[4] = both(d(), {21: (0.03, 0.045), 20: (0.02, 0.04), 19: (0.012, 0.03), 18: (0.006, 0.02),
                    17: (0, 0.012), 37: (0, 0.008), 38: (0, 0.01)})
  # AU5 upper lid raiser.
  t[5] = both(d(), {37: (0, -0.022), 38: (0, -0.024), 19: (0, -0.006), 20: (0, -0.006)})
  # AU6 cheek raiser: lower lids and cheek contour up, crow's feet.
  t[6] = both(d(), {40: (0, -0.014), 41: (0, -0.014), 37: (0, -0.004), 3: (0.004, -0.01),
                    4: (0.003, -0.006), 48: (-0.004, -0.008)})
  # AU7 lid tightener.
  t[7] = both(d(), {40: (0, -0.016), 41: (0, -0.016), 37: (0, 0.008), 38: (0, 0.008)})
  # AU9 nose wrinkler: nose wings and upper lip up, inner brows down.
  t[9] = both(d(), {31: (0.006, -0.035), 32: (0.003, -0.035), 33: (0, -0.035), 30: (0, -0.012),
                    29: (0, -0.006), 50: (0, -0.02), 51: (0, -0.022), 49: (0, -0.012),
                    61: (0, -0.015), 62: (0, -0.016), 21: (0.01, 0.02), 20: (0.005, 0.012),
                    40: (0, -0.008), 41: (0, -0.008)})
  # AU10 upper lip raiser.
  t[10] = both(d(), {49: (0, -0.03), 50: (0, -0.035), 51: (0, -0.035), 61: (0, -0.03),
                     62: (0, -0.03), 48: (0, -0.01), 31: (0, -0.008), 32: (0, -0.008),
                     33: (0, -0.008)})
  # AU12 lip corner puller: corners up and out.
  t[12] = both(d(), {48: (-0.04, -0.05), 60: (-0.032, -0.042), 49: (-0.015, -0.025),
                     59: (-0.02, -0.03), 61: (-0.01, -0.015), 67: (-0.012, -0.02),
                     50: (-0.004, -0.008), 58: (-0.006, -0.01), 57: (0, -0.004),
                     4: (-0.004, -0.008), 3: (-0.004, -0.01), 41: (0, -0.004)})
  # AU14 dimpler: corners tightened inwards and slightly up.
  t[14] = both(d(), {48: (0.02, -0.012), 60: (0.016, -0.01), 49: (0.008, -0.004),
                     59: (0.008, -0.004), 4: (0.004, 0)})
  # AU15 lip corner depressor.
  t[15] = both(d(), {48: (-0.008, 0.045), 60: (-0.006, 0.038), 59: (-0.004, 0.025),
                     49: (-0.002, 0.018), 67: (0, 0.012), 58: (0, 0.01), 5: (0, 0.006)})
  # AU16 lower lip depressor.
  t[16] = both(d(), {57: (0, 0.035), 58: (0, 0.032), 59: (0, 0.02), 66: (0, 0.035),
                     67: (0, 0.028)})
  # AU17 chin raiser: chin and lower lip pushed up.
  t[17] = both(d(), {8: (0, -0.025), 7: (0, -0.02), 6: (0, -0.01), 57: (0, -0.02),
                     58: (0, -0.018), 59: (0, -0.01), 66: (0, -0.01), 67: (0, -0.008)})
  # AU20 lip stretcher.
  t[20] = both(d(), {48: (-0.04, 0.01), 60: (-0.035, 0.008), 49: (-0.015, 0.004),
                     59: (-0.015, 0.006), 5: (-0.006, 0), 4: (-0.005, 0)})
  # AU23 lip tightener: mouth narrower, lips thinner.
  t[23] = both(d(), {48: (0.02, 0), 60: (0.018, 0), 49: (0.01, 0.006), 50: (0, 0.008),
                     51: (0, 0.008), 59: (0.01, -0.006), 58: (0, -0.01), 57: (0, -0.01)})
  # AU24 lip presser: lips pressed together and thinned.
  t[24] = both(d(), {50: (0, 0.012), 51: (0, 0.012), 49: (0.004, 0.008), 58: (0, -0.014),
                     57: (0, -0.015), 59: (0.004, -0.01), 48: (0.008, 0), 60: (0.006, 0)})
  # AU25 lips part.
  t[25] = both(d(), {66: (0, 0.03), 67: (0, 0.026), 57: (0, 0.02), 58: (0, 0.018),
                     59: (0, 0.01), 62: (0, -0.006), 61: (0, -0.005)})
  # AU26 jaw drop.
  t[26] = both(d(), {8: (0, 0.08), 7: (0, 0.07), 6: (0, 0.05), 5: (0, 0.032), 4: (0, 0.016),
                     3: (0, 0.005), 57: (0, 0.075), 58: (0, 0.07), 59: (0, 0.04),
                     66: (0, 0.08), 67: (0, 0.07), 62: (0, -0.004), 61: (0, -0.003)})
  # AU27 mouth stretch.
  t[27] = t[26] * 1.6
  return t


AU_DISPLACEMENTS: dict[int, np.ndarray] = _au_table()
ACTION_UNITS: tuple[int, ...] = tuple(sorted(AU_DISPLACEMENTS))


def _parse_au(key) -> tuple[int, str]:
  """Returns (au, side) with side '' (both), 'R' (subject's right = image left) or 'L'."""
  if isinstance(key, (int, np.integer)):
    au, side = int(key), ""
  elif isinstance(key, str) and key and key[0] in "LRlr" and key[1:].isdigit():
    au, side = int(key[1:]), key[0].upper()
  elif isinstance(key, str) and key.isdigit():
    au, side = int(key), ""
  else:
    raise ValueError(f"action unit key {key!r}: expected an int such as 12 or 'L12' / 'R12'")
  if au not in AU_DISPLACEMENTS:
    raise ValueError(f"action unit {au} is not modelled; known: {ACTION_UNITS}")
  return au, side


def action_unit_displacement(action_units: Mapping) -> np.ndarray:
  """Landmark displacement in box units (68, 2) of a combination ``{au: intensity}``.

  Intensity 1 is a strong posed expression; micro-expressions use about 0.15-0.4. Keys are AU
  numbers, or ``'L12'`` / ``'R12'`` for a movement of the subject's left / right side only.
  """
  total = np.zeros((NUM_LANDMARKS, 2))
  for key, intensity in action_units.items():
    au, side = _parse_au(key)
    disp = AU_DISPLACEMENTS[au] * float(intensity)
    if side:
      # Subject's right = image left = landmarks whose mirror index is larger (or midline: half).
      idx = np.arange(NUM_LANDMARKS)
      on_right = idx < MIRROR_INDEX
      on_mid = idx == MIRROR_INDEX
      keep = on_right if side == "R" else (~on_right & ~on_mid)
      disp = disp * (keep[:, None] + 0.5 * on_mid[:, None])
    total += disp
  return total


def apply_action_units(landmarks: np.ndarray, face_box, action_units: Mapping) -> np.ndarray:
  """Moves landmarks of an upright face by action units.

  Args:
    landmarks: (68, 2) pixel positions (normally the neutral ones).
    face_box: ``(x, y, w, h)``; displacements scale with its size.
    action_units: ``{au: intensity}`` (see :func:`action_unit_displacement`).

  Returns:
    New (68, 2) float64 landmarks.
  """
  landmarks = np.asarray(landmarks, dtype=np.float64)
  if landmarks.shape != (NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must have shape (68, 2), got {landmarks.shape}")
  _, _, w, h = _box(face_box)
  return landmarks + action_unit_displacement(action_units) * [w, h]


# ---------------------------------------------------------------------------------------------
# Geometry helpers.
# ---------------------------------------------------------------------------------------------


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity (Umeyama) mapping ``src`` points to ``dst``: a 2 x 3 matrix."""
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  a, b = src - mu_s, dst - mu_d
  cov = b.T @ a / len(src)
  u, sig, vt = np.linalg.svd(cov)
  d = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    d[-1] = -1
  rot = u @ np.diag(d) @ vt
  var = (a ** 2).sum() / len(src)
  scale = (sig * d).sum() / var if var > 0 else 1.0
  m = np.zeros((2, 3))
  m[:, :2] = scale * rot
  m[:, 2] = mu_d - scale * rot @ mu_s
  return m


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Applies a 2 x 3 affine matrix to (N, 2) points."""
  points = np.asarray(points, np.float64)
  return points @ matrix[:, :2].T + matrix[:, 2]


def pose_matrix(face_box, *, angle_deg: float = 0.0, scale: float = 1.0,
                shift=(0.0, 0.0)) -> np.ndarray:
  """Similarity (2 x 3) rotating/scaling about the face-box centre, then shifting (pixels)."""
  x, y, w, h = _box(face_box)
  m = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), -float(angle_deg), float(scale))
  m[:, 2] += np.asarray(shift, np.float64)
  return m


def _invert_affine(m: np.ndarray) -> np.ndarray:
  return cv2.invertAffineTransform(m.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------------------------

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


def _ipts(points: np.ndarray) -> np.ndarray:
  return np.round(np.asarray(points) * _ONE).astype(np.int32).reshape(-1, 1, 2)


@functools.lru_cache(maxsize=64)
def _catmull_rom_basis(num_points: int, samples: int, closed: bool) -> np.ndarray:
  """Matrix B with ``B @ points`` = the Catmull-Rom curve through the points."""
  t = np.linspace(0, 1, samples, endpoint=False)
  w = 0.5 * np.stack([-t + 2 * t ** 2 - t ** 3, 2 - 5 * t ** 2 + 3 * t ** 3,
                      t + 4 * t ** 2 - 3 * t ** 3, -t ** 2 + t ** 3], 1)  # (samples, 4)
  n = num_points
  if closed:
    segs = n
    rows = np.zeros((segs * samples, n))
    for i in range(segs):
      for j, k in enumerate((i - 1, i, i + 1, i + 2)):
        rows[i * samples:(i + 1) * samples, k % n] += w[:, j]
    return rows
  # Open curve: phantom end points reflected (2 p0 - p1, 2 p_{n-1} - p_{n-2}).
  ext = np.zeros((n + 2, n))
  ext[1:-1] = np.eye(n)
  ext[0, 0], ext[0, 1] = 2, -1
  ext[-1, -1], ext[-1, -2] = 2, -1
  rows = np.zeros(((n - 1) * samples + 1, n))
  for i in range(n - 1):
    rows[i * samples:(i + 1) * samples] = w @ ext[i:i + 4]
  rows[-1, -1] = 1
  return rows


def _smooth_curve(points: np.ndarray, n: int = 8) -> np.ndarray:
  """Catmull-Rom interpolation through ``points`` (open curve)."""
  p = np.asarray(points, np.float64)
  return _catmull_rom_basis(len(p), n, False) @ p


def _smooth_closed(points: np.ndarray, n: int = 6) -> np.ndarray:
  """Catmull-Rom interpolation through ``points`` (closed curve)."""
  p = np.asarray(points, np.float64)
  return _catmull_rom_basis(len(p), n, True) @ p


class _Canvas:
  """Float RGB image with alpha-compositing helpers restricted to bounding rectangles."""

  def __init__(self, image: np.ndarray):
    self.img = image
    self.h, self.w = image.shape[:2]

  def _rect(self, points, margin):
    lo = np.floor(np.min(points, 0) - margin).astype(int)
    hi = np.ceil(np.max(points, 0) + margin).astype(int) + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], self.w), min(hi[1], self.h)
    return x0, y0, x1, y1

  def mask(self, points, margin, draw):
    """Returns ((x0, y0, x1, y1), float mask) after ``draw(mask_u8, offset_points_fn)``."""
    x0, y0, x1, y1 = self._rect(points, margin)
    if x1 <= x0 or y1 <= y0:
      return None, None
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    draw(m, lambda p: _ipts(np.asarray(p) - [x0, y0]))
    return (x0, y0, x1, y1), m

  def blend(self, rect, mask_u8, colour, alpha=1.0, blur=0.0):
    if rect is None:
      return
    x0, y0, x1, y1 = rect
    m = mask_u8.astype(np.float32) * (alpha / 255.0)
    if blur > 0:
      m = cv2.GaussianBlur(m, (0, 0), blur)
    sub = self.img[y0:y1, x0:x1]
    col = np.asarray(colour, np.float32)
    sub += m[..., None] * (col - sub)

  def multiply(self, rect, mask_u8, factor, blur=0.0):
    """Darkens (factor < 1) or brightens where the mask is set."""
    if rect is None:
      return
    x0, y0, x1, y1 = rect
    m = mask_u8.astype(np.float32) / 255.0
    if blur > 0:
      m = cv2.GaussianBlur(m, (0, 0), blur)
    sub = self.img[y0:y1, x0:x1]
    sub *= (1.0 + (factor - 1.0) * m)[..., None]


def _fill(pts):
  def draw(m, off):
    cv2.fillPoly(m, [off(pts)], 255, cv2.LINE_AA, _SHIFT)
  return draw


def _ellipse(center, axes, angle=0.0):
  def draw(m, off):
    c = off(np.asarray(center)[None])[0, 0]
    ax = tuple(int(round(a * _ONE)) for a in axes)
    cv2.ellipse(m, (int(c[0]), int(c[1])), ax, float(angle), 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
  return draw


def _polyline(pts, thickness, closed=False):
  def draw(m, off):
    cv2.polylines(m, [off(pts)], closed, 255, max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)
  return draw


@dataclasses.dataclass(frozen=True)
class PreparedFace:
  """A subject's neutral skin layer in one frame geometry (from :func:`prepare_face`).

  Render frames from it with :func:`render_prepared` (or :func:`render_region`): preparing once
  per clip and rendering every frame is the fast path.
  """
  skin: np.ndarray  # (H, W, 3) uint8 RGB, neutral geometry
  neutral: np.ndarray  # (68, 2) px
  box: tuple
  light: np.ndarray
  illum: Illumination
  subject: SubjectParams
  shade_fn: object


def _head_shading(xs, ys, box, subject, light, illum):
  """Lambertian shading of an ellipsoidal head at pixel coordinates (broadcast)."""
  x, y, w, h = box
  cx, cy = x + 0.5 * w, y + (subject.jaw_top + 0.02) * h
  a = subject.face_half_width * w * 1.02
  b = 0.62 * h
  nx = (xs - cx) / a
  ny = (ys - cy) / b
  r2 = np.minimum(nx * nx + ny * ny, 0.97)
  nz = np.sqrt(1.0 - r2)
  lam = np.maximum(nx * light[0] + ny * light[1] + nz * light[2], 0.0)
  return illum.ambient + illum.diffuse * lam


def prepare_face(subject: SubjectParams, *, image_size, face_box,
                 illumination: Illumination = DEFAULT_ILLUMINATION) -> PreparedFace:
  """Renders the neutral skin layer once; pass the result to :func:`render_prepared`.

  Args:
    subject: the subject.
    image_size: ``(H, W)`` of the frames.
    face_box: ``(x, y, w, h)`` of the neutral face.
    illumination: lighting and background.

  Returns:
    A :class:`PreparedFace`.
  """
  hgt, wid = int(image_size[0]), int(image_size[1])
  if hgt <= 0 or wid <= 0:
    raise ValueError(f"image_size must be (H, W) > 0, got {image_size!r}")
  box = _box(face_box)
  bx, by, bw, bh = box
  s = subject
  illum = illumination
  lvec = np.asarray(illum.direction, np.float64)
  lvec = lvec / np.linalg.norm(lvec)
  gain = np.asarray(illum.colour, np.float32)
  neutral = neutral_landmarks(s, box)

  # Background: vertical gradient with a soft light fall-off.
  t = np.linspace(0.0, 1.0, hgt, dtype=np.float32)[:, None, None]
  top = np.asarray(illum.background_top, np.float32)
  bot = np.asarray(illum.background_bottom, np.float32)
  img = np.empty((hgt, wid, 3), np.float32)
  img[:] = top + (bot - top) * t
  xr = np.linspace(-1.0, 1.0, wid, dtype=np.float32)[None, :, None]
  img *= 1.0 - 0.12 * xr * xr * 1.0
  canvas = _Canvas(img)
  px = lambda u, v: (bx + u * bw, by + v * bh)  # noqa: E731

  def shade_at(pt):
    return float(_head_shading(pt[0], pt[1], box, s, lvec, illum))

  skin = np.asarray(s.skin_rgb, np.float32) * gain
  hair = np.asarray(s.hair_rgb, np.float32) * gain
  clothes = np.asarray(s.clothes_rgb, np.float32) * gain

  # Shoulders and neck.
  sh_c = px(0.5, s.chin + 0.62)
  r, m = canvas.mask(np.array([[bx - 0.9 * bw, by + (s.chin + 0.2) * bh],
                               [bx + 1.9 * bw, by + 2.2 * bh]]), 2,
                     _ellipse(sh_c, (0.95 * bw, 0.5 * bh)))
  canvas.blend(r, m, clothes * 0.8, 1.0)
  neck = np.array([px(0.5 - 0.24, s.chin - 0.3), px(0.5 + 0.24, s.chin - 0.3),
                   px(0.5 + 0.26, s.chin + 0.3), px(0.5 - 0.26, s.chin + 0.3)])
  r, m = canvas.mask(neck, 2, _fill(neck))
  canvas.blend(r, m, skin * (illum.ambient + 0.35 * illum.diffuse), 1.0)
  # Hair behind the head.
  hair_c = px(0.5, s.jaw_top - 0.05)
  hax = ((s.face_half_width + s.hair_volume + 0.03) * bw, (0.62 + s.hair_volume) * bh)
  r, m = canvas.mask(np.array([[hair_c[0] - hax[0], hair_c[1] - hax[1]],
                               [hair_c[0] + hax[0], hair_c[1] + hax[1] * 0.75]]), 3,
                     _ellipse(hair_c, hax))
  if m is not None:
    m[int(min(max(hair_c[1] + 0.55 * hax[1] - r[1], 0), m.shape[0])):] = 0
  canvas.blend(r, m, hair * 0.85, 1.0, blur=0.004 * bw)
  # Ears.
  for side in (-1, 1):
    ec = px(0.5 + side * (s.face_half_width + 0.01), s.eye_v + 0.1)
    r, m = canvas.mask(np.array([ec]), 0.1 * bh, _ellipse(ec, (0.045 * bw, 0.085 * bh)))
    canvas.blend(r, m, skin * (illum.ambient + 0.3 * illum.diffuse), 1.0, blur=0.004 * bw)

  # Face silhouette: forehead ellipse above the jaw line, jaw polygon below.
  jaw = neutral[JAW]
  top_c = px(0.5, s.jaw_top + 0.02)
  fa = (s.face_half_width * bw, (s.jaw_top + 0.08) * bh + 0.0)
  sil_pts = np.concatenate([jaw, [[top_c[0] - fa[0], top_c[1] - fa[1]],
                                  [top_c[0] + fa[0], top_c[1] - fa[1]]]])

  def draw_sil(mm, off):
    cv2.fillPoly(mm, [off(_smooth_curve(jaw, 6))], 255, cv2.LINE_AA, _SHIFT)
    c = off(np.asarray(top_c)[None])[0, 0]
    cv2.ellipse(mm, (int(c[0]), int(c[1])), (int(fa[0] * _ONE), int(fa[1] * _ONE)), 0, 180, 360,
                255, -1, cv2.LINE_AA, _SHIFT)

  r, m = canvas.mask(sil_pts, 3, draw_sil)
  x0, y0, x1, y1 = r
  ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
  shading = _head_shading(xs, ys, box, s, lvec, illum).astype(np.float32)
  # Skin texture: smooth blotches plus fine pores, fixed per subject.
  trng = np.random.default_rng(s.texture_seed)
  coarse = trng.standard_normal((max(4, (y1 - y0) // 6), max(4, (x1 - x0) // 6)),
                                dtype=np.float32)
  coarse = cv2.resize(cv2.GaussianBlur(coarse, (0, 0), 1.0), (x1 - x0, y1 - y0),
                      interpolation=cv2.INTER_CUBIC)
  fine = trng.standard_normal((y1 - y0, x1 - x0), dtype=np.float32)
  fine = cv2.GaussianBlur(fine, (0, 0), max(0.6, 0.004 * bw))
  tex = 1.0 + s.texture_strength * (0.6 * coarse + 0.8 * fine)
  face_rgb = skin[None, None, :] * (shading * tex)[..., None]
  alpha = (m.astype(np.float32) / 255.0)[..., None]
  sub = canvas.img[y0:y1, x0:x1]
  sub += alpha * (face_rgb - sub)

  # Shading details of the face (multiplicative, soft).
  for idx in (RIGHT_EYE, LEFT_EYE):
    c = neutral[idx].mean(0)
    r, m = canvas.mask(c[None], 0.16 * bw, _ellipse(c + [0, -0.01 * bh],
                                                      (0.095 * bw, 0.055 * bh)))
    canvas.multiply(r, m, 0.68, blur=0.025 * bw)
  # Glabella and nose bridge highlight, shadow on the side away from the light.
  side = 1.0 if lvec[0] < 0 else -1.0  # shadow on +x side when light comes from -x
  bridge = neutral[NOSE_BRIDGE]
  r, m = canvas.mask(bridge, 0.05 * bw, _polyline(bridge, 0.035 * bw))
  canvas.multiply(r, m, 1.12, blur=0.012 * bw)
  sh = bridge + [side * 0.045 * bw, 0]
  sh = np.concatenate([sh, neutral[[35 if side > 0 else 31]]])
  r, m = canvas.mask(sh, 0.05 * bw, _polyline(sh, 0.02 * bw))
  canvas.multiply(r, m, 0.82, blur=0.012 * bw)
  # Shadow under the nose and the lower lip, cheek highlights.
  nb = neutral[NOSE_LOWER]
  r, m = canvas.mask(nb, 0.05 * bw, _polyline(nb + [0, 0.012 * bh], 0.02 * bw))
  canvas.multiply(r, m, 0.78, blur=0.01 * bw)
  lower_lip = neutral[[55, 56, 57, 58, 59]] + [0, 0.02 * bh]
  r, m = canvas.mask(lower_lip, 0.05 * bw, _polyline(lower_lip, 0.02 * bw))
  canvas.multiply(r, m, 0.82, blur=0.012 * bw)
  for idx, jaw_i in ((RIGHT_EYE, 3), (LEFT_EYE, 13)):
    c = neutral[idx].mean(0) + [0, 0.14 * bh]
    r, m = canvas.mask(c[None], 0.12 * bw, _ellipse(c, (0.07 * bw, 0.05 * bh)))
    canvas.multiply(r, m, 1.07, blur=0.03 * bw)
  # Nasolabial folds.
  for wing, corner, sgn in ((31, 48, -1), (35, 54, 1)):
    a, b = neutral[wing], neutral[corner]
    fold = np.array([a + [sgn * 0.01 * bw, -0.005 * bh],
                     (a + b) / 2 + [sgn * 0.035 * bw, 0],
                     b + [sgn * 0.035 * bw, 0.03 * bh]])
    fold = _smooth_curve(fold, 6)
    r, m = canvas.mask(fold, 0.03 * bw, _polyline(fold, 0.008 * bw))
    canvas.multiply(r, m, 0.85, blur=0.006 * bw)
  # Hair in front: the part of the forehead above the hairline.
  hl = s.hairline
  top_pts = np.array([px(0.5 - s.face_half_width - 0.05, s.jaw_top - 0.02),
                      px(0.5 - s.face_half_width + 0.06, hl + 0.03), px(0.5, hl),
                      px(0.5 + s.face_half_width - 0.06, hl + 0.03),
                      px(0.5 + s.face_half_width + 0.05, s.jaw_top - 0.02)])
  curve = _smooth_curve(top_pts, 8)
  poly = np.concatenate([curve, [[curve[-1, 0], by - 0.6 * bh], [curve[0, 0], by - 0.6 * bh]]])
  def draw_front(mm, off):
    cv2.fillPoly(mm, [off(poly)], 255, cv2.LINE_AA, _SHIFT)
    inside = np.zeros_like(mm)
    c = off(np.asarray(hair_c)[None])[0, 0]
    cv2.ellipse(inside, (int(c[0]), int(c[1])), (int(hax[0] * _ONE), int(hax[1] * _ONE)), 0, 0,
                360, 255, -1, cv2.LINE_AA, _SHIFT)
    np.minimum(mm, inside, out=mm)

  r, m = canvas.mask(poly, 2, draw_front)
  canvas.blend(r, m, hair, 1.0, blur=0.006 * bw)

  skin_u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return PreparedFace(skin=skin_u8, neutral=neutral, box=box, light=lvec, illum=illum,
                      subject=s, shade_fn=shade_at)


def _residual_field(prep: PreparedFace, resid: np.ndarray, moving: np.ndarray):
  """Dense residual displacement (canonical coordinates) on a region around the moving points.

  Returns ``(x0, y0, fx, fy)``: the field's top-left pixel and its (h, w) float32 components.
  The field is a Gaussian-weighted average of the landmark displacements (still landmarks count
  with zero displacement) with a zero prior, so it is smooth and local.
  """
  neutral = prep.neutral
  _, _, bw, _ = prep.box
  hgt, wid = prep.skin.shape[:2]
  sigma = 0.05 * bw
  pts = neutral[moving]
  lo = np.floor(np.maximum(pts.min(0) - 4 * sigma, 0)).astype(int)
  hi = np.ceil(np.minimum(pts.max(0) + 4 * sigma, [wid - 1, hgt - 1])).astype(int)
  if np.any(hi <= lo):
    return None
  step = max(1, int(sigma / 3))
  gx = np.arange(lo[0], hi[0] + step, step, dtype=np.float64)
  gy = np.arange(lo[1], hi[1] + step, step, dtype=np.float64)
  d = resid * moving[:, None]
  wx = np.exp(-(gx[None, :] - neutral[:, 0:1]) ** 2 / (2 * sigma ** 2))  # (68, nx)
  wy = np.exp(-(gy[None, :] - neutral[:, 1:2]) ** 2 / (2 * sigma ** 2))  # (68, ny)
  wsum = wy.T @ wx + 0.15
  fx = (wy.T * d[:, 0]) @ wx / wsum
  fy = (wy.T * d[:, 1]) @ wx / wsum
  full_w = int(gx[-1] - gx[0]) + 1
  full_h = int(gy[-1] - gy[0]) + 1
  fx = cv2.resize(fx.astype(np.float32), (full_w, full_h), interpolation=cv2.INTER_LINEAR)
  fy = cv2.resize(fy.astype(np.float32), (full_w, full_h), interpolation=cv2.INTER_LINEAR)
  return int(gx[0]), int(gy[0]), fx, fy


def _rect_of(points, margin, hgt, wid):
  lo = np.floor(np.min(points, 0) - margin).astype(int)
  hi = np.ceil(np.max(points, 0) + margin).astype(int) + 1
  return max(lo[0], 0), max(lo[1], 0), min(hi[0], wid), min(hi[1], hgt)


def render_region(prep: PreparedFace, landmarks: np.ndarray, *, margin: int = 0):
  """Renders only the part of the frame that differs from the neutral skin layer.

  Args:
    prep: from :func:`prepare_face`.
    landmarks: (68, 2) pixel landmarks.
    margin: extra pixels around the changed region.

  Returns:
    ``((x0, y0, x1, y1), patch)``: the frame equals ``prep.skin`` with
    ``[y0:y1, x0:x1] = patch`` (uint8 RGB).
  """
  landmarks = np.asarray(landmarks, np.float64)
  if landmarks.shape != (NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must have shape (68, 2), got {landmarks.shape}")
  neutral = prep.neutral
  skin = prep.skin
  hgt, wid = skin.shape[:2]
  bx, by, bw, bh = prep.box
  m = similarity_transform(neutral[_RIGID], landmarks[_RIGID])
  m_inv = _invert_affine(m)
  resid = transform_points(m_inv, landmarks) - neutral
  moving = np.abs(resid).max(1) > 1e-3
  is_identity = np.abs(m - [[1, 0, 0], [0, 1, 0]]).max() < 1e-6
  corners = []
  if not is_identity:
    # The head, hair and upper neck move with the pose (a still camera); the region's border
    # lies outside the face box, in the background, hair or neck.
    head = np.array([[bx - 0.22 * bw, by - 0.52 * bh], [bx + 1.22 * bw, by + 1.25 * bh]])
    corners.append(head)
  field = _residual_field(prep, resid, moving) if moving.any() else None
  if field is not None:
    fx0, fy0, fx, fy = field
    fh, fw = fx.shape
    fc = np.array([[fx0, fy0], [fx0 + fw, fy0], [fx0, fy0 + fh], [fx0 + fw, fy0 + fh]], float)
    field_rect = _rect_of(transform_points(m, fc), 2, hgt, wid)
    corners.append(np.array(field_rect, float).reshape(2, 2))
  size = np.ptp(landmarks, axis=0).max()
  feat_rect = _rect_of(landmarks, 0.08 * size + 3, hgt, wid)
  corners.append(np.array(feat_rect, float).reshape(2, 2))
  x0, y0, x1, y1 = _rect_of(np.concatenate(corners), margin, hgt, wid)
  if x1 <= x0 or y1 <= y0:
    return (0, 0, 0, 0), np.zeros((0, 0, 3), np.uint8)
  if is_identity:
    work = skin[y0:y1, x0:x1].copy()
  else:
    shifted = m.copy()
    shifted[:, 2] -= [x0, y0]
    work = cv2.warpAffine(skin, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
  if field is not None:
    rx0, ry0, rx1, ry1 = field_rect
    if rx1 > rx0 and ry1 > ry0:
      a = m_inv.astype(np.float32)
      xs = np.arange(rx0, rx1, dtype=np.float32)[None, :]
      ys = np.arange(ry0, ry1, dtype=np.float32)[:, None]
      cx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
      cy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
      dx = cv2.remap(fx, cx - fx0, cy - fy0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)
      dy = cv2.remap(fy, cx - fx0, cy - fy0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)
      work[ry0 - y0:ry1 - y0, rx0 - x0:rx1 - x0] = cv2.remap(
          skin, cx - dx, cy - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  fx0_, fy0_, fx1_, fy1_ = feat_rect
  if fx1_ > fx0_ and fy1_ > fy0_:
    sub = work[fy0_ - y0:fy1_ - y0, fx0_ - x0:fx1_ - x0]
    roi = sub.astype(np.float32) * np.float32(1 / 255)
    _draw_features(roi, prep, landmarks - [fx0_, fy0_], np.array([fx0_, fy0_], float))
    sub[...] = np.clip(roi * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return (x0, y0, x1, y1), work


def render_prepared(prep: PreparedFace, landmarks: np.ndarray, *,
                    rng: np.random.Generator | None = None, noise_sigma: float = 0.0) -> np.ndarray:
  """Renders one frame from a prepared skin layer; see :func:`render_face`."""
  (x0, y0, x1, y1), patch = render_region(prep, landmarks)
  out = prep.skin.copy()
  out[y0:y1, x0:x1] = patch
  if rng is not None and noise_sigma > 0:
    noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_sigma)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
  return out


def _draw_features(img: np.ndarray, prep: PreparedFace, lm: np.ndarray,
                   offset: np.ndarray) -> None:
  s = prep.subject
  _, _, bw, bh = prep.box
  # Local scale (pose may scale the face).
  scale = np.linalg.norm(lm[45] - lm[36]) / max(np.linalg.norm(prep.neutral[45] - prep.neutral[36]),
                                                1e-6)
  fw = bw * scale
  canvas = _Canvas(img)
  gain = np.asarray(prep.illum.colour, np.float32)
  shade = lambda p: prep.shade_fn(p + offset)  # noqa: E731

  # Brows: a tapered band around the brow points.
  for idx, outer_first in ((RIGHT_BROW, True), (LEFT_BROW, False)):
    pts = lm[idx] if outer_first else lm[idx][::-1]  # outer -> inner
    curve = _smooth_curve(pts, 4)
    t = np.linspace(0, 1, len(curve))
    thick = s.brow_thickness * fw * (0.55 + 0.45 * np.sin(np.pi * np.clip(t * 0.8 + 0.2, 0, 1)))
    tang = np.gradient(curve, axis=0)
    nrm = np.stack([-tang[:, 1], tang[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    nrm *= np.sign(nrm[:, 1:2] + 1e-9)  # pointing down
    upper = curve - nrm * thick[:, None] * 0.45
    lower = curve + nrm * thick[:, None] * 0.55
    poly = np.concatenate([upper, lower[::-1]])
    r, m = canvas.mask(poly, 3, _fill(poly))
    col = np.asarray(s.brow_rgb, np.float32) * gain * shade(pts.mean(0))
    canvas.blend(r, m, col, 0.88, blur=max(0.5, 0.004 * fw))

  # Eyes.
  for idx in (RIGHT_EYE, LEFT_EYE):
    pts = lm[idx]
    outline = _smooth_closed(pts, 5)
    c = pts.mean(0)
    sh = shade(c)
    r, eye_m = canvas.mask(outline, 3, _fill(outline))
    if r is None:
      continue
    canvas.blend(r, eye_m, np.array([0.86, 0.84, 0.80], np.float32) * gain * sh * 0.95, 1.0)
    ew = np.linalg.norm(pts[3] - pts[0])
    iris_r = 0.23 * ew
    x0, y0 = r[0], r[1]
    iris = np.zeros_like(eye_m)
    cc = _ipts((c - [x0, y0])[None])[0, 0]
    cv2.circle(iris, (int(cc[0]), int(cc[1])), int(iris_r * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
    iris = ((iris.astype(np.uint16) * eye_m) // 255).astype(np.uint8)
    canvas.blend(r, iris, np.asarray(s.iris_rgb, np.float32) * gain * sh, 1.0)
    pupil = np.zeros_like(eye_m)
    cv2.circle(pupil, (int(cc[0]), int(cc[1])), int(0.42 * iris_r * _ONE), 255, -1, cv2.LINE_AA,
               _SHIFT)
    pupil = ((pupil.astype(np.uint16) * eye_m) // 255).astype(np.uint8)
    canvas.blend(r, pupil, np.array([0.03, 0.03, 0.03], np.float32), 1.0)
    glint = np.zeros_like(eye_m)
    gc = cc + np.array([-0.3, -0.35]) * iris_r * _ONE
    cv2.circle(glint, (int(gc[0]), int(gc[1])), int(max(0.16 * iris_r, 0.6) * _ONE), 255, -1,
               cv2.LINE_AA, _SHIFT)
    glint = ((glint.astype(np.uint16) * eye_m) // 255).astype(np.uint8)
    canvas.blend(r, glint, np.array([0.95, 0.95, 0.95], np.float32), 0.8)
    # Upper lid (lashes) and crease, lower lid.
    upper = _smooth_curve(pts[[0, 1, 2, 3]], 5)
    r2, m2 = canvas.mask(upper, 4, _polyline(upper, max(1.0, 0.012 * fw)))
    canvas.blend(r2, m2, np.array([0.06, 0.05, 0.05], np.float32), 0.9, blur=0.3)
    crease = upper[2:-2] + [0, -0.022 * fw * bh / bw]
    r2, m2 = canvas.mask(crease, 4, _polyline(crease, max(1.0, 0.006 * fw)))
    canvas.multiply(r2, m2, 0.8, blur=0.5)
    lower = _smooth_curve(pts[[3, 4, 5, 0]], 5)
    r2, m2 = canvas.mask(lower, 4, _polyline(lower, max(1.0, 0.005 * fw)))
    canvas.multiply(r2, m2, 0.75, blur=0.4)

  # Nostrils.
  for a, b in ((31, 32), (35, 34)):
    c = 0.5 * (lm[a] + lm[b]) + (lm[33] - lm[30]) * -0.15
    ang = np.degrees(np.arctan2(lm[b][1] - lm[a][1], lm[b][0] - lm[a][0]))
    r, m = canvas.mask(c[None], 0.05 * fw, _ellipse(c, (0.022 * fw, 0.011 * fw), ang))
    canvas.multiply(r, m, 0.35, blur=0.006 * fw)
  tip = lm[30]
  r, m = canvas.mask(tip[None], 0.05 * fw, _ellipse(tip + [0, -0.01 * fw], (0.03 * fw, 0.02 * fw)))
  canvas.multiply(r, m, 1.1, blur=0.012 * fw)

  # Lips and mouth.
  outer = _smooth_closed(lm[OUTER_LIPS], 4)
  mouth_sh = shade(lm[OUTER_LIPS].mean(0))
  lip = np.asarray(s.lip_rgb, np.float32) * gain * mouth_sh
  upper_poly = np.concatenate([lm[[48, 49, 50, 51, 52, 53, 54]], lm[[64, 63, 62, 61, 60]]])
  r, m = canvas.mask(outer, 3, _fill(outer))
  canvas.blend(r, m, lip, 0.75, blur=max(0.4, 0.003 * fw))
  r, m = canvas.mask(upper_poly, 3, _fill(_smooth_closed(upper_poly, 3)))
  canvas.multiply(r, m, 0.88, blur=max(0.4, 0.003 * fw))
  inner = lm[INNER_LIPS]
  gap = np.mean(inner[[5, 6, 7], 1] - inner[[3, 2, 1], 1])
  if gap > 0.006 * fw:
    inner_c = _smooth_closed(inner, 4)
    r, m = canvas.mask(inner_c, 2, _fill(inner_c))
    canvas.blend(r, m, np.array([0.12, 0.05, 0.05], np.float32) * mouth_sh, 1.0)
    teeth = inner_c.copy()
    teeth[:, 1] = np.minimum(teeth[:, 1], inner[[1, 2, 3], 1].mean() + 0.025 * fw)
    r, m = canvas.mask(teeth, 2, _fill(teeth))
    if m is not None:
      r_in, m_in = canvas.mask(teeth, 2, _fill(inner_c))
      m = np.minimum(m, m_in)
    canvas.blend(r, m, np.array([0.85, 0.82, 0.75], np.float32) * gain * mouth_sh, 0.9)
  line = _smooth_curve(lm[[48, 60, 61, 62, 63, 64, 54]], 4)
  r, m = canvas.mask(line, 3, _polyline(line, max(1.0, 0.007 * fw)))
  canvas.blend(r, m, lip * 0.35, 0.9, blur=0.3)
  for k in (48, 54):
    r, m = canvas.mask(lm[k][None], 0.03 * fw, _ellipse(lm[k], (0.01 * fw, 0.008 * fw)))
    canvas.multiply(r, m, 0.7, blur=0.006 * fw)


def render_face(subject: SubjectParams, landmarks: np.ndarray, *, image_size: Sequence[int],
                face_box, illumination: Illumination = DEFAULT_ILLUMINATION,
                rng: np.random.Generator | None = None, noise_sigma: float = 2.0) -> np.ndarray:
  """Renders a face whose features sit at ``landmarks``.

  The subject's neutral face in ``face_box`` is rendered, its skin layer warped by the similarity
  and the smooth residual displacement between the neutral and the given landmarks, and the
  features are drawn at the landmarks.

  Args:
    subject: the subject (:func:`sample_subject`).
    landmarks: (68, 2) pixel ``(x, y)``: the neutral ones, moved by :func:`apply_action_units`
      and/or a pose (:func:`pose_matrix` with :func:`transform_points`).
    image_size: ``(H, W)`` of the output image.
    face_box: ``(x, y, w, h)`` of the neutral face, the box the landmarks were made for.
    illumination: the lighting and background.
    rng: source of the sensor noise; ``None`` renders without noise (deterministic).
    noise_sigma: standard deviation of the Gaussian noise in grey levels (used with ``rng``).

  Returns:
    uint8 array (H, W, 3) in **RGB** order (convert with ``cv2.cvtColor(.., COLOR_RGB2BGR)``
    before ``cv2.imwrite``).
  """
  prep = prepare_face(subject, image_size=image_size, face_box=face_box,
                      illumination=illumination)
  return render_prepared(prep, landmarks, rng=rng, noise_sigma=noise_sigma)
