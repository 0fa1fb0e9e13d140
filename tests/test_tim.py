"""TIM against the published implementation's output on a real CASME II clip."""
import cv2
import numpy as np
import pytest

import tgsr_jax
from tgsr_jax.tim import tim_matrix


def _read(paths):
  return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])


def test_matches_official_output(shared):
  frames = _read([shared("casme2_clip", "frames", f"in_{i:03d}.jpg") for i in range(1, 11)])
  official = _read([shared("casme2_clip", "tim16", f"{i:02d}.jpg") for i in range(1, 17)])
  out = np.asarray(tgsr_jax.temporal_interpolate(frames, 16))
  assert out.shape == (16, 340, 280)
  err = out - official
  psnr = 10 * np.log10(255.0 ** 2 / np.mean(err ** 2))
  # Measured: mean |error| 0.49, PSNR 50.8 dB; all of it is the JPEG coding of the official frames.
  assert np.abs(err).mean() < 0.6 and psnr > 49
  # Coding ours the way MATLAB's imwrite does (JPEG quality 75) reproduces the files almost
  # bit for bit (measured: mean |error| 7e-5, max 1 grey level).
  ours = np.clip(np.round(out), 0, 255).astype(np.uint8)
  coded = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 75])[1],
                                 cv2.IMREAD_GRAYSCALE) for f in ours])
  diff = np.abs(coded.astype(int) - official)
  assert diff.mean() < 1e-3 and diff.max() <= 1


def test_reproduces_input_frames_at_their_positions():
  frames = np.random.default_rng(0).uniform(0, 255, (7, 5, 4, 3))  # (T, H, W, C)
  at_frames = np.asarray(tgsr_jax.temporal_interpolate(frames.astype(np.float32), 0,
                                      positions=np.arange(1, 8) / 7))
  np.testing.assert_allclose(at_frames, frames, atol=1e-3)
  np.testing.assert_allclose(tim_matrix(7, 0, positions=np.arange(1, 8) / 7), np.eye(7),
                             atol=1e-12)
  # The default positions linspace(1/N, 1, K) hit frames 1 and N exactly.
  out = np.asarray(tgsr_jax.temporal_interpolate(frames.astype(np.float32), 13))
  np.testing.assert_allclose(out[[0, -1]], frames[[0, -1]], atol=1e-3)


def test_is_the_cosine_series_and_batches():
  n, k = 6, 11
  m = tim_matrix(n, k)
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)  # constants are kept
  x = np.random.default_rng(1).normal(size=(n, 3))
  # Direct evaluation of mu + sum_k a_k cos(pi k (N t - 1/2) / N).
  mu = x.mean(0)
  i = np.arange(1, n + 1)
  t = np.linspace(1 / n, 1, k)
  expected = np.tile(mu, (k, 1))
  for kk in range(1, n):
    a = (2 / n) * (np.cos(np.pi * kk * (i - 0.5) / n)[:, None] * (x - mu)).sum(0)
    expected += np.cos(np.pi * kk * (n * t - 0.5) / n)[:, None] * a
  np.testing.assert_allclose(m @ x, expected, atol=1e-10)
  batch = np.random.default_rng(2).uniform(size=(2, n, 4, 5)).astype(np.float32)
  out = np.asarray(tgsr_jax.temporal_interpolate(batch, k, axis=1))
  assert out.shape == (2, k, 4, 5)
  np.testing.assert_allclose(out[1], np.asarray(tgsr_jax.temporal_interpolate(batch[1], k)), atol=1e-5)
  with pytest.raises(ValueError, match="at least 2"):
    tgsr_jax.temporal_interpolate(batch[:, :1], k, axis=1)


def test_package_keeps_the_module_reachable():
  import types
  from tgsr_jax import tim as tim_module
  assert isinstance(tgsr_jax.tim, types.ModuleType) and tgsr_jax.tim is tim_module
  assert tgsr_jax.temporal_interpolate is tim_module.temporal_interpolate is tim_module.tim
