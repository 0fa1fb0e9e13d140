"""Hand-crafted descriptors: LBP against scikit-image, LPQ and EOH against plain per-pixel loops."""
import math

import numpy as np
import pytest

from mtl_flax.baselines import handcrafted

skimage_feature = pytest.importorskip("skimage.feature")


def _bounds(size, cells):
  return [int(i * size / cells + 0.5) for i in range(cells + 1)]


def _cell_histograms(codes_at, shape, grid, border, num_bins, weight_at=None):
  """Histograms from per-centre callables, one plain loop over the centres of every cell."""
  row_bounds, col_bounds = _bounds(shape[0], grid[0]), _bounds(shape[1], grid[1])
  out = []
  for i in range(grid[0]):
    for j in range(grid[1]):
      hist = np.zeros(num_bins)
      for y in range(max(row_bounds[i], border), min(row_bounds[i + 1], shape[0] - border)):
        for x in range(max(col_bounds[j], border), min(col_bounds[j + 1], shape[1] - border)):
          hist[codes_at(y, x)] += 1.0 if weight_at is None else weight_at(y, x)
      out.append(hist / hist.sum() if hist.sum() > 0 else hist)
  return np.concatenate(out)


def _rounded_luma(rgb):
  return np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)


def test_nri_uniform_mapping_has_59_bins_and_keeps_uniform_codes_apart():
  mapping = handcrafted.nri_uniform_mapping(8)
  uniform = [c for c in range(256)
             if sum(((c >> k) & 1) != ((c >> ((k + 1) % 8)) & 1) for k in range(8)) <= 2]
  assert len(uniform) == 58 and len(np.unique(mapping)) == 59
  assert len(np.unique(mapping[uniform])) == 58
  non_uniform = np.setdiff1d(np.arange(256), uniform)
  assert set(mapping[non_uniform]) == {58}


def test_lbp_grid_features_match_scikit_image_histograms():
  rng = np.random.default_rng(0)
  # Few grey levels, so that many neighbours tie with their centre.
  gray = rng.integers(0, 5, (2, 23, 26)).astype(np.uint8)
  gray[1, 4:12, 3:15] = 7  # a flat patch
  grid = (3, 4)
  features = handcrafted.lbp_grid_features(gray, grid)
  assert features.shape == (2, 3 * 4 * 59)
  for image, row in zip(gray, features):
    codes = skimage_feature.local_binary_pattern(image, 8, 1, method="nri_uniform")
    expected = _cell_histograms(lambda y, x: int(codes[y, x]), image.shape, grid, 1, 59)
    np.testing.assert_allclose(row, expected, rtol=0, atol=1e-15)


def test_lbp_codes_match_scikit_image_for_other_radii():
  rng = np.random.default_rng(1)
  gray = rng.integers(0, 4, (1, 17, 19)).astype(np.uint8)
  for points, radius in ((16, 2), (8, 3), (12, 1.5)):
    border = math.ceil(radius)
    codes = handcrafted.lbp_codes(handcrafted.to_gray(gray), points=points, radius=radius)
    expected = skimage_feature.local_binary_pattern(gray[0], points, radius, method="default")
    np.testing.assert_array_equal(codes[0], expected[border:-border, border:-border])


def test_rgb_input_is_rounded_bt601_luma():
  rng = np.random.default_rng(2)
  rgb = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
  np.testing.assert_array_equal(handcrafted.to_gray(rgb), _rounded_luma(rgb.astype(float)))
  np.testing.assert_array_equal(handcrafted.lbp_grid_features(rgb, (2, 2)),
                                handcrafted.lbp_grid_features(_rounded_luma(rgb), (2, 2)))


def _direct_lpq_code(f, y, x, win, v, tolerance):
  r = (win - 1) // 2
  coefficients = []
  for u_row, u_col in ((0, 1), (1, 0), (1, 1), (1, -1)):
    value = 0j
    # F(u, x) = sum_y f(x - y) exp(-2 pi j u . y) with u = (u_row, u_col) / win.
    for dy in range(-r, r + 1):
      for dx in range(-r, r + 1):
        value += f[y - dy, x - dx] * np.exp(-2j * np.pi * (u_row * dy + u_col * dx) / win)
    coefficients += [value.real, value.imag]
  g = np.array(coefficients)
  if v is not None:
    g = v.T @ g
  return sum(1 << k for k in range(8) if g[k] > tolerance)


