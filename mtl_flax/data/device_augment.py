"""The training augmentation as pure JAX functions, run batched inside the jitted train step.

`mtl_flax.step` calls `augment_batch` on every uint8 host batch with the run's `config.augment`
ranges (its base key is half of the step key; see `mtl_flax.step`).

The same transforms and parameter ranges as the NumPy / OpenCV path of `mtl_flax.data.augment`
(expression images are only flipped; landmark images are flipped with the iBUG mirror
permutation, rotated, scaled and shifted, which together act as a random crop, and get Gaussian
pixel noise), but

* every landmark image is resampled once: the flip and the affine transform are composed into
  one 2 x 3 matrix M (source -> destination pixel-centre coordinates, OpenCV's convention), and
  each output pixel p reads the source at M^-1 p by bilinear interpolation with replicated
  borders (`cv2.warpAffine(..., INTER_LINEAR, BORDER_REPLICATE)`); the landmarks move with M.
  Because a flip maps pixel centres onto pixel centres, flipping first and warping second (the
  host path) gives the same image;
* the random numbers of sample j of batch `step` come from its own key
  `fold_in(fold_in(fold_in(base_key, stream), step), j)` (stream = the task's index in
  `pipeline.TASKS`), so a run resumed at step s draws exactly what an uninterrupted run would.
  The draws are not those of the host path (another generator): the same distribution,
  deterministic per (seed, step, sample);
* with ``quantise=True`` (the default) the warped image and the noisy image are rounded and
  clipped to [0, 255] as the host path's uint8 images are, so the network sees the same kind of
  input; the result is returned in the network's input scaling, `evaluate.preprocess` of those
  grey levels: x / 127.5 - 1.

A random crop (`augment.random_crop`, not part of today's landmark augmentation) can be composed
into the same matrix with ``crop_min_fraction < 1``.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_flax.data import augment
from mtl_flax.data import pipeline
from subtle_core.faces import ibug

# Salt that separates the data keys from the model's keys drawn from the same seed.
_DATA_KEY_SALT = 0x0A06


def data_key(seed: int, impl: str = "threefry2x32") -> jax.Array:
  """The base key of the data augmentation for a run seeded with ``seed``.

  Args:
    seed: the run's seed (`config.seed`).
    impl: the PRNG implementation (`config.prng_impl`). With 'threefry2x32' a sample's draws do
      not depend on how the batch is vmapped or sharded; 'rbg' is faster on accelerators but
      only promises the same draws for the same batch size and layout (enough for resuming).

  Returns:
    A typed key, distinct from `jax.random.key(seed)` that the model's keys derive from.
  """
  return jax.random.fold_in(jax.random.key(seed, impl=impl), _DATA_KEY_SALT)


def sample_keys(base_key: jax.Array, step, batch_size: int, *, stream: int = 0) -> jax.Array:
  """Keys of the samples of batch ``step``: fold_in(fold_in(fold_in(base, stream), step), j).

  Args:
    base_key: e.g. `data_key(seed)`.
    step: the batch number (a traced integer is fine).
    batch_size: B (static).
    stream: the task's stream (its index in `pipeline.TASKS`).

  Returns:
    (B,) keys.
  """
  key = jax.random.fold_in(jax.random.fold_in(base_key, stream), step)
  return jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(batch_size))


# --------------------------------------------------------------------------- matrices


def _as3x3(matrix):
  return jnp.concatenate([jnp.asarray(matrix, jnp.float32),
                          jnp.array([[0.0, 0.0, 1.0]], jnp.float32)], axis=0)


def compose(outer, inner):
  """The 2 x 3 matrix of ``outer`` applied after ``inner``."""
  return (_as3x3(outer) @ _as3x3(inner))[:2]


def invert(matrix):
  """The inverse of an invertible 2 x 3 affine matrix."""
  matrix = jnp.asarray(matrix, jnp.float32)
  a, b = matrix[:, :2], matrix[:, 2]
  a_inv = jnp.linalg.inv(a)
  return jnp.concatenate([a_inv, -(a_inv @ b)[:, None]], axis=1)


def flip_matrix(image_size: int, flip=True):
  """x -> S - 1 - x (pixel-centre coordinates) when ``flip``, else the identity."""
  sign = jnp.where(flip, -1.0, 1.0).astype(jnp.float32)
  offset = jnp.where(flip, image_size - 1.0, 0.0).astype(jnp.float32)
  zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
  return jnp.stack([jnp.stack([sign, zero, offset]), jnp.stack([zero, one, zero])])


def affine_matrix(image_size: int, rotation_deg, scale, shift):
  """`augment.affine_matrix` (OpenCV's `getRotationMatrix2D` about the centre, then a shift).

  Args:
    image_size: S.
    rotation_deg: counter-clockwise rotation in degrees.
    scale: zoom factor.
    shift: (2,) translation as a fraction of S.

  Returns:
    (2, 3) float32 matrix.
  """
  theta = jnp.deg2rad(jnp.asarray(rotation_deg, jnp.float32))
  alpha = scale * jnp.cos(theta)
  beta = scale * jnp.sin(theta)
  c = (image_size - 1) / 2.0
  shift = jnp.asarray(shift, jnp.float32) * image_size
  return jnp.stack([
      jnp.stack([alpha, beta, (1.0 - alpha) * c - beta * c + shift[0]]),
      jnp.stack([-beta, alpha, beta * c + (1.0 - alpha) * c + shift[1]]),
  ]).astype(jnp.float32)


def crop_matrix(image_size: int, x0, y0, side):
  """`augment.crop_matrix` of the square box (x0, y0, side, side)."""
  s = image_size / jnp.asarray(side, jnp.float32)
  zero = jnp.zeros_like(s)
  return jnp.stack([jnp.stack([s, zero, s * (0.5 - x0) - 0.5]),
                    jnp.stack([zero, s, s * (0.5 - y0) - 0.5])]).astype(jnp.float32)


def transform_points(points_px, matrix):
  """Applies a 2 x 3 matrix to (K, 2) pixel-centre points."""
  matrix = jnp.asarray(matrix, jnp.float32)
  return points_px @ matrix[:, :2].T + matrix[:, 2]


# --------------------------------------------------------------------------- resampling


def warp_bilinear(image, matrix, out_size: int):
  """Warps an image with a source -> destination matrix (bilinear, replicated borders).

  Output pixel (x, y) reads the source at M^-1 (x, y); source coordinates outside the image are
  clamped to its edge (OpenCV's BORDER_REPLICATE). Unlike `cv2.warpAffine`, coordinates and
  weights are not rounded to 1/32 pixel, so the two differ by a grey level or two at edges.

  Args:
    image: (H, W, C) image of any dtype.
    matrix: (2, 3) source -> destination matrix.
    out_size: S of the S x S output.

  Returns:
    (S, S, C) float32 image.
  """
  h, w, c = image.shape
  inv = invert(matrix)
  grid = jnp.arange(out_size, dtype=jnp.float32)
  xs, ys = grid[None, :], grid[:, None]
  sx = jnp.clip(inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2], 0.0, w - 1.0)
  sy = jnp.clip(inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2], 0.0, h - 1.0)
  x0 = jnp.floor(sx)
  y0 = jnp.floor(sy)
  wx = (sx - x0)[..., None]
  wy = (sy - y0)[..., None]
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  x1 = jnp.minimum(x0 + 1, w - 1)
  y1 = jnp.minimum(y0 + 1, h - 1)
  flat = image.reshape(h * w, c)

  def at(y, x):
    return jnp.take(flat, y * w + x, axis=0, mode="clip").astype(jnp.float32)

  top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
  bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
  return top * (1.0 - wy) + bottom * wy


def to_network_input(pixels):
  """Grey levels in [0, 255] -> the network's input scaling, x / 127.5 - 1 (`evaluate.preprocess`)."""
  return jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------- one sample


def landmark_transform(key, image_size: int, *, flip_probability: float, max_rotation_deg: float,
                       scale_range: Sequence[float], max_shift: float,
                       crop_min_fraction: float = 1.0):
  """Draws one sample's landmark-task transform.

  The order of composition is that of `augment.augment_landmarks`: flip first, then the rotation,
  scale and shift about the centre (`augment.affine_matrix`); an optional random square crop of
  [crop_min_fraction, 1] x S (`augment.random_crop`) comes last.

  Args:
    key: the sample's key.
    image_size: S.
    flip_probability, max_rotation_deg, scale_range, max_shift: as in `augment.LandmarkAugment`.
    crop_min_fraction: smallest crop side as a fraction of S (1 disables the crop).

  Returns:
    (matrix (2, 3), flip (bool), params) with params a dict of the drawn values.
  """
  k_flip, k_rot, k_scale, k_shift, k_crop_side, k_crop_pos = jax.random.split(key, 6)
  flip = jax.random.uniform(k_flip) < flip_probability
  rotation = jax.random.uniform(k_rot, minval=-max_rotation_deg, maxval=max_rotation_deg)
  scale = jax.random.uniform(k_scale, minval=scale_range[0], maxval=scale_range[1])
  shift = jax.random.uniform(k_shift, (2,), minval=-max_shift, maxval=max_shift)
  matrix = compose(affine_matrix(image_size, rotation, scale, shift),
                   flip_matrix(image_size, flip))
  params = {"flip": flip, "rotation_deg": rotation, "scale": scale, "shift": shift}
  if crop_min_fraction < 1.0:
    side = jax.random.uniform(k_crop_side, minval=crop_min_fraction, maxval=1.0) * image_size
    corner = jax.random.uniform(k_crop_pos, (2,)) * (image_size - side)
    matrix = compose(crop_matrix(image_size, corner[0], corner[1], side), matrix)
    params.update(crop_side=side, crop_corner=corner)
  return matrix, flip, params


def warp_landmark_sample(image, landmarks, matrix, flip):
  """Warps one image and its normalised landmarks with ``matrix`` (a flip already composed in).

  Args:
    image: (S, S, C) image (uint8 or float grey levels).
    landmarks: (68, 2) normalised points.
    matrix: (2, 3) source -> destination pixel matrix.
    flip: whether ``matrix`` contains a flip (then the point indices are mirrored).

  Returns:
    ((S, S, C) float32 grey levels, (68, 2) float32 normalised points).
  """
  size = image.shape[0]
  points = jnp.asarray(landmarks, jnp.float32) * size - 0.5
  moved = (transform_points(points, matrix) + 0.5) / size
  moved = jnp.where(flip, moved[np.asarray(ibug.MIRROR_INDEX)], moved)
  return warp_bilinear(image, matrix, size), moved


def _quantised(pixels, quantise):
  return jnp.clip(jnp.round(pixels), 0.0, 255.0) if quantise else pixels


def augment_landmark_sample(image, landmarks, key, *, params: augment.LandmarkAugment,
                            crop_min_fraction: float = 1.0, quantise: bool = True):
  """The landmark-task augmentation of one sample (grey levels out; see the module docstring).

  Args:
    image: (S, S, 3) uint8.
    landmarks: (68, 2) normalised points.
    key: the sample's key.
    params: the augmentation ranges (`augment.LandmarkAugment`).
    crop_min_fraction: see `landmark_transform`.
    quantise: round to integer grey levels after the warp and after the noise.

  Returns:
    ((S, S, 3) float32 grey levels in [0, 255], (68, 2) float32 normalised points).
  """
  transform_key, noise_key = jax.random.split(key)
  matrix, flip, _ = landmark_transform(
      transform_key, image.shape[0], flip_probability=params.flip_probability,
      max_rotation_deg=params.max_rotation_deg, scale_range=params.scale_range,
      max_shift=params.max_shift, crop_min_fraction=crop_min_fraction)
  pixels, points = warp_landmark_sample(image, landmarks, matrix, flip)
  pixels = _quantised(pixels, quantise)
  if params.noise_std > 0:
    noise = jax.random.normal(noise_key, pixels.shape, jnp.float32) * params.noise_std
    pixels = _quantised(pixels + noise, quantise)
    if not quantise:
      pixels = jnp.clip(pixels, 0.0, 255.0)
  return pixels, points


def augment_expression_sample(image, key, *, flip_probability: float = 0.5):
  """The expression-task augmentation of one sample: a random horizontal flip (grey levels out)."""
  flip = jax.random.uniform(key) < flip_probability
  return jnp.where(flip, image[:, ::-1], image).astype(jnp.float32)


# --------------------------------------------------------------------------- batches


def augment_landmarks(images, landmarks, keys, *, params: augment.LandmarkAugment,
                      crop_min_fraction: float = 1.0, quantise: bool = True):
  """`augment_landmark_sample` over a batch.

  Args:
    images: (B, S, S, 3) uint8.
    landmarks: (B, 68, 2) or (B, 136) normalised points.
    keys: (B,) keys (`sample_keys`).
    params, crop_min_fraction, quantise: see `augment_landmark_sample`.

  Returns:
    ((B, S, S, 3) float32 grey levels, landmarks of the input's shape).
  """
  shape = landmarks.shape
  points = jnp.reshape(landmarks, (shape[0], -1, 2))
  fn = lambda im, pt, k: augment_landmark_sample(im, pt, k, params=params,
                                                 crop_min_fraction=crop_min_fraction,
                                                 quantise=quantise)
  pixels, moved = jax.vmap(fn)(images, points, keys)
  return pixels, moved.reshape(shape)


def augment_expressions(images, keys, *, flip_probability: float = 0.5):
  """`augment_expression_sample` over a batch: (B, S, S, 3) -> float32 grey levels."""
  return jax.vmap(lambda im, k: augment_expression_sample(
      im, k, flip_probability=flip_probability))(images, keys)


def augment_batch(batch: dict, base_key: jax.Array, step, *, tasks: Sequence[str],
                  enabled: bool = True,
                  landmark_augment: augment.LandmarkAugment = augment.LandmarkAugment(),
                  expression_flip: float = 0.5, crop_min_fraction: float = 1.0,
                  quantise: bool = True) -> dict:
  """Augments a host batch (`device_pipeline.HostBatches`) on the device; call inside the step.

  Args:
    batch: images (T, B, S, S, 3) uint8, labels (B,), landmarks (B, 136) (as `pipeline`).
    base_key: `data_key(seed)`.
    step: the batch number (the step's `state['step']`, traced).
    tasks: slot t of images is tasks[t] (static).
    enabled: False returns the images in the network's input scaling, untouched otherwise.
    landmark_augment: the landmark-task ranges.
    expression_flip: the flip probability of expression images.
    crop_min_fraction: see `landmark_transform`.
    quantise: see `augment_landmark_sample`.

  Returns:
    The batch with images float32 in the network's input scaling and landmarks moved.
  """
  out = dict(batch)
  images = batch["images"]
  if not enabled:
    out["images"] = to_network_input(images)
    return out
  slots = []
  for t, task in enumerate(tasks):
    keys = sample_keys(base_key, step, images.shape[1], stream=pipeline.TASKS.index(task))
    if task == "expression":
      slots.append(augment_expressions(images[t], keys, flip_probability=expression_flip))
    elif task == "landmarks":
      pixels, points = augment_landmarks(images[t], batch["landmarks"], keys,
                                         params=landmark_augment,
                                         crop_min_fraction=crop_min_fraction, quantise=quantise)
      slots.append(pixels)
      out["landmarks"] = points
    else:
      raise ValueError(f"augment_batch: unknown task {task!r}; expected one of {pipeline.TASKS}")
  out["images"] = to_network_input(jnp.stack(slots))
  return out
