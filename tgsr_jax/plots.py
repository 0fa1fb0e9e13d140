"""Figures of the TGSR paper: selected regions (Fig. 2) and parameter sensitivity (Figs. 3-4).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot: matplotlib is imported only when a figure is drawn, and the backend of a running
notebook (or any other pyplot state) is left as it is.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from subtle_core import atomic
from tgsr_jax import layout


def _figure(figsize: tuple[float, float]):
  """A pyplot-free figure with an Agg canvas."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (lazy)
  from matplotlib.figure import Figure  # noqa: PLC0415

  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str | os.PathLike) -> pathlib.Path:
  with atomic.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
  return pathlib.Path(path)


def plot_selected_regions(selected: np.ndarray, path: str | os.PathLike, *, title: str = "",
                          weights: np.ndarray | None = None, note: str = "") -> pathlib.Path:
  """Draws the selected regions on the 1x1 / 2x2 / 4x4 / 8x8 face grids (as Fig. 2).

  Args:
    selected: (85,) bool, region i in :func:`tgsr_jax.layout.region_table` order.
    path: PNG to write (atomically).
    title: figure title.
    weights: optional (85,) group norms, shown as the cell shade of selected regions.
    note: a line printed under the panels (e.g. that groups are benchmark chunks).

  Returns:
    The path written.
  """
  table = layout.region_table()
  selected = np.asarray(selected, bool)
  if selected.shape != (table.shape[0],):
    raise ValueError(f"selected must have shape ({table.shape[0]},), got {selected.shape}")
  shade = np.ones(table.shape[0]) if weights is None else np.asarray(weights, np.float64)
  shade = shade / max(shade[selected].max() if selected.any() else 1.0, 1e-12)
  from matplotlib.patches import Circle  # noqa: PLC0415  (lazy)

  fig = _figure((3.0 * len(layout.SCALES), 3.3))
  axes = fig.subplots(1, len(layout.SCALES))
  for ax, s in zip(axes, layout.SCALES):
    grid = np.zeros((s, s))
    for i in np.flatnonzero(table[:, 0] == s):
      _, row, col, _ = table[i]
      grid[row, col] = shade[i] if selected[i] else 0.0
    ax.imshow(grid, cmap="Reds", vmin=0.0, vmax=1.0, extent=(0, s, s, 0))
    for k in range(s + 1):
      ax.axhline(k, color="0.4", lw=0.6)
      ax.axvline(k, color="0.4", lw=0.6)
    # A face sketch for orientation: eyes, nose, mouth in face-box coordinates.
    f = float(s)
    ax.add_patch(Circle((0.32 * f, 0.38 * f), 0.07 * f, fill=False, color="0.2", lw=1))
    ax.add_patch(Circle((0.68 * f, 0.38 * f), 0.07 * f, fill=False, color="0.2", lw=1))
    ax.plot([0.5 * f, 0.46 * f, 0.54 * f], [0.45 * f, 0.62 * f, 0.62 * f], color="0.2", lw=1)
    ax.plot([0.36 * f, 0.5 * f, 0.64 * f], [0.78 * f, 0.81 * f, 0.78 * f], color="0.2", lw=1)
    ax.set_xticks([])
    ax.set_yticks([])
    chosen = int(selected[table[:, 0] == s].sum())
    ax.set_title(f"{s}x{s}: {chosen} selected")
  fig.suptitle(title)
  if note:
    fig.text(0.5, -0.02, note, ha="center", fontsize=8)
  return _save(fig, path)


def plot_sensitivity(x: np.ndarray, mf1: np.ndarray, acc: np.ndarray, path: str | os.PathLike, *,
                     xlabel: str, title: str = "", log_x: bool = False) -> pathlib.Path:
  """M-F1 and ACC against one hyper-parameter with the other fixed (as Figs. 3-4)."""
  order = np.argsort(x)
  fig = _figure((5.5, 3.5))
  ax = fig.subplots()
  ax.plot(np.asarray(x)[order], np.asarray(mf1)[order], "o-", ms=3, label="M-F1")
  ax.plot(np.asarray(x)[order], np.asarray(acc)[order], "s-", ms=3, label="ACC")
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylim(0.0, 1.0)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title(title)
  return _save(fig, path)