@pytest.mark.parametrize("win,decorrelate", [(7, False), (5, True)])
def test_lpq_features_match_a_direct_loop(win, decorrelate):
  rng = np.random.default_rng(3)
  gray = rng.integers(0, 256, (1, 14, 15)).astype(np.float64)
  gray[0, 1:8, 2:10] = 90.0  # flat: every coefficient is zero up to round-off
  grid = (2, 2)
  features = handcrafted.lpq_features(gray, grid, win=win, decorrelate=decorrelate)
  v = handcrafted.lpq_decorrelation(win) if decorrelate else None
  tolerance = 1e-9 * 255
  codes = {}

  def code_at(y, x):
    codes[y, x] = _direct_lpq_code(gray[0], y, x, win, v, tolerance)
    return codes[y, x]

  expected = _cell_histograms(code_at, gray.shape[1:], grid, (win - 1) // 2, 256)
  np.testing.assert_allclose(features[0], expected, rtol=0, atol=1e-15)
  r = (win - 1) // 2
  assert codes[1 + r, 2 + r] == 0  # a window inside the flat patch
  assert len(set(codes.values())) > 20  # the comparison covers many different codes


def test_lpq_decorrelation_diagonalises_the_model_covariance():
  win, rho = 5, 0.9
  r = (win - 1) // 2
  offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
  weights = []
  for u_row, u_col in ((0, 1), (1, 0), (1, 1), (1, -1)):
    w = [np.exp(-2j * np.pi * (u_row * dy + u_col * dx) / win) for dy, dx in offsets]
    weights += [np.real(w), np.imag(w)]
  cov = np.zeros((8, 8))
  for k in range(8):
    for l in range(8):
      for p, (py, px) in enumerate(offsets):
        for q, (qy, qx) in enumerate(offsets):
          cov[k, l] += weights[k][p] * weights[l][q] * rho ** math.hypot(py - qy, px - qx)
  a = np.diag([1.000007, 1.000006, 1.000005, 1.000004, 1.000003, 1.000002, 1.000001, 1.0])
  v = handcrafted.lpq_decorrelation(win, rho)
  np.testing.assert_allclose(v.T @ v, np.eye(8), atol=1e-12)
  rotated = v.T @ a @ cov @ a @ v
  off_diagonal = rotated - np.diag(np.diag(rotated))
  assert np.abs(off_diagonal).max() < 1e-9 * np.abs(rotated).max()
  assert np.all(np.abs(v).max(axis=0) == v.max(axis=0))  # the sign convention


def test_eoh_features_match_a_direct_loop():
  rng = np.random.default_rng(4)
  gray = rng.integers(0, 6, (1, 13, 11)).astype(np.float64)
  gray[0, 6:, :5] = 3.0  # flat: zero magnitude
  grid, bins, threshold = (2, 3), 6, 2.5
  f = gray[0]

  def gradient(y, x):
    gx = (f[y - 1, x + 1] + 2 * f[y, x + 1] + f[y + 1, x + 1]
          - f[y - 1, x - 1] - 2 * f[y, x - 1] - f[y + 1, x - 1])
    gy = (f[y + 1, x - 1] + 2 * f[y + 1, x] + f[y + 1, x + 1]
          - f[y - 1, x - 1] - 2 * f[y - 1, x] - f[y - 1, x + 1])
    return gx, gy

  def bin_at(y, x):
    gx, gy = gradient(y, x)
    theta = math.atan2(gy, gx) % math.pi
    return min(int(theta * bins / math.pi), bins - 1)

  def weight_at(y, x):
    magnitude = math.hypot(*gradient(y, x))
    return magnitude if magnitude > threshold else 0.0

  expected = _cell_histograms(bin_at, f.shape, grid, 1, bins, weight_at)
  features = handcrafted.eoh_features(gray, grid, bins=bins, threshold=threshold)
  np.testing.assert_allclose(features[0], expected, rtol=1e-12, atol=1e-15)


def test_eoh_orientation_of_vertical_and_horizontal_edges():
  ramp = np.tile(np.arange(12.0) ** 2, (12, 1))  # grows along x: gradient along +x, theta = 0
  features = handcrafted.eoh_features(np.stack([ramp, ramp.T, -ramp]), (1, 1), bins=4)
  np.testing.assert_allclose(features[0], [1, 0, 0, 0])
  np.testing.assert_allclose(features[1], [0, 0, 1, 0])  # along y: theta = pi / 2
  np.testing.assert_allclose(features[2], [1, 0, 0, 0])  # unsigned: contrast reversal agrees


def test_descriptors_reject_a_grid_finer_than_the_image():
  with pytest.raises(ValueError, match="grid"):
    handcrafted.lpq_features(np.zeros((1, 12, 12)), (4, 4), win=7)
  with pytest.raises(ValueError, match="images"):
    handcrafted.lbp_grid_features(np.zeros((12, 12)))


def test_linear_svm_recovers_a_planted_class_and_reports_macro_f1():
  rng = np.random.default_rng(5)
  labels = np.arange(240) % 3
  # The class sits in feature 0 at a tiny scale; features 1-3 are noise a million times larger,
  # which only a standardised SVM sees past.
  informative = 1e-6 * (labels + rng.normal(0, 0.15, 240))
  features = np.column_stack([informative, rng.normal(0, 1.0, (240, 3))])
  out = handcrafted.fit_linear_svm_and_score(features[:160], labels[:160], features[160:],
                                             labels[160:])
  assert out["accuracy"] > 0.9
  pred, truth = out["predictions"], labels[160:]
  f1 = []
  for k in range(3):
    tp = np.sum((pred == k) & (truth == k))
    f1.append(2 * tp / (np.sum(pred == k) + np.sum(truth == k)))
  assert out["mf1"] == pytest.approx(np.mean(f1))
  assert out["accuracy"] == pytest.approx(np.mean(pred == truth))
  with pytest.raises(ValueError, match="test_features"):
    handcrafted.fit_linear_svm_and_score(features, labels, features[:, :2], labels)
