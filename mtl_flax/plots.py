"""Notebook figures of the multi-task runs: data grids, landmarks, training curves, Fig. 3.

Every function returns a ``matplotlib.figure.Figure`` with the Agg canvas, never registered with
pyplot: matplotlib is imported only when a figure is drawn and a notebook's backend is left as
it is (a notebook displays the returned figure; ``fig.savefig(path)`` writes it).
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from mtl_flax import evaluate as evaluate_lib


def _figure(figsize: tuple[float, float]):
  """A pyplot-free figure with an Agg canvas."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (lazy)
  from matplotlib.figure import Figure  # noqa: PLC0415

  fig = Figure(figsize=figsize, layout="constrained")  # titles and labels never overlap
  FigureCanvasAgg(fig)
  return fig


def _check_images(images, name: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{name} must have shape (N, H, W, 3), got {images.shape}")
  return images


def image_grid_figure(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                      per_class: int = 4, title: str = ""):
  """The first ``per_class`` images of every class, one row per class present.

  Args:
    images: (N, H, W, 3) uint8 RGB.
    labels: (N,) class indices into ``class_names``.
    class_names: the name of every class index.
    per_class: images shown per class (columns).
    title: figure title.

  Returns:
    A ``matplotlib.figure.Figure``.
  """
  images = _check_images(images, "images")
  labels = np.asarray(labels)
  if labels.shape != images.shape[:1]:
    raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
  classes = [c for c in np.unique(labels)]
  if any(not 0 <= c < len(class_names) for c in classes):
    raise ValueError(f"labels must be indices into the {len(class_names)} class names, got "
                     f"values in [{labels.min()}, {labels.max()}]")
  fig = _figure((1.3 * per_class + 1.6, 1.3 * len(classes) + 0.4))
  axes = np.asarray(fig.subplots(len(classes), per_class, squeeze=False))
  for row, c in zip(axes, classes):
    members = np.flatnonzero(labels == c)[:per_class]
    for j, ax in enumerate(row):
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_frame_on(False)
      if j < members.size:
        ax.imshow(images[members[j]])
    row[0].set_ylabel(str(class_names[c]), rotation=0, ha="right", va="center", fontsize=8)
  if title:
    fig.suptitle(title)
  return fig


def _pixels(points: np.ndarray, size: int) -> np.ndarray:
  """(N, 68, 2) or (N, 136) landmarks normalised as (pixel + 0.5) / S -> pixel coordinates."""
  points = np.asarray(points, np.float64)
  return points.reshape(points.shape[0], -1, 2) * size - 0.5


def landmarks_figure(images: np.ndarray, landmarks: np.ndarray, predicted: np.ndarray | None = None,
                     *, columns: int = 4, title: str = ""):
  """Faces with their landmarks drawn (green), and predicted landmarks (red) when given.

  Args:
    images: (N, S, S, 3) uint8 RGB.
    landmarks: (N, 68, 2) or (N, 136) true landmarks ``(x, y)`` normalised as
      ``(pixel + 0.5) / S`` (as :func:`mtl_flax.data.synthetic.make_landmark_dataset`).
    predicted: optional predictions in the same layout.
    columns: faces per row.
    title: figure title.

  Returns:
    A ``matplotlib.figure.Figure``.
  """
  images = _check_images(images, "images")
  size = images.shape[1]
  true = _pixels(landmarks, size)
  if true.shape[0] != images.shape[0]:
    raise ValueError(f"landmarks hold {true.shape[0]} faces, images {images.shape[0]}")
  pred = None if predicted is None else _pixels(predicted, size)
  if pred is not None and pred.shape != true.shape:
    raise ValueError(f"predicted landmarks have shape {pred.shape} (as points), expected "
                     f"{true.shape}")
  rows = -(-images.shape[0] // columns)
  fig = _figure((2.0 * columns, 2.0 * rows + 0.3))
  axes = np.asarray(fig.subplots(rows, columns, squeeze=False)).reshape(-1)
  for i, ax in enumerate(axes):
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)
    if i >= images.shape[0]:
      continue
    ax.imshow(images[i])
    ax.scatter(true[i, :, 0], true[i, :, 1], s=3, c="lime", label="true")
    if pred is not None:
      ax.scatter(pred[i, :, 0], pred[i, :, 1], s=3, c="red", label="predicted")
  if pred is not None:
    axes[0].legend(fontsize=6, loc="lower left", markerscale=2)
  if title:
    fig.suptitle(title)
  return fig


def read_metrics(path: str | os.PathLike) -> list[dict]:
  """The records of a run's ``metrics.jsonl`` (one JSON object per line).

  Raises:
    FileNotFoundError: naming the path when it does not exist.
    ValueError: naming the file and line when a line is not a JSON object.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no metrics file (expected WORKDIR/metrics.jsonl of a run)")
  records = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
    if not isinstance(record, dict) or "step" not in record:
      raise ValueError(f"{path}:{number}: expected a JSON object with a 'step' field")
    records.append(record)
  return records


def metric_series(records: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)`` of one metric over the records that hold it, in step order."""
  pairs = sorted((int(r["step"]), float(r[key])) for r in records if key in r)
  steps = np.asarray([p[0] for p in pairs], np.int64)
  return steps, np.asarray([p[1] for p in pairs], np.float64)


def curves_figure(records: Sequence[Mapping], panels: Mapping[str, Sequence[str]], *,
                  title: str = ""):
  """Training curves: one axes per panel, one line per metric key (the records' ``step`` axis).

  Args:
    records: as :func:`read_metrics` returns.
    panels: axes title -> metric keys, e.g. ``{'loss': ['train/loss']}``; a key no record holds
      is left out of its axes.
    title: figure title.

  Returns:
    A ``matplotlib.figure.Figure``.

  Raises:
    ValueError: if no record holds any of the keys of a panel (naming the keys present).
  """
  present = sorted({k for r in records for k in r if k != "step"})
  fig = _figure((4.2 * len(panels), 3.2))
  axes = np.asarray(fig.subplots(1, len(panels), squeeze=False))[0]
  for ax, (name, keys) in zip(axes, panels.items()):
    drawn = 0
    for key in keys:
      steps, values = metric_series(records, key)
      if steps.size:
        ax.plot(steps, values, "o-", ms=3, label=key)
        drawn += 1
    if not drawn:
      raise ValueError(f"panel {name!r}: no record holds {list(keys)}; present: {present}")
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return fig


def decrease_rates_figure(rates: Mapping[str, Mapping[str, float]]):
  """Fig. 3a-b: per-layer decrease rate (optimised / initial trace norm) of each regulariser.

  Args:
    rates: legend label (e.g. 'LAF') -> {layer name: rate}, layers in forward order (as
      ``summary.json['decrease_rates']``).

  Returns:
    A ``matplotlib.figure.Figure``.
  """
  if not rates:
    raise ValueError("rates: expected at least one regulariser -> {layer: rate}")
  layers = list(next(iter(rates.values())))
  fig = _figure((max(6.0, 0.25 * len(layers)), 3.5))
  ax = fig.subplots()
  for label, per_layer in rates.items():
    ax.plot(range(len(layers)), [per_layer[k] for k in layers], marker="o", label=label)
  ax.axhline(1.0, color="grey", lw=0.8, ls="--")
  ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
  ax.set_ylabel("decrease rate (optimised / initial)")
  ax.set_xlabel("layer")
  ax.legend()
  return fig


def embeddings_figure(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                      labels: tuple[str, str] = ("dataset A", "dataset B"), method: str = "pca",
                      seed: int = 0):
  """Fig. 3c: both datasets' features embedded jointly in 2-D, one panel per run.

  Args:
    panels: panel title (e.g. 'without ADA') -> (features_a (N, D), features_b (M, D)).
    labels: legend names of the two datasets.
    method: 'pca' or 'tsne' (:func:`mtl_flax.evaluate.embed_2d`).
    seed: t-SNE seed.

  Returns:
    A ``matplotlib.figure.Figure``.
  """
  fig = _figure((4.2 * len(panels), 4.0))
  axes = np.asarray(fig.subplots(1, len(panels), squeeze=False))[0]
  for ax, (name, (fa, fb)) in zip(axes, panels.items()):
    joint = evaluate_lib.embed_2d(np.concatenate([fa, fb]), method=method, seed=seed)
    ax.scatter(*joint[:len(fa)].T, s=8, alpha=0.7, label=labels[0])
    ax.scatter(*joint[len(fa):].T, s=8, alpha=0.7, label=labels[1])
    separability = evaluate_lib.domain_separability(fa, fb)
    ax.set_title(f"{name} (separability {separability:.2f})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7)
  return fig
