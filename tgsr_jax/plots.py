"""Figures of the TGSR paper: selected regions (Fig. 2) and parameter sensitivity (Figs. 3-4).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot: matplotlib is imported only when a figure is drawn, and the backend of a running
notebook (or any other pyplot state) is left as it is. ``plot_*`` write a PNG (the CLI's
outputs); ``*_figure`` return the figure (what a notebook displays): the selected regions of
several fits side by side, the sensitivity curves, a sweep's (kappa, xi) heat map and a
confusion matrix.
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

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


def _draw_regions(axes, selected: np.ndarray, weights: np.ndarray | None) -> None:
  """Draws the selected regions on one row of face-grid axes (one per scale)."""
  table = layout.region_table()
  selected = np.asarray(selected, bool)
  if selected.shape != (table.shape[0],):
    raise ValueError(f"selected must have shape ({table.shape[0]},), got {selected.shape}")
  shade = np.ones(table.shape[0]) if weights is None else np.asarray(weights, np.float64)
  shade = shade / max(shade[selected].max() if selected.any() else 1.0, 1e-12)
  from matplotlib.patches import Circle  # noqa: PLC0415  (lazy)

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


def selected_regions_figure(panels: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]], *,
                            note: str = ""):
  """Selected regions of several fits on the face grids, one row per fit (Fig. 2, side by side).

  Args:
    panels: row label -> ``selected`` ((85,) bool in :func:`tgsr_jax.layout.region_table`
      order) or ``(selected, weights)`` with (85,) group norms shading the selected cells.
    note: a line printed under the rows.

  Returns:
    A ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot).
  """
  if not panels:
    raise ValueError("panels: expected at least one row label -> selected regions")
  fig = _figure((3.0 * len(layout.SCALES), 3.3 * len(panels)))
  axes = np.asarray(fig.subplots(len(panels), len(layout.SCALES), squeeze=False))
  for row, (label, value) in zip(axes, panels.items()):
    selected, weights = value if isinstance(value, tuple) else (value, None)
    _draw_regions(row, selected, weights)
    row[0].set_ylabel(label)
  if note:
    fig.text(0.5, 0.0, note, ha="center", fontsize=8)
  return fig


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
  fig = _figure((3.0 * len(layout.SCALES), 3.3))
  axes = fig.subplots(1, len(layout.SCALES))
  _draw_regions(axes, selected, weights)
  fig.suptitle(title)
  if note:
    fig.text(0.5, -0.02, note, ha="center", fontsize=8)
  return _save(fig, path)


def sensitivity_figure(x: np.ndarray, mf1: np.ndarray, acc: np.ndarray, *, xlabel: str,
                       title: str = "", log_x: bool = False):
  """M-F1 and ACC against one hyper-parameter with the other fixed (as Figs. 3-4).

  Returns:
    A ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot).
  """
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
  return fig


def plot_sensitivity(x: np.ndarray, mf1: np.ndarray, acc: np.ndarray, path: str | os.PathLike, *,
                     xlabel: str, title: str = "", log_x: bool = False) -> pathlib.Path:
  """Writes :func:`sensitivity_figure` to the PNG ``path`` (atomically); returns the path."""
  return _save(sensitivity_figure(x, mf1, acc, xlabel=xlabel, title=title, log_x=log_x), path)


def sweep_grid(result, metric: str = "mf1") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A sweep's scores as a (kappa, xi) table.

  Args:
    result: a :class:`tgsr_jax.sweep.SweepResult` of a full grid (every kappa with every xi).
    metric: the field to tabulate ('mf1', 'acc', 'uar', 'iterations').

  Returns:
    ``(kappas (K,), xis (X,), table (K, X))``, both axes sorted ascending.

  Raises:
    ValueError: if ``metric`` is not a field of the result or the grid is not a full product.
  """
  if metric not in ("mf1", "acc", "uar", "iterations"):
    raise ValueError(f"metric must be 'mf1', 'acc', 'uar' or 'iterations', got {metric!r}")
  kappa = np.asarray(result.kappa)
  xi = np.asarray(result.xi)
  values = np.asarray(getattr(result, metric), np.float64)
  kappas, xis = np.unique(kappa), np.unique(xi)
  table = np.full((kappas.size, xis.size), np.nan)
  table[np.searchsorted(kappas, kappa), np.searchsorted(xis, xi)] = values
  if np.isnan(table).any() or kappas.size * xis.size != kappa.size:
    raise ValueError(f"result: expected a full kappa x xi grid, got {kappa.size} points for "
                     f"{kappas.size} kappas x {xis.size} xis")
  return kappas, xis, table


def sweep_heatmap_figure(result, metric: str = "mf1", *, title: str = ""):
  """A heat map of one score over the (kappa, xi) grid of a sweep, the best point marked.

  Args:
    result: a :class:`tgsr_jax.sweep.SweepResult` of a full grid.
    metric: 'mf1' (default), 'acc', 'uar' or 'iterations'.
    title: axes title.

  Returns:
    A ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot).
  """
  kappas, xis, table = sweep_grid(result, metric)
  fig = _figure((1.2 + 0.75 * xis.size, 1.0 + 0.42 * kappas.size))
  ax = fig.subplots()
  scores = metric != "iterations"
  image = ax.imshow(table, cmap="viridis", aspect="auto", origin="lower",
                    vmin=0.0 if scores else None, vmax=1.0 if scores else None)
  fig.colorbar(image, ax=ax, label=metric.upper() if scores else metric)
  ax.set_xticks(range(xis.size), [f"{x:g}" for x in xis], rotation=45)
  ax.set_yticks(range(kappas.size), [str(int(k)) for k in kappas])
  ax.set_xlabel("xi")
  ax.set_ylabel("kappa")
  if scores:
    row, col = np.unravel_index(np.nanargmax(table), table.shape)
    ax.plot(col, row, marker="*", ms=14, color="red", ls="none", label="best")
    ax.legend(loc="upper right", fontsize=7)
  ax.set_title(title or f"{metric.upper()} over the (kappa, xi) grid")
  return fig


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], *, title: str = ""):
  """A confusion matrix (rows: true class, columns: predicted), counts written in the cells.

  Args:
    confusion: (C, C) counts.
    class_names: the C class names.
    title: axes title.

  Returns:
    A ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot).
  """
  confusion = np.asarray(confusion)
  c = len(class_names)
  if confusion.shape != (c, c):
    raise ValueError(f"confusion must have shape ({c}, {c}) for {c} class names, got "
                     f"{confusion.shape}")
  fig = _figure((1.6 + 0.9 * c, 1.2 + 0.8 * c))
  ax = fig.subplots()
  ax.imshow(confusion, cmap="Blues", vmin=0)
  top = confusion.max() if confusion.size else 0
  for (i, j), value in np.ndenumerate(confusion):
    ax.text(j, i, f"{value:g}", ha="center", va="center",
            color="white" if value > 0.5 * top else "black")
  ax.set_xticks(range(c), class_names, rotation=30)
  ax.set_yticks(range(c), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  return fig
