"""Temporal Interpolation Model (TIM; Zhou, Zhao & Pietikainen, CVPR 2011).

TIM embeds the N frames of a clip on the path graph (frames i and i + 1 connected). The Laplacian
eigenvectors of that graph are the DCT-II basis, ``y_k(i) = cos(pi k (i - 1/2) / N)``, and the
continuous curve through the embedding is ``y_k(t) = sin(pi k t + pi (N - k) / (2 N))``, which
equals ``cos(pi k (N t - 1/2) / N)``. The published code maps the frames to that curve through
the mean-removed frames and back, so over ``t in [1/N, 1]`` the model is

  ``x(t) = mu + sum_{k=1}^{N-1} a_k cos(pi k (N t - 1/2) / N)``,

with ``mu`` the mean frame and ``a_k`` the DCT-II coefficients of the mean-removed frames. It
passes exactly through frame i (1-based) at ``t = i / N``. The published code samples the K output
frames at ``t = linspace(1/N, 1, K)``.

Since the model is linear in the frames, it is a ``(K, N)`` matrix (:func:`tim_matrix`) applied
along the time axis (:func:`temporal_interpolate`, exported as ``tgsr_jax.temporal_interpolate``):
one matmul for any number of pixels, channels or clips.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def tim_matrix(num_frames: int, length: int, *, positions=None) -> np.ndarray:
  """The ``(K, N)`` TIM interpolation matrix, in float64.

  Args:
    num_frames: N, the number of input frames (>= 2).
    length: K, the number of output frames (>= 1); ignored when ``positions`` is given.
    positions: optional sample positions ``t`` (frame i sits at ``i / N``); by default
      ``linspace(1/N, 1, K)`` as in the published code.

  Returns:
    ``M`` such that ``out[j] = sum_i M[j, i] frames[i]``.
  """
  n = int(num_frames)
  if n < 2:
    raise ValueError(f"TIM needs at least 2 frames, got {n}")
  if positions is None:
    if int(length) < 1:
      raise ValueError(f"TIM length must be >= 1, got {length}")
    positions = np.linspace(1.0 / n, 1.0, int(length))
  t = np.asarray(positions, dtype=np.float64).reshape(-1)
  k = np.arange(1, n)
  i = np.arange(1, n + 1)
  # Orthonormal-free DCT-II: a_k = (2/N) sum_i (x_i - mu) cos(pi k (i - 1/2) / N).
  analysis = (2.0 / n) * np.cos(np.pi * k[:, None] * (i[None, :] - 0.5) / n)  # (N-1, N)
  synthesis = np.cos(np.pi * k[None, :] * (n * t[:, None] - 0.5) / n)  # (K, N-1)
  # Mean removal is implicit: every row of `analysis` sums to zero over i.
  return np.full((t.size, n), 1.0 / n) + synthesis @ analysis


def temporal_interpolate(frames, length: int, *, axis: int = 0, positions=None) -> jnp.ndarray:
  """Interpolates a clip to ``length`` frames with the Temporal Interpolation Model.

  Args:
    frames: array with N >= 2 frames along ``axis``, e.g. ``(T, H, W)`` or ``(T, H, W, C)``, or
      batched ``(B, T, H, W)`` with ``axis=1``. Integer inputs are converted to float32.
    length: number of output frames K.
    axis: the time axis.
    positions: optional sample positions (see :func:`tim_matrix`).

  Returns:
    float array with ``length`` frames along ``axis`` (not rounded or clipped: TIM may overshoot
    the input range slightly between frames).
  """
  x = jnp.asarray(frames)
  if x.ndim == 0:
    raise ValueError("frames must have a time axis")
  axis = axis % x.ndim
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  m = jnp.asarray(tim_matrix(x.shape[axis], length, positions=positions), dtype=x.dtype)
  out = jnp.tensordot(m, x, axes=([1], [axis]))  # time axis first
  return jnp.moveaxis(out, 0, axis)


# The short name, for ``from tgsr_jax.tim import tim``; the package exports the function as
# ``tgsr_jax.temporal_interpolate``, so ``tgsr_jax.tim`` stays this module.
tim = temporal_interpolate
