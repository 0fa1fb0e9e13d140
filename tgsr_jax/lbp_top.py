"""LBP-TOP (local binary patterns on three orthogonal planes) and 85-region multi-scale features.

Conventions (fixed here, used by every function of the module and by the tests):

* A clip is a grayscale volume ``(T, H, W)``; the three planes are its natural 2-D slices:
  XY = ``v[t]`` (rows y, columns x), XT = ``v[:, y, :]`` (rows t, columns x) and
  YT = ``v[:, :, x]`` (rows t, columns y).
* On every plane the p-th of the P neighbours of a centre ``(row, col)`` lies at
  ``(row - R_row sin(2 pi p / P), col + R_col cos(2 pi p / P))``: p = 0 is to the right and the
  neighbours go counter-clockwise as displayed. This is the convention of the classic LBP-TOP code
  of Zhao & Pietikainen (``Y = yc - R sin``, ``X = xc + R cos``) and of scikit-image's
  ``local_binary_pattern``. The radii are ``(R_Y, R_X)`` on XY, ``(R_T, R_X)`` on XT and
  ``(R_T, R_Y)`` on YT. Offsets are first rounded to 5 decimals (as scikit-image does) so that the
  on-axis neighbours are exact integers.
* Neighbour positions are rounded to the nearest pixel (``floor(o + 0.5)``, the classic
  implementation; for P = 8, R = 3 the diagonal neighbours sit at (+-2, +-2)), or, with
  ``interpolation=True``, sampled bilinearly. Bit p of the code is set when the p-th neighbour is
  ``>=`` the centre. Interpolated samples are compared through ``sum_i w_i (I_i - c) >= 0`` so that
  a neighbourhood equal to its centre is a tie exactly, without rounding error.
* Only centres whose whole neighbourhood lies inside the volume are used, the same set for the
  three planes: ``t in [R_T, T - R_T)``, ``y in [R_Y, H - R_Y)``, ``x in [R_X, W - R_X)``.
* Uniform mapping: the P (P - 1) + 2 uniform codes (at most two circular 0/1 transitions) in
  ascending numeric order, then one bin for all non-uniform codes (59 bins for P = 8).
* Multi-scale features: for every region of :mod:`tgsr_jax.layout` (1x1, 2x2, 4x4, 8x8 grids of
  ``block_bounds``) a region's histogram counts the valid centres inside its block; each plane's
  histogram is normalised to sum 1. Per-pixel codes are computed once per plane (in JAX, one
  fused jitted function over the batch), counted per finest block with one ``np.bincount`` of
  ``(clip, plane, block, code)`` keys, and summed up to the coarser scales (the coarse block
  boundaries are a subset of the finest ones).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tgsr_jax import layout as layout_lib

PLANES = layout_lib.PLANES


def _radii(radius: int | Sequence[int]) -> tuple[int, int, int]:
  """Returns ``(R_X, R_Y, R_T)`` from an int or a 3-sequence."""
  if isinstance(radius, (int, np.integer)):
    r = (int(radius),) * 3
  else:
    r = tuple(int(x) for x in radius)
    if len(r) != 3:
      raise ValueError(f"radius must be an int or (R_X, R_Y, R_T), got {radius!r}")
  if min(r) < 1:
    raise ValueError(f"radii must be >= 1, got {r}")
  return r  # type: ignore[return-value]


def neighbour_offsets(radius_row: float, radius_col: float, points: int, *,
                      interpolation: bool = False) -> np.ndarray:
  """Offsets ``(d_row, d_col)`` of the P neighbours on one plane, shape ``(P, 2)``.

  Args:
    radius_row: radius along the plane's row axis.
    radius_col: radius along the plane's column axis.
    points: number of neighbours P.
    interpolation: if False the offsets are rounded to whole pixels (``floor(o + 0.5)``).

  Returns:
    float64 array; ``d_row = -R_row sin(2 pi p / P)``, ``d_col = R_col cos(2 pi p / P)``.
  """
  angle = 2 * np.pi * np.arange(points) / points
  offsets = np.stack([np.round(-radius_row * np.sin(angle), 5),
                      np.round(radius_col * np.cos(angle), 5)], axis=1)
  if not interpolation:
    offsets = np.floor(offsets + 0.5)
  return offsets + 0.0  # no negative zeros


def uniform_mapping(points: int = 8) -> np.ndarray:
  """Bin of every P-bit code: uniform codes in ascending order, then one non-uniform bin.

  Returns:
    int64 array of length ``2**points`` with values in ``[0, points (points - 1) + 2]``.
  """
  codes = np.arange(2 ** points)
  rotated = ((codes << 1) | (codes >> (points - 1))) & (2 ** points - 1)
  transitions = np.array([bin(c).count("1") for c in codes ^ rotated])
  uniform = transitions <= 2
  num_bins = points * (points - 1) + 3
  mapping = np.full(2 ** points, num_bins - 1, dtype=np.int64)
  mapping[uniform] = np.arange(int(uniform.sum()))
  assert uniform.sum() == num_bins - 1
  return mapping


def num_bins(points: int = 8) -> int:
  """Number of uniform-LBP bins for P points (59 for P = 8)."""
  return points * (points - 1) + 3


def _plane_radii(radius: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
  rx, ry, rt = radius
  return ((ry, rx), (rt, rx), (rt, ry))  # XY, XT, YT as (row, col)


@functools.partial(jax.jit, static_argnames=("radius", "points", "interpolation"))
def _codes(volume: jax.Array, *, radius: tuple[int, int, int], points: int,
           interpolation: bool) -> jax.Array:
  rx, ry, rt = radius
  t_len, h, w = volume.shape[-3:]
  margins = (rt, ry, rx)
  ends = (t_len - rt, h - ry, w - rx)

  def window(dt: int, dy: int, dx: int) -> jax.Array:
    idx = tuple(slice(m + d, e + d) for m, e, d in zip(margins, ends, (dt, dy, dx)))
    return volume[(Ellipsis,) + idx]

  centre = window(0, 0, 0)
  # Axes (t, y, x) that a plane's (row, col) offsets move along.
  plane_axes = ((1, 2), (0, 2), (0, 1))
  code_dtype = jnp.uint8 if points <= 8 else jnp.int32
  if interpolation:
    centre_f = centre.astype(jnp.float32)
  out = []
  for (r_row, r_col), axes in zip(_plane_radii(radius), plane_axes):
    offsets = neighbour_offsets(r_row, r_col, points, interpolation=interpolation)
    code = jnp.zeros(centre.shape, code_dtype)
    for p, (d_row, d_col) in enumerate(offsets):
      if interpolation:
        r0, c0 = int(np.floor(d_row)), int(np.floor(d_col))
        fr, fc = d_row - r0, d_col - c0
        diff = jnp.zeros(centre.shape, jnp.float32)
        for dr, wr in ((0, 1 - fr), (1, fr)):
          for dc, wc in ((0, 1 - fc), (1, fc)):
            weight = wr * wc
            if weight == 0:
              continue
            shift = [0, 0, 0]
            shift[axes[0]] = r0 + dr
            shift[axes[1]] = c0 + dc
            diff = diff + np.float32(weight) * (window(*shift).astype(jnp.float32) - centre_f)
        bit = diff >= 0
      else:
        shift = [0, 0, 0]
        shift[axes[0]] = int(d_row)
        shift[axes[1]] = int(d_col)
        bit = window(*shift) >= centre
      code = code | (bit.astype(code_dtype) << p)
    out.append(code)
  return jnp.stack(out, axis=-4)


def lbp_top_codes(volume, *, radius: int | Sequence[int] = 3, points: int = 8,
                  interpolation: bool = False) -> jax.Array:
  """Raw P-bit LBP codes of every valid centre on the XY, XT and YT planes.

  Args:
    volume: grayscale clip ``(..., T, H, W)`` (any real dtype; uint8 is fastest).
    radius: ``R`` for all three axes or ``(R_X, R_Y, R_T)``.
    points: neighbours per plane P (<= 8 gives uint8 codes, more gives int32).
    interpolation: bilinear neighbour sampling instead of rounded positions.

  Returns:
    codes ``(..., 3, T - 2 R_T, H - 2 R_Y, W - 2 R_X)`` with planes ordered XY, XT, YT; the
    centre ``[t, y, x]`` of the output is voxel ``[t + R_T, y + R_Y, x + R_X]`` of the volume.
  """
  r = _radii(radius)
  volume = jnp.asarray(volume)
  if volume.ndim < 3:
    raise ValueError(f"volume must be (..., T, H, W), got shape {volume.shape}")
  t_len, h, w = volume.shape[-3:]
  if t_len <= 2 * r[2] or h <= 2 * r[1] or w <= 2 * r[0]:
    raise ValueError(f"volume of shape {volume.shape} has no centre whose neighbourhood of "
                     f"radii (R_X, R_Y, R_T) = {r} fits inside it")
  return _codes(volume, radius=r, points=int(points), interpolation=bool(interpolation))


@functools.lru_cache(maxsize=16)
def _histogram_plan(shape: tuple[int, int, int], radius: tuple[int, int, int], points: int,
                    scales: tuple[int, ...]):
  """Precomputed keys and block maps for one clip shape (cached)."""
  t_len, h, w = shape
  rx, ry, rt = radius
  finest = max(scales)
  fine_rows = layout_lib.block_bounds(h, finest)
  fine_cols = layout_lib.block_bounds(w, finest)
  for s in scales:
    if not (set(layout_lib.block_bounds(h, s)) <= set(fine_rows)
            and set(layout_lib.block_bounds(w, s)) <= set(fine_cols)):
      raise ValueError(f"scale {s} blocks are not unions of the finest {finest}x{finest} blocks "
                       f"for a {h}x{w} frame")
  ys = np.arange(ry, h - ry)
  xs = np.arange(rx, w - rx)
  by = np.searchsorted(fine_rows, ys, side="right") - 1
  bx = np.searchsorted(fine_cols, xs, side="right") - 1
  block = by[:, None] * finest + bx[None, :]
  code_space = 2 ** points
  nf = finest * finest
  # key = ((plane * nf) + block) * code_space, broadcast over t.
  plane_key = (np.arange(3)[:, None, None, None] * nf + block[None, None]) * code_space
  plane_key = np.broadcast_to(plane_key, (3, t_len - 2 * rt) + block.shape)
  plane_key = np.ascontiguousarray(plane_key, dtype=np.int64)
  # fine block (row, col) -> coarse block for every scale.
  membership = []
  for s in scales:
    rows_s = layout_lib.block_bounds(h, s)
    cols_s = layout_lib.block_bounds(w, s)
    fr = np.searchsorted(rows_s, fine_rows[:-1], side="right") - 1
    fc = np.searchsorted(cols_s, fine_cols[:-1], side="right") - 1
    coarse = (fr[:, None] * s + fc[None, :]).reshape(-1)
    m = np.zeros((nf, s * s))
    m[np.arange(nf), coarse] = 1.0
    membership.append(m)
  membership = np.concatenate(membership, axis=1)  # (nf, R)
  mapping = uniform_mapping(points)
  to_bins = np.zeros((code_space, num_bins(points)))
  to_bins[np.arange(code_space), mapping] = 1.0
  return plane_key, nf, membership, to_bins


def _region_histograms(codes: np.ndarray, shape: tuple[int, int, int],
                       radius: tuple[int, int, int], points: int,
                       scales: tuple[int, ...]) -> np.ndarray:
  """Counts codes ``(N, 3, T', H', W')`` into normalised histograms ``(N, R, 3, bins)``."""
  plane_key, nf, membership, to_bins = _histogram_plan(shape, radius, points, scales)
  n = codes.shape[0]
  per_clip = 3 * nf * 2 ** points
  keys = codes.astype(np.int64) + plane_key
  keys += (np.arange(n, dtype=np.int64) * per_clip)[:, None, None, None, None]
  counts = np.bincount(keys.reshape(-1), minlength=n * per_clip).astype(np.float64)
  counts = counts.reshape(n, 3, nf, 2 ** points) @ to_bins  # (N, 3, nf, bins)
  region_counts = np.einsum("npfb,fr->nrpb", counts, membership)
  totals = region_counts.sum(-1, keepdims=True)
  if np.any(totals == 0):
    raise ValueError(f"a clip of shape {shape} leaves a region with no valid LBP-TOP centre; "
                     "use larger frames or fewer scales")
  return region_counts / totals


def lbp_top_features_batch(clips, *, layout: str = "region_major",
                           interpolation: bool = False, radius: int | Sequence[int] = 3,
                           points: int = 8, scales: tuple[int, ...] = layout_lib.SCALES,
                           batch_size: int = 32) -> np.ndarray:
  """Multi-scale LBP-TOP features of a batch of grayscale clips.

  Args:
    clips: ``(N, T, H, W)`` array (uint8 is fastest; any real dtype works).
    layout: ``'region_major'`` (region r = columns ``[177 r, 177 (r + 1))`` as
      ``[XY | XT | YT]``) or ``'benchmark'`` (the CDMER files' plane-major order inside scales).
    interpolation: bilinear neighbour sampling instead of rounded positions.
    radius: ``R`` or ``(R_X, R_Y, R_T)``.
    points: neighbours per plane P.
    scales: grids of the regions (the default gives 85 regions).
    batch_size: clips per jitted call (bounds the memory of the per-pixel codes).

  Returns:
    float64 ``(N, R * 3 * bins)``; 15045 columns for the defaults, every histogram sums to 1.
  """
  if layout not in ("region_major", "benchmark"):
    raise ValueError(f"layout must be 'region_major' or 'benchmark', got {layout!r}")
  clips = np.asarray(clips)
  if clips.ndim != 4:
    raise ValueError(f"clips must be (N, T, H, W), got shape {clips.shape}")
  r = _radii(radius)
  shape = tuple(int(x) for x in clips.shape[1:])
  outs = []
  for start in range(0, clips.shape[0], batch_size):
    chunk = clips[start:start + batch_size]
    codes = np.asarray(lbp_top_codes(chunk, radius=r, points=points,
                                     interpolation=interpolation))
    hists = _region_histograms(codes, shape, r, points, tuple(scales))
    outs.append(hists.reshape(hists.shape[0], -1))
  feats = (np.concatenate(outs, axis=0) if outs
           else np.zeros((0, layout_lib.num_regions(scales) * 3 * num_bins(points))))
  if layout == "benchmark":
    feats = feats[:, layout_lib.region_major_to_benchmark(tuple(scales), num_bins(points))]
  return feats


def lbp_top_features(clip, *, layout: str = "region_major", interpolation: bool = False,
                     radius: int | Sequence[int] = 3, points: int = 8,
                     scales: tuple[int, ...] = layout_lib.SCALES) -> np.ndarray:
  """The 15045 multi-scale LBP-TOP features of one grayscale ``(T, H, W)`` clip.

  See :func:`lbp_top_features_batch` for the arguments.

  Returns:
    float64 ``(R * 3 * bins,)``.
  """
  clip = np.asarray(clip)
  if clip.ndim != 3:
    raise ValueError(f"clip must be a grayscale (T, H, W) volume, got shape {clip.shape}")
  return lbp_top_features_batch(clip[None], layout=layout, interpolation=interpolation,
                                radius=radius, points=points, scales=scales)[0]


def lbp_top_loop(volume: np.ndarray, *, radius: int | Sequence[int] = 3, points: int = 8,
                 interpolation: bool = False) -> np.ndarray:
  """Per-pixel loop port of the classic LBP-TOP code (the slow reference for tests/benchmarks).

  Returns:
    int64 codes ``(3, T - 2 R_T, H - 2 R_Y, W - 2 R_X)``, as :func:`lbp_top_codes`.
  """
  rx, ry, rt = _radii(radius)
  v = np.asarray(volume, dtype=np.float64)
  t_len, h, w = v.shape
  offs = [neighbour_offsets(a, b, points, interpolation=interpolation)
          for a, b in _plane_radii((rx, ry, rt))]

  def sample(plane_img_get, row, col):
    r0, c0 = int(np.floor(row)), int(np.floor(col))
    fr, fc = row - r0, col - c0
    return [((1 - fr) * (1 - fc), plane_img_get(r0, c0)),
            ((1 - fr) * fc, plane_img_get(r0, c0 + 1) if fc else 0.0),
            (fr * (1 - fc), plane_img_get(r0 + 1, c0) if fr else 0.0),
            (fr * fc, plane_img_get(r0 + 1, c0 + 1) if fr and fc else 0.0)]

  out = np.zeros((3, t_len - 2 * rt, h - 2 * ry, w - 2 * rx), dtype=np.int64)
  for t in range(rt, t_len - rt):
    for y in range(ry, h - ry):
      for x in range(rx, w - rx):
        c = v[t, y, x]
        getters = (lambda a, b: v[t, a, b], lambda a, b: v[a, y, b], lambda a, b: v[a, b, x])
        centres = ((y, x), (t, x), (t, y))
        for plane in range(3):
          code = 0
          for p, (dr, dc) in enumerate(offs[plane]):
            row, col = centres[plane][0] + dr, centres[plane][1] + dc
            diff = sum(wt * (val - c) for wt, val in sample(getters[plane], row, col) if wt)
            if diff >= 0:
              code |= 1 << p
          out[plane, t - rt, y - ry, x - rx] = code
  return out
