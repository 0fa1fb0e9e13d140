"""Hand-crafted face descriptors on a cell grid (uniform LBP, LPQ, EOH) and a linear SVM.

Every descriptor is a pure NumPy function of a batch of face images, computed in float64 and
vectorised over the batch (processed in chunks to bound memory). Conventions shared by the three:

* Images are ``(N, S, S, 3)`` RGB or ``(N, S, S)`` / ``(N, S, S, 1)`` grey, uint8 or float. RGB is
  turned grey by :func:`to_gray`: ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601), rounded to whole
  grey levels for uint8 input (so LBP sees integer images, as scikit-image recommends), kept
  exact for float input.
* A descriptor code is computed only at centres whose whole neighbourhood lies inside the image
  (a border of ``ceil(R)`` pixels for LBP, ``(win - 1) / 2`` for LPQ, 1 for EOH).
* The grid splits the *image* into ``grid = (rows, cols)`` cells with boundaries
  ``round(i * S / cells)`` (:func:`cell_bounds`; on 96 x 96 with 7 x 7 cells they are 13-14 pixels
  wide), and a code counts in the cell that holds its centre. Each cell's histogram is normalised
  to sum 1 (cells along the border hold fewer centres); a cell of EOH without any edge energy
  stays all zeros.
* Feature vectors are cell-major: cell ``(i, j)`` (row-major over the grid) occupies entries
  ``[(i * cols + j) * B, (i * cols + j + 1) * B)`` for B bins.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

_CHUNK = 128  # images per vectorised chunk: a 96 x 96 chunk of float64 temporaries is ~9 MB each
_LPQ_FREQUENCIES = ((0, 1), (1, 0), (1, 1), (1, -1))  # (u_row, u_col) in units of 1 / win
_LPQ_ALMOST_IDENTITY = (1.000007, 1.000006, 1.000005, 1.000004, 1.000003, 1.000002, 1.000001, 1.0)
_LPQ_ZERO_TOLERANCE = 1e-9  # relative to the image's peak; far above float64 round-off of a sum


def to_gray(images, *, name: str = "images") -> np.ndarray:
  """Grey float64 images ``(N, S, S)`` from RGB or grey input.

  Args:
    images: ``(N, H, W, 3)`` RGB, ``(N, H, W, 1)`` or ``(N, H, W)`` grey; uint8 or float.
    name: the argument's name in error messages.

  Returns:
    ``(N, H, W)`` float64; integer grey levels for integer input (BT.601 luma, rounded).
  """
  arr = np.asarray(images)
  if arr.ndim == 4 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim == 4 and arr.shape[-1] == 3:
    luma = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.rint(luma) if np.issubdtype(arr.dtype, np.integer) else luma
  if arr.ndim != 3:
    raise ValueError(f"{name}: expected (N, H, W, 3) RGB or (N, H, W) grey images, got shape "
                     f"{arr.shape}")
  if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
    raise ValueError(f"{name}: expected integer or float pixels, got dtype {arr.dtype}")
  return arr.astype(np.float64)


def cell_bounds(size: int, cells: int) -> np.ndarray:
  """Boundaries ``round(i * size / cells)``, i = 0..cells, of a grid axis (halves round up)."""
  i = np.arange(cells + 1)
  return (2 * i * size + cells) // (2 * cells)


def _check_grid(grid: Sequence[int], shape: tuple[int, int], border: int, what: str):
  grid = tuple(int(g) for g in grid)
  if len(grid) != 2 or min(grid) < 1:
    raise ValueError(f"grid: expected (rows, cols) of positive cell counts, got {grid}")
  for cells, size in zip(grid, shape):
    bounds = cell_bounds(size, cells)
    # The first and last cells lose the border; every cell needs at least one centre.
    inner = np.clip(bounds, border, size - border)
    if np.any(np.diff(inner) < 1):
      raise ValueError(f"grid={grid}: a {what} on {shape[0]} x {shape[1]} images (border "
                       f"{border}) leaves a cell without any centre; use fewer cells or "
                       f"larger images")
  return grid


def _grid_histograms(codes: np.ndarray, border: int, shape: tuple[int, int],
                     grid: tuple[int, int], num_bins: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
  """Per-cell histograms of codes ``(N, H - 2b, W - 2b)`` centred at ``[b, H - b) x [b, W - b)``.

  Returns ``(N, rows * cols * num_bins)`` float64, each cell normalised to sum 1 (or all zeros).
  """
  n, h, w = codes.shape
  cell_row = np.searchsorted(cell_bounds(shape[0], grid[0]), np.arange(border, border + h),
                             side="right") - 1
  cell_col = np.searchsorted(cell_bounds(shape[1], grid[1]), np.arange(border, border + w),
                             side="right") - 1
  cell = cell_row[:, None] * grid[1] + cell_col[None, :]
  num_cells = grid[0] * grid[1]
  keys = ((np.arange(n)[:, None, None] * num_cells + cell[None]) * num_bins
          + codes.astype(np.int64))
  hist = np.bincount(keys.ravel(), weights=None if weights is None else weights.ravel(),
                     minlength=n * num_cells * num_bins).reshape(n, num_cells, num_bins)
  hist = hist.astype(np.float64)
  total = hist.sum(axis=-1, keepdims=True)
  hist = np.divide(hist, total, out=np.zeros_like(hist), where=total > 0)
  return hist.reshape(n, num_cells * num_bins)


def _chunked(fn, gray: np.ndarray) -> np.ndarray:
  return np.concatenate([fn(gray[i:i + _CHUNK]) for i in range(0, len(gray), _CHUNK)], axis=0)


# --------------------------------------------------------------------------------------- LBP


def nri_uniform_mapping(points: int = 8) -> np.ndarray:
  """Bin of every P-bit LBP code, in scikit-image's ``'nri_uniform'`` order.

  A code is uniform when its bits ``b_0 ... b_{P-1}`` change at most twice along ``b_0 -> b_{P-1}``
  (equivalently, circularly). Bin 0 is all zeros; a uniform code with ``n`` ones (0 < n < P) whose
  run of ones starts at bit ``s`` (circularly) goes to ``1 + (n - 1) P + ((P - s) mod P)``, so bins
  ``1 .. P(P-1)`` hold the rotations of each n; bin ``P(P-1) + 1`` is all ones and bin
  ``P(P-1) + 2`` collects every non-uniform code: 59 bins for P = 8.

  Args:
    points: P.

  Returns:
    int64 ``(2**P,)`` code -> bin.
  """
  codes = np.arange(2 ** points)
  bits = (codes[:, None] >> np.arange(points)) & 1
  changes = np.abs(np.diff(bits, axis=1)).sum(axis=1)
  ones = bits.sum(axis=1)
  # The run of ones starts where a one follows a zero circularly (bit 0 if bit 0 starts it).
  starts = bits & (1 - np.roll(bits, 1, axis=1))
  start = np.argmax(starts, axis=1)
  mapping = 1 + (ones - 1) * points + (points - start) % points
  mapping = np.where(ones == 0, 0, mapping)
  mapping = np.where(ones == points, points * (points - 1) + 1, mapping)
  return np.where(changes <= 2, mapping, points * (points - 1) + 2).astype(np.int64)


def _lbp_offsets(points: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
  angle = 2 * np.pi * np.arange(points, dtype=np.float64) / points
  return np.round(-radius * np.sin(angle), 5), np.round(radius * np.cos(angle), 5)


def lbp_codes(gray: np.ndarray, *, points: int = 8, radius: float = 1.0) -> np.ndarray:
  """Raw P-bit LBP codes of grey images at the centres ``[b, H - b) x [b, W - b)``, b = ceil(R).

  Neighbour p sits at ``(r - R sin(2 pi p / P), c + R cos(2 pi p / P))`` (offsets rounded to 5
  decimals), sampled bilinearly, and bit p is set when it is ``>=`` the centre. The arithmetic is
  scikit-image's, operation for operation, so codes (ties included) equal its
  ``local_binary_pattern(image, P, R)`` on those centres.

  Args:
    gray: ``(N, H, W)`` grey images.
    points: P (at most 31).
    radius: R > 0.

  Returns:
    int64 ``(N, H - 2b, W - 2b)``.
  """
  gray = np.asarray(gray, np.float64)
  if not 1 <= points <= 31 or radius <= 0:
    raise ValueError(f"LBP: expected 1 <= P <= 31 and R > 0, got P={points}, R={radius}")
  border = math.ceil(radius)
  _, h, w = gray.shape
  rows = np.arange(border, h - border, dtype=np.float64)
  cols = np.arange(border, w - border, dtype=np.float64)
  center = gray[:, border:h - border, border:w - border]
  codes = np.zeros(center.shape, np.int64)
  out_h, out_w = center.shape[1:]
  for p, (dr_p, dc_p) in enumerate(zip(*_lbp_offsets(points, radius))):
    # floor(row + d) = row + floor(d) exactly (offsets are integers or >= 1e-5 away from one),
    # so the four corners are shifted slices; the fractions stay per row, as scikit-image's.
    r0, r1 = border + math.floor(dr_p), border + math.ceil(dr_p)
    c0, c1 = border + math.floor(dc_p), border + math.ceil(dc_p)
    r, c = rows + dr_p, cols + dc_p
    dr = (r - np.floor(r))[:, None]
    dc = (c - np.floor(c))[None, :]
    corner = lambda i, j: gray[:, i:i + out_h, j:j + out_w]
    top = (1 - dc) * corner(r0, c0) + dc * corner(r0, c1)
    bottom = (1 - dc) * corner(r1, c0) + dc * corner(r1, c1)
    value = (1 - dr) * top + dr * bottom
    codes |= ((value - center) >= 0).astype(np.int64) << p
  return codes


def lbp_grid_features(images, grid: Sequence[int] = (7, 7), *, points: int = 8,
                      radius: float = 1.0) -> np.ndarray:
  """Uniform LBP histograms on a cell grid (Ahonen et al., 2006, with LBP_{8,1}^{u2}).

  Codes are :func:`lbp_codes`, binned by :func:`nri_uniform_mapping` (59 bins for P = 8: the 58
  uniform patterns, rotations kept apart, and one bin for the rest).

  Args:
    images: ``(N, S, S, 3)`` RGB or ``(N, S, S)`` grey, see :func:`to_gray`.
    grid: cells ``(rows, cols)``.
    points: P.
    radius: R.

  Returns:
    float64 ``(N, rows * cols * (P (P - 1) + 3))``, each cell's histogram summing to 1.
  """
  gray = to_gray(images)
  border = math.ceil(radius)
  grid = _check_grid(grid, gray.shape[1:], border, "LBP")
  mapping = nri_uniform_mapping(points)
  num_bins = points * (points - 1) + 3
  return _chunked(lambda g: _grid_histograms(
      mapping[lbp_codes(g, points=points, radius=radius)], border, gray.shape[1:], grid,
      num_bins), gray)


# --------------------------------------------------------------------------------------- LPQ


def lpq_filters(win: int = 7) -> np.ndarray:
  """The four STFT functionals of LPQ on a ``win x win`` window, ``(4, win, win)`` complex.

  Filter k weights the window pixel ``f(x_row - r + i, x_col - r + j)`` (r = (win - 1) / 2) by
  ``exp(-2 pi j (u_row y_row + u_col y_col))`` with ``y = (r - i, r - j)``, which is
  ``F(u, x) = sum_y f(x - y) exp(-2 pi j u . y)`` of Ojansivu & Heikkila (2008), at the frequencies
  ``u = (u_row, u_col) = a * (0, 1), (1, 0), (1, 1), (1, -1)`` with ``a = 1 / win`` (the order and
  signs of the authors' ``lpq.m``, whose ``conv2`` filters are these).
  """
  r = (win - 1) // 2
  y = r - np.arange(win)
  a = 1.0 / win
  return np.stack([np.exp(-2j * np.pi * a * (ur * y[:, None] + uc * y[None, :]))
                   for ur, uc in _LPQ_FREQUENCIES])


def lpq_decorrelation(win: int = 7, rho: float = 0.9) -> np.ndarray:
  """Orthogonal V that decorrelates the 8 LPQ coefficients; decorrelated = ``V.T @ g``.

  As in ``lpq.m``: neighbouring pixels are modelled with correlation ``rho ** distance``, the
  covariance of ``g = (Re F1, Im F1, ..., Re F4, Im F4)`` is ``D = M C M^T``, and V holds the right
  singular vectors of ``A D A`` with A = diag(1.000007, ..., 1.000001, 1) (which makes the singular
  values distinct).
  Singular vectors have no sign; here each column's entry of largest magnitude is positive (the
  bits after decorrelation depend on that choice, so they may differ from a MATLAB run's).

  Args:
    win: window side.
    rho: correlation of adjacent pixels.

  Returns:
    float64 ``(8, 8)``.
  """
  filters = lpq_filters(win)
  rows, cols = np.meshgrid(np.arange(win), np.arange(win), indexing="ij")
  pos = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
  distance = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
  cov = rho ** distance
  m = np.stack([part for f in filters for part in (f.real.ravel(), f.imag.ravel())])
  d = m @ cov @ m.T
  a = np.diag(_LPQ_ALMOST_IDENTITY)
  _, _, vt = np.linalg.svd(a @ d @ a)
  v = vt.T
  signs = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(8)])
  return v * signs


def lpq_coefficients(gray: np.ndarray, *, win: int = 7) -> np.ndarray:
  """``(N, H - 2r, W - 2r, 8)`` coefficients ``(Re F1, Im F1, ..., Re F4, Im F4)`` of grey images.

  Each filter of :func:`lpq_filters` is separable, so it runs as a 1-D pass along the columns and
  one along the rows.
  """
  gray = np.asarray(gray, np.float64)
  r = (win - 1) // 2
  _, h, w = gray.shape
  y = r - np.arange(win)
  a = 1.0 / win
  out_h, out_w = h - 2 * r, w - 2 * r

  def along_cols(u):
    kernel = np.exp(-2j * np.pi * a * u * y)
    return sum(kernel[j] * gray[:, :, j:j + out_w] for j in range(win))

  def along_rows(x, u):
    kernel = np.exp(-2j * np.pi * a * u * y)
    return sum(kernel[i] * x[:, i:i + out_h] for i in range(win))

  by_col = {0: along_cols(0), 1: along_cols(1)}
  by_col[-1] = np.conj(by_col[1])  # the image is real
  responses = [along_rows(by_col[uc], ur) for ur, uc in _LPQ_FREQUENCIES]
  return np.stack([part for f in responses for part in (f.real, f.imag)], axis=-1)


def lpq_codes(gray: np.ndarray, *, win: int = 7, decorrelate: bool = True,
              rho: float = 0.9) -> np.ndarray:
  """8-bit LPQ codes: bit k set when coefficient k (after decorrelation) is positive.

  "Positive" means above ``1e-9`` times the image's peak absolute grey level, so that the
  responses of flat windows, zero up to round-off, give bits 0 (code 0) rather than noise.

  Args:
    gray: ``(N, H, W)`` grey images.
    win: odd window side (>= 3).
    decorrelate: apply :func:`lpq_decorrelation` first.
    rho: its pixel correlation.

  Returns:
    int64 ``(N, H - win + 1, W - win + 1)``.
  """
  gray = np.asarray(gray, np.float64)
  g = lpq_coefficients(gray, win=win)
  if decorrelate:
    g = g @ lpq_decorrelation(win, rho)  # row vectors: (V^T g)^T = g^T V
  peak = np.maximum(np.abs(gray).max(axis=(1, 2)), 1.0)
  tolerance = _LPQ_ZERO_TOLERANCE * peak[:, None, None, None]
  return ((g > tolerance).astype(np.int64) << np.arange(8)).sum(axis=-1)


def lpq_features(images, grid: Sequence[int] = (7, 7), *, win: int = 7, decorrelate: bool = True,
                 rho: float = 0.9) -> np.ndarray:
  """Local phase quantisation histograms on a cell grid (Ojansivu & Heikkila, 2008).

  The STFT of each ``win x win`` neighbourhood at four low frequencies (:func:`lpq_filters`),
  optionally decorrelated (the default of the authors' code, with rho = 0.9), quantised by sign
  into an 8-bit code (:func:`lpq_codes`), and counted in 256-bin histograms per cell.

  Args:
    images: ``(N, S, S, 3)`` RGB or ``(N, S, S)`` grey, see :func:`to_gray`.
    grid: cells ``(rows, cols)``.
    win: odd window side M (the STFT frequency is 1 / M).
    decorrelate: whiten the coefficients before quantisation.
    rho: correlation of adjacent pixels in the decorrelation model.

  Returns:
    float64 ``(N, rows * cols * 256)``, each cell's histogram summing to 1.
  """
  if win < 3 or win % 2 == 0:
    raise ValueError(f"LPQ win: expected an odd window side >= 3, got {win}")
  gray = to_gray(images)
  border = (win - 1) // 2
  grid = _check_grid(grid, gray.shape[1:], border, f"LPQ window of {win}")
  return _chunked(lambda g: _grid_histograms(
      lpq_codes(g, win=win, decorrelate=decorrelate, rho=rho), border, gray.shape[1:], grid, 256),
      gray)


# --------------------------------------------------------------------------------------- EOH


def sobel_gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sobel derivatives ``(gx, gy)`` at the centres ``[1, H - 1) x [1, W - 1)``.

  x grows to the right (columns) and y downwards (rows)::

    gx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]    gy = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]

  applied as correlations (no kernel flip).
  """
  f = np.asarray(gray, np.float64)
  smooth_rows = f[:, :-2] + 2 * f[:, 1:-1] + f[:, 2:]  # vertical [1, 2, 1], centres rows 1..H-2
  smooth_cols = f[:, :, :-2] + 2 * f[:, :, 1:-1] + f[:, :, 2:]
  gx = smooth_rows[:, :, 2:] - smooth_rows[:, :, :-2]
  gy = smooth_cols[:, 2:, :] - smooth_cols[:, :-2, :]
  return gx, gy


def eoh_bins(gx: np.ndarray, gy: np.ndarray, bins: int) -> np.ndarray:
  """Orientation bin of each gradient: floor(bins * (atan2(gy, gx) mod pi) / pi), in [0, bins)."""
  theta = np.mod(np.arctan2(gy, gx), np.pi)
  return np.minimum(np.floor(theta * bins / np.pi).astype(np.int64), bins - 1)


def eoh_features(images, grid: Sequence[int] = (7, 7), *, bins: int = 8,
                 threshold: float = 0.0) -> np.ndarray:
  """Edge orientation histograms on a cell grid (after Levi & Weiss, 2004).

  Sobel gradients (:func:`sobel_gradients`); each pixel adds its gradient magnitude
  ``sqrt(gx^2 + gy^2)`` to the bin of its unsigned orientation (:func:`eoh_bins`: ``bins`` equal
  bins over [0, pi), so an edge and its contrast-reversed copy agree), if the magnitude exceeds
  ``threshold``. Each cell's histogram is divided by the cell's total edge energy, which makes it
  independent of contrast; a cell without edges stays zero.

  Args:
    images: ``(N, S, S, 3)`` RGB or ``(N, S, S)`` grey, see :func:`to_gray`.
    grid: cells ``(rows, cols)``.
    bins: orientation bins over [0, pi).
    threshold: magnitudes at or below it are ignored (grey levels per pixel of the Sobel output).

  Returns:
    float64 ``(N, rows * cols * bins)``.
  """
  if bins < 1:
    raise ValueError(f"EOH bins: expected a positive number of orientation bins, got {bins}")
  gray = to_gray(images)
  grid = _check_grid(grid, gray.shape[1:], 1, "Sobel gradient")

  def cells(g):
    gx, gy = sobel_gradients(g)
    magnitude = np.hypot(gx, gy)
    magnitude = np.where(magnitude > threshold, magnitude, 0.0)
    return _grid_histograms(eoh_bins(gx, gy, bins), 1, gray.shape[1:], grid, bins, magnitude)

  return _chunked(cells, gray)


# --------------------------------------------------------------------------------- linear SVM


def fit_linear_svm_and_score(train_features, train_labels, test_features, test_labels, *,
                             c: float = 1.0, standardise: bool = True, max_iter: int = 20000,
                             seed: int = 0) -> dict:
  """Trains a linear SVM on training features and scores it on test features.

  scikit-learn's ``LinearSVC`` (liblinear: one-vs-rest, squared hinge, L2 penalty), not
  ``SVC(kernel='linear')``: liblinear's cost grows linearly with the number of samples where
  libsvm's kernel solver grows about quadratically, and Table 5's training sets are large
  (tens of thousands of faces, thousands of features). The primal or dual problem is picked by
  ``dual='auto'``. With ``standardise`` every feature is scaled to zero mean and unit variance on
  the training set first: histogram bins differ in scale by orders of magnitude (the non-uniform
  and flat-patch bins dominate), and an unscaled SVM would see mostly those.

  Args:
    train_features: ``(N, D)``.
    train_labels: ``(N,)`` integer classes.
    test_features: ``(M, D)``.
    test_labels: ``(M,)``.
    c: the SVM's C.
    standardise: scale features on the training set's statistics.
    max_iter: liblinear's iteration limit.
    seed: liblinear's random state (its coordinate order).

  Returns:
    ``{'accuracy', 'mf1', 'predictions'}``: accuracy and macro-F1 in [0, 1] (M-F1 averages the F1
    of every class seen in the training or test labels; a class never predicted scores 0).
  """
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  from sklearn import pipeline, preprocessing, svm  # pylint: disable=g-import-not-at-top

  x_train, y_train = np.asarray(train_features, np.float64), np.asarray(train_labels)
  x_test, y_test = np.asarray(test_features, np.float64), np.asarray(test_labels)
  for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or not len(y):
      raise ValueError(f"{name}_features / {name}_labels: expected (N, D) features and (N,) "
                       f"labels with N > 0, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
      raise ValueError(f"{name}_features: expected finite values, found NaN or inf")
  if x_train.shape[1] != x_test.shape[1]:
    raise ValueError(f"test_features: expected {x_train.shape[1]} features like train_features, "
                     f"got {x_test.shape[1]}")
  if len(np.unique(y_train)) < 2:
    raise ValueError(f"train_labels: expected at least two classes, got {np.unique(y_train)}")
  steps = [preprocessing.StandardScaler()] if standardise else []
  model = pipeline.make_pipeline(*steps, svm.LinearSVC(C=c, dual="auto", max_iter=max_iter,
                                                       random_state=seed))
  model.fit(x_train, y_train)
  predictions = model.predict(x_test)
  classes = np.unique(np.concatenate([y_train, y_test]))
  return {"accuracy": float(np.mean(predictions == y_test)),
          "mf1": float(sk_metrics.f1_score(y_test, predictions, labels=classes, average="macro",
                                           zero_division=0)),
          "predictions": predictions}
