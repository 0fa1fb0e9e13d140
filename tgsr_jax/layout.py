"""The 85-region multi-scale LBP-TOP feature layout and its column permutations.

A face volume is divided into 1x1, 2x2, 4x4 and 8x8 grids of blocks (85 regions, coarse to fine;
inside a scale, blocks are numbered row-major: block = row * s + col, row 0 at the top). Every
region contributes three 59-bin uniform-LBP histograms, one per plane (XY, XT, YT): 85 x 177 =
15045 features.

Two column orders exist:

* **region-major** (this project's extraction order): region r occupies columns
  ``[177 r, 177 (r + 1))`` as ``[XY | XT | YT]``. Consecutive 177-column chunks are facial regions.
* **benchmark** (the CDMER benchmark's files): inside each scale, plane-major: the XY histograms
  of all blocks of the scale, then all XT, then all YT. Only the 1x1 chunk is a facial region.

Block numbering inside a scale is row-major; this was inferred from the real SMIC features, where
left-right mirror blocks of the face (same row) have the most similar mean histograms.
"""
from __future__ import annotations

import numpy as np

SCALES: tuple[int, ...] = (1, 2, 4, 8)
PLANES: tuple[str, ...] = ("XY", "XT", "YT")
NUM_BINS = 59
REGION_DIM = NUM_BINS * len(PLANES)  # 177


def num_regions(scales: tuple[int, ...] = SCALES) -> int:
  """Number of regions of a multi-scale grid (85 for the default scales)."""
  return int(sum(s * s for s in scales))


def region_table(scales: tuple[int, ...] = SCALES) -> np.ndarray:
  """Returns an int array (R, 4) of rows ``(scale, row, col, block)`` for every region in order."""
  rows = []
  for s in scales:
    for b in range(s * s):
      rows.append((s, b // s, b % s, b))
  return np.asarray(rows, dtype=np.int64)


def block_bounds(size: int, s: int) -> np.ndarray:
  """Pixel boundaries of ``s`` blocks along an axis of ``size`` pixels: ``floor(i * size / s)``."""
  return (np.arange(s + 1) * size) // s


def benchmark_to_region_major(scales: tuple[int, ...] = SCALES,
                              num_bins: int = NUM_BINS) -> np.ndarray:
  """Column permutation from the benchmark layout to the region-major layout.

  Returns:
    ``perm`` of length ``R * 3 * num_bins`` such that ``x_region = x_benchmark[..., perm]``.
  """
  perm = []
  offset = 0
  for s in scales:
    nb = s * s
    for b in range(nb):
      for p in range(len(PLANES)):
        start = offset + (p * nb + b) * num_bins
        perm.extend(range(start, start + num_bins))
    offset += nb * len(PLANES) * num_bins
  return np.asarray(perm, dtype=np.int64)


def region_major_to_benchmark(scales: tuple[int, ...] = SCALES,
                              num_bins: int = NUM_BINS) -> np.ndarray:
  """Inverse of :func:`benchmark_to_region_major`: ``x_benchmark = x_region[..., perm]``."""
  return np.argsort(benchmark_to_region_major(scales, num_bins))


def contiguous_groups(num_features: int, num_groups: int) -> np.ndarray:
  """Group id of every column when the columns form ``num_groups`` consecutive equal chunks.

  This is the grouping of the TGSR authors' code (85 chunks of 177 columns).

  Raises:
    ValueError: if ``num_features`` is not a multiple of ``num_groups``.
  """
  if num_groups <= 0 or num_features % num_groups:
    raise ValueError(
        f"feature width {num_features} is not a multiple of the number of groups {num_groups}")
  return np.repeat(np.arange(num_groups), num_features // num_groups)


def benchmark_region_groups(scales: tuple[int, ...] = SCALES,
                            num_bins: int = NUM_BINS) -> np.ndarray:
  """Facial-region id (0..R-1, in :func:`region_table` order) of every benchmark-layout column."""
  groups_region_major = np.repeat(np.arange(num_regions(scales)), len(PLANES) * num_bins)
  return groups_region_major[region_major_to_benchmark(scales, num_bins)]
