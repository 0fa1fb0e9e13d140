"""Data augmentation for face images and their 68 landmarks (pure NumPy / OpenCV functions).

Coordinate convention (used by the readers, the synthetic data and the metrics alike): a
landmark is (x, y) in *pixel-centre* coordinates of the image, pixel (i, j) having its centre
at x = i, y = j (OpenCV's convention, so `cv2.warpAffine` and `cv2.transform` apply unchanged).
Normalised coordinates in (0, 1) are u = (x + 0.5) / S for an S x S image, so a horizontal flip
is u -> 1 - u and x -> S - 1 - x.

Every random function takes a `np.random.Generator`; `pipeline.train_batch` seeds one per
sample from (seed, task, step, index). Training runs the same transforms on the device, inside
the train step (`device_augment`, tested against these functions); fine-tuning flips its
images here.

Per the paper, expression images are only flipped; landmark images are flipped (with the
point indices mirrored), cropped, rotated, scaled, shifted and get additive Gaussian pixel
noise.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from subtle_core.faces import ibug


def normalise_landmarks(points, image_size: int):
  """Pixel-centre coordinates -> (0, 1) coordinates, u = (x + 0.5) / S."""
  return (np.asarray(points, np.float32) + 0.5) / np.float32(image_size)


def denormalise_landmarks(points, image_size: int):
  """(0, 1) coordinates -> pixel-centre coordinates, x = u S - 0.5."""
  return np.asarray(points, np.float32) * np.float32(image_size) - 0.5


def horizontal_flip(image: np.ndarray, landmarks: np.ndarray | None = None):
  """Mirrors an image left-right and, if given, its 68 normalised landmarks.

  The landmark x coordinates become 1 - x and the point indices are permuted with
  `subtle_core.faces.ibug.MIRROR_INDEX` so that, e.g., the flipped right eye corner (36) is
  stored as the left one (45).

  Args:
    image: (H, W, C) image.
    landmarks: optional (68, 2) points in normalised (0, 1) coordinates.

  Returns:
    The flipped image, or (image, landmarks) when landmarks are given.
  """
  flipped = np.ascontiguousarray(image[:, ::-1])
  if landmarks is None:
    return flipped
  points = np.asarray(landmarks, np.float32).copy()
  points[:, 0] = 1.0 - points[:, 0]
  return flipped, points[ibug.MIRROR_INDEX]


def affine_matrix(image_size: int, *, rotation_deg: float = 0.0, scale: float = 1.0,
                  shift=(0.0, 0.0)) -> np.ndarray:
  """2 x 3 matrix rotating and scaling about the image centre, then shifting.

  Args:
    image_size: S of the S x S image.
    rotation_deg: counter-clockwise rotation in degrees (OpenCV's sign convention).
    scale: isotropic zoom factor (> 1 enlarges the face).
    shift: (dx, dy) translation as a fraction of S.

  Returns:
    (2, 3) float64 matrix mapping source pixel-centre coordinates to destination ones.
  """
  centre = ((image_size - 1) / 2.0, (image_size - 1) / 2.0)
  matrix = cv2.getRotationMatrix2D(centre, float(rotation_deg), float(scale))
  matrix[:, 2] += np.asarray(shift, np.float64) * image_size
  return matrix


def crop_matrix(image_size: int, box) -> np.ndarray:
  """2 x 3 matrix mapping the box (x0, y0, w, h) of a source image onto an S x S image.

  The box is in continuous image coordinates (pixel i covers [i, i + 1)); its corners land on
  the output's corners, so with the pixel-centre convention x' = s (x + 0.5 - x0) - 0.5.

  Args:
    image_size: S.
    box: (x0, y0, w, h) in source pixels.

  Returns:
    (2, 3) float64 matrix.
  """
  x0, y0, w, h = (float(v) for v in box)
  if w <= 0 or h <= 0:
    raise ValueError(f"crop box must have positive size, got {box}")
  sx, sy = image_size / w, image_size / h
  return np.array([[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]])


def warp(image: np.ndarray, matrix: np.ndarray, out_size: int,
         landmarks_px: np.ndarray | None = None, *, border=cv2.BORDER_REPLICATE):
  """Applies one affine matrix to an image and to its landmarks (pixel coordinates).

  Args:
    image: (H, W, C) uint8 or float image.
    matrix: (2, 3) source -> destination matrix.
    out_size: S of the S x S output.
    landmarks_px: optional (K, 2) points in source pixel-centre coordinates.
    border: OpenCV border mode for pixels that fall outside the source.

  Returns:
    The warped image, or (image, points) when landmarks are given.
  """
  out = cv2.warpAffine(image, np.asarray(matrix, np.float64), (out_size, out_size),
                       flags=cv2.INTER_LINEAR, borderMode=border)
  if out.ndim == 2:
    out = out[..., None]
  if landmarks_px is None:
    return out
  points = np.asarray(landmarks_px, np.float64)
  moved = points @ matrix[:, :2].T + matrix[:, 2]
  return out, moved.astype(np.float32)


def affine_landmarks(image: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray):
  """Warps an S x S image and its normalised landmarks with a pixel-space matrix."""
  size = image.shape[0]
  out, moved = warp(image, matrix, size, denormalise_landmarks(landmarks, size))
  return out, normalise_landmarks(moved, size)


@dataclasses.dataclass(frozen=True)
class LandmarkAugment:
  """Ranges of the random landmark-task augmentation (all drawn uniformly).

  Attributes:
    flip_probability: chance of a horizontal flip (with mirrored point indices).
    max_rotation_deg: rotation drawn from [-max, max] degrees.
    scale_range: zoom drawn from [low, high]; > 1 acts as a random crop of 1 / zoom of the face.
    max_shift: translation drawn from [-max, max] * S on each axis (with scale: a random crop).
    noise_std: std of additive Gaussian pixel noise, in grey levels (0 disables).
  """
  flip_probability: float = 0.5
  max_rotation_deg: float = 15.0
  scale_range: tuple = (0.9, 1.1)
  max_shift: float = 0.05
  noise_std: float = 3.0


def random_affine_matrix(rng: np.random.Generator, image_size: int,
                         params: LandmarkAugment) -> np.ndarray:
  """Draws one rotation + scale + shift matrix (see `affine_matrix`)."""
  rotation = rng.uniform(-params.max_rotation_deg, params.max_rotation_deg)
  scale = rng.uniform(*params.scale_range)
  shift = rng.uniform(-params.max_shift, params.max_shift, size=2)
  return affine_matrix(image_size, rotation_deg=rotation, scale=scale, shift=shift)


def random_crop(image: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator, *,
                min_fraction: float = 0.85):
  """Crops a random square of [min_fraction, 1] x S and resizes it back to S x S.

  Args:
    image: (S, S, C) image.
    landmarks: optional (68, 2) normalised points, moved with the crop.
    rng: random generator.
    min_fraction: smallest crop side as a fraction of S.

  Returns:
    The cropped image, or (image, landmarks).
  """
  size = image.shape[0]
  side = rng.uniform(min_fraction, 1.0) * size
  x0, y0 = rng.uniform(0.0, size - side, size=2)
  matrix = crop_matrix(size, (x0, y0, side, side))
  if landmarks is None:
    return warp(image, matrix, size)
  return affine_landmarks(image, landmarks, matrix)


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
  """Adds N(0, std^2) pixel noise to a uint8 image (clipped to [0, 255])."""
  if std <= 0:
    return image
  noisy = image.astype(np.float32) + rng.normal(0.0, std, size=image.shape).astype(np.float32)
  return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def augment_expression(image: np.ndarray, rng: np.random.Generator, *,
                       flip_probability: float = 0.5) -> np.ndarray:
  """Expression-task augmentation: a random horizontal flip only."""
  if rng.random() < flip_probability:
    return horizontal_flip(image)
  return image


def augment_landmarks(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                      params: LandmarkAugment = LandmarkAugment()):
  """Landmark-task augmentation: flip, rotation + scale + shift (a random crop), noise.

  Args:
    image: (S, S, C) uint8 image.
    landmarks: (68, 2) normalised points.
    rng: random generator.
    params: augmentation ranges.

  Returns:
    (image, landmarks) augmented consistently.
  """
  if rng.random() < params.flip_probability:
    image, landmarks = horizontal_flip(image, landmarks)
  matrix = random_affine_matrix(rng, image.shape[0], params)
  image, landmarks = affine_landmarks(image, landmarks, matrix)
  image = gaussian_noise(image, rng, params.noise_std)
  return image, landmarks
