"""LBP-TOP codes and multi-scale features against independent references."""
import h5py
import numpy as np
import pytest
from skimage.feature import local_binary_pattern

import tgsr_jax
from tgsr_jax import layout
from tgsr_jax import lbp_top


def _volume(seed, shape=(9, 12, 13)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("interpolation", [False, True])
@pytest.mark.parametrize("radius", [3, (2, 3, 1)])
def test_codes_match_per_pixel_loop(interpolation, radius):
  v = _volume(0)
  # Flat patches make ties (neighbour == centre) frequent, so `>=` is exercised.
  v[2:6, 3:8, 4:9] = 77
  codes = np.asarray(lbp_top.lbp_top_codes(v, radius=radius, interpolation=interpolation))
  ref = lbp_top.lbp_top_loop(v, radius=radius, interpolation=interpolation)
  assert codes.shape == ref.shape
  np.testing.assert_array_equal(codes, ref)


def _skimage_planes(v, points, radius, method):
  """scikit-image LBP of every XY, XT and YT slice, cropped to the valid centres."""
  r = radius
  t_len, h, w = v.shape
  xy = np.stack([local_binary_pattern(v[t], points, r, method) for t in range(r, t_len - r)])
  xt = np.stack([local_binary_pattern(v[:, y, :], points, r, method)
                 for y in range(r, h - r)], axis=1)
  yt = np.stack([local_binary_pattern(v[:, :, x], points, r, method)
                 for x in range(r, w - r)], axis=2)
  return np.stack([xy[:, r:h - r, r:w - r], xt[r:t_len - r, :, r:w - r],
                   yt[r:t_len - r, r:h - r, :]]).astype(np.int64)


def _riu2(points):
  """Rotation-invariant uniform mapping (scikit-image's 'uniform'): #ones, or P + 1."""
  codes = np.arange(2 ** points)
  bits = (codes[:, None] >> np.arange(points)) & 1
  changes = (bits != np.roll(bits, 1, axis=1)).sum(1)
  return np.where(changes <= 2, bits.sum(1), points + 1)


def test_interpolated_codes_match_skimage():
  v = _volume(1, (8, 11, 12))
  codes = np.asarray(lbp_top.lbp_top_codes(v, interpolation=True)).astype(np.int64)
  # Raw codes: same neighbour order and bit order as scikit-image's 'default' method.
  np.testing.assert_array_equal(codes, _skimage_planes(v, 8, 3, "default"))
  # Through a mapping both sides share: rotation-invariant uniform, P + 2 = 10 values.
  np.testing.assert_array_equal(_riu2(8)[codes], _skimage_planes(v, 8, 3, "uniform"))
  # And the project's 59-bin uniform mapping applied to both.
  mapping = lbp_top.uniform_mapping(8)
  np.testing.assert_array_equal(mapping[codes], mapping[_skimage_planes(v, 8, 3, "default")])


def test_rounded_codes_match_skimage_where_positions_are_integers():
  # With P = 4 every neighbour lies on an axis, so scikit-image samples whole pixels too.
  v = _volume(2, (8, 10, 11))
  codes = np.asarray(lbp_top.lbp_top_codes(v, points=4, interpolation=False)).astype(np.int64)
  np.testing.assert_array_equal(codes, _skimage_planes(v, 4, 3, "default"))


def test_uniform_mapping():
  mapping = lbp_top.uniform_mapping(8)
  assert mapping.shape == (256,) and lbp_top.num_bins(8) == 59
  uniform = [c for c in range(256)
             if sum(((c >> i) & 1) != ((c >> ((i + 1) % 8)) & 1) for i in range(8)) <= 2]
  assert len(uniform) == 58
  np.testing.assert_array_equal(mapping[uniform], np.arange(58))  # ascending numeric order
  others = np.setdiff1d(np.arange(256), uniform)
  assert np.all(mapping[others] == 58)
  assert mapping[0] == 0 and mapping[255] == 57 and mapping[0b101] == 58


def _reference_features(clip, interpolation):
  """Region-major features from the loop codes and np.histogram over each block's centres."""
  r = 3
  codes = lbp_top.lbp_top_loop(clip, interpolation=interpolation)
  mapping = lbp_top.uniform_mapping(8)
  t_len, h, w = clip.shape
  ys, xs = np.arange(r, h - r), np.arange(r, w - r)
  out = []
  for s, row, col, _ in layout.region_table():
    rb, cb = layout.block_bounds(h, s), layout.block_bounds(w, s)
    my = (ys >= rb[row]) & (ys < rb[row + 1])
    mx = (xs >= cb[col]) & (xs < cb[col + 1])
    for plane in range(3):
      block = codes[plane][:, my][:, :, mx]
      hist = np.histogram(mapping[block], bins=np.arange(60))[0].astype(float)
      out.append(hist / hist.sum())
  return np.concatenate(out)


@pytest.mark.parametrize("interpolation", [False, True])
def test_features_match_reference_and_layouts(interpolation):
  clip = _volume(3, (8, 32, 32))
  feats = tgsr_jax.lbp_top_features(clip, interpolation=interpolation)
  assert feats.shape == (15045,)
  np.testing.assert_allclose(feats, _reference_features(clip, interpolation), atol=1e-12)
  np.testing.assert_allclose(feats.reshape(255, 59).sum(1), 1.0, atol=1e-12)
  bench = lbp_top.lbp_top_features(clip, layout="benchmark", interpolation=interpolation)
  np.testing.assert_array_equal(bench[layout.benchmark_to_region_major()], feats)
  # The benchmark order: inside the 2x2 scale, XY of blocks 1..4, then XT, then YT.
  region_major = feats.reshape(85, 3, 59)
  np.testing.assert_array_equal(bench[177 + 4 * 59:177 + 5 * 59], region_major[1, 1])


def test_batch_equals_single_and_rejects_bad_shapes():
  clips = np.stack([_volume(s, (8, 32, 32)) for s in (4, 5, 6)])
  batch = lbp_top.lbp_top_features_batch(clips, batch_size=2)
  for clip, row in zip(clips, batch):
    np.testing.assert_array_equal(row, lbp_top.lbp_top_features(clip))
  with pytest.raises(ValueError, match="T, H, W"):
    lbp_top.lbp_top_features(clips)
  with pytest.raises(ValueError, match="no centre"):
    lbp_top.lbp_top_codes(np.zeros((6, 20, 20), np.uint8))
  with pytest.raises(ValueError, match="region with no valid"):
    lbp_top.lbp_top_features(_volume(7, (8, 16, 16)))
  with pytest.raises(ValueError, match="layout"):
    lbp_top.lbp_top_features(clips[0], layout="plane_major")


def test_real_benchmark_files_follow_the_layout(shared):
  import scipy.io
  data = scipy.io.loadmat(shared("cdmer", "SMIC_VIS_Corpus_LBPTOP.mat"))
  x = data["SMIC_VIS_micro_feature"]
  assert x.shape == (71, 15045)
  np.testing.assert_allclose(x.sum(1), 255.0, atol=1e-6)
  np.testing.assert_allclose(x.reshape(71, 255, 59).sum(-1), 1.0, atol=1e-6)


def test_conventions_match_real_casme2_features(shared):
  """Our neighbour convention on a real CASME II clip gives histograms shaped like the benchmark's.

  The mean 1x1 histogram of each plane over the 130 real CASME II samples correlates > 0.96 with
  ours on the real clip; swapping rows and columns of the XY plane (the other family of
  neighbour orders) drops the XY correlation below 0.7.
  """
  import cv2
  frames = np.stack([cv2.imread(str(shared("casme2_clip", "frames", f"in_{i:03d}.jpg")), 0)
                     for i in range(1, 11)])
  small = np.stack([cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA) for f in frames])
  clip = np.clip(np.round(np.asarray(tgsr_jax.temporal_interpolate(small, 16))), 0, 255).astype(np.uint8)
  path = shared("cdmer", "ssfr", "CrossCorpus_LBPTOP_R3P8_CASME2_112by112.mat")
  with h5py.File(path, "r") as f:
    real = np.asarray(f["CASME2_micro_feature"]).T
  real_mean = real[:, layout.benchmark_to_region_major()].reshape(-1, 85, 3, 59)[:, 0].mean(0)
  ours = lbp_top.lbp_top_features(clip).reshape(85, 3, 59)[0]
  for plane in range(3):
    assert np.corrcoef(ours[plane], real_mean[plane])[0, 1] > 0.96
  swapped = lbp_top.lbp_top_features(clip.transpose(0, 2, 1)).reshape(85, 3, 59)[0]
  assert np.corrcoef(swapped[0], real_mean[0])[0, 1] < 0.7
