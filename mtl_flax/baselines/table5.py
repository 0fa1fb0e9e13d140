"""Table 5: hand-crafted baselines (LBP, LPQ, EOH + linear SVM) beside the networks' rows.

:func:`run_handcrafted_baselines` extracts every method's features from the training and test
faces and scores a linear SVM (:func:`mtl_flax.baselines.handcrafted.fit_linear_svm_and_score`);
it returns :class:`Table5Row` records. The caller appends the CNN / MTL rows (accuracy from their
``summary.json``; M-F1 and feature size may be None), combines the rows of several seeds with
:func:`aggregate_over_seeds` (mean +- sample standard deviation) and formats or writes the table,
titled, with :func:`format_table5` / :func:`write_table5` (markdown, CSV, LaTeX).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from mtl_flax.baselines import handcrafted
from subtle_core import atomic

METHODS = ("lbp", "lpq", "eoh")
METHOD_NAMES = {"lbp": "LBP + linear SVM", "lpq": "LPQ + linear SVM", "eoh": "EOH + linear SVM"}
DEFAULT_GRID = (7, 7)
# Each method's descriptor options (keyword arguments of its function in `handcrafted`).
DEFAULT_OPTIONS = {
    "lbp": {"points": 8, "radius": 1.0},
    "lpq": {"win": 7, "decorrelate": True, "rho": 0.9},
    "eoh": {"bins": 8, "threshold": 0.0},
}
FORMATS = ("markdown", "csv", "latex")
_EXTENSIONS = {"markdown": "md", "csv": "csv", "latex": "tex"}
_COLUMNS = ("method", "accuracy", "mf1", "feature_dim", "settings", "accuracy_std", "mf1_std",
            "num_seeds")


@dataclasses.dataclass(frozen=True)
class Table5Row:
  """One row of Table 5.

  Attributes:
    method: the row's name as printed.
    accuracy: test accuracy in [0, 1].
    mf1: test macro-F1 in [0, 1], or None when not measured.
    feature_dim: the classifier's input size, or None.
    settings: a short description of the settings.
    accuracy_std: the sample standard deviation of the accuracy over seeds (then ``accuracy``
      is their mean), or None.
    mf1_std: the same for M-F1.
    num_seeds: the number of seeds averaged, or None for a single run.
  """
  method: str
  accuracy: float
  mf1: float | None = None
  feature_dim: int | None = None
  settings: str = ""
  accuracy_std: float | None = None
  mf1_std: float | None = None
  num_seeds: int | None = None


def extract_features(method: str, images, *, grid: Sequence[int] = DEFAULT_GRID,
                     options: Mapping[str, Any] | None = None) -> np.ndarray:
  """Features of one method: ``'lbp'``, ``'lpq'`` or ``'eoh'`` with its options.

  Args:
    method: one of ``METHODS``.
    images: ``(N, S, S, 3)`` or ``(N, S, S)`` faces.
    grid: cells ``(rows, cols)``.
    options: keyword arguments of the method's function (defaults ``DEFAULT_OPTIONS[method]``).

  Returns:
    float64 ``(N, D)``.
  """
  functions = {"lbp": handcrafted.lbp_grid_features, "lpq": handcrafted.lpq_features,
               "eoh": handcrafted.eoh_features}
  if method not in functions:
    raise ValueError(f"methods: expected names from {METHODS}, got {method!r}")
  return functions[method](images, grid, **{**DEFAULT_OPTIONS[method], **(options or {})})


def _settings_text(method: str, grid: Sequence[int], options: Mapping[str, Any],
                   svm_c: float) -> str:
  grid_text = f"{grid[0]}x{grid[1]} cells"
  if method == "lbp":
    p, r = options["points"], options["radius"]
    text = f"{grid_text}, P={p}, R={r:g}, {p * (p - 1) + 3} uniform bins"
  elif method == "lpq":
    decorrelation = f"decorrelated (rho={options['rho']:g})" if options["decorrelate"] else \
        "not decorrelated"
    text = f"{grid_text}, {options['win']}x{options['win']} window, {decorrelation}, 256 bins"
  else:
    text = f"{grid_text}, Sobel, {options['bins']} orientation bins over [0, pi)"
    if options["threshold"]:
      text += f", magnitude > {options['threshold']:g}"
  return f"{text}; LinearSVC C={svm_c:g} on standardised features"


def _resize(images: np.ndarray, image_size: int, name: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
    raise ValueError(f"{name}: expected square faces (N, S, S, 3) or (N, S, S), got shape "
                     f"{images.shape}")
  if images.shape[1] == image_size:
    return images
  import cv2  # pylint: disable=g-import-not-at-top
  return np.stack([cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
                   for image in images]).reshape((len(images), image_size, image_size)
                                                 + images.shape[3:])


def run_handcrafted_baselines(train_images, train_labels, test_images, test_labels, *,
                              image_size: int, methods: Sequence[str] = METHODS,
                              grid: Sequence[int] = DEFAULT_GRID,
                              options: Mapping[str, Mapping[str, Any]] | None = None,
                              svm_c: float = 1.0) -> list[Table5Row]:
  """Scores each hand-crafted descriptor with a linear SVM: the baseline rows of Table 5.

  Args:
    train_images: ``(N, S, S, 3)`` or ``(N, S, S)`` training faces (uint8 or float).
    train_labels: ``(N,)`` expression classes.
    test_images: ``(M, S', S', ...)`` test faces.
    test_labels: ``(M,)``.
    image_size: side the descriptors see; faces of another size are resized to it first
      (OpenCV's area interpolation).
    methods: names from ``METHODS``, in row order.
    grid: cells ``(rows, cols)`` of every descriptor.
    options: per method, keyword arguments overriding ``DEFAULT_OPTIONS``.
    svm_c: the SVM's C.

  Returns:
    One :class:`Table5Row` per method, named by ``METHOD_NAMES``.
  """
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise ValueError(f"methods: expected names from {METHODS}, got {tuple(methods)}")
  unknown = sorted(set(options or {}) - set(METHODS))
  if unknown:
    raise ValueError(f"options: expected keys from {METHODS}, got {unknown}")
  train_images = _resize(train_images, image_size, "train_images")
  test_images = _resize(test_images, image_size, "test_images")
  grid = tuple(int(g) for g in grid)
  rows = []
  for method in methods:
    method_options = {**DEFAULT_OPTIONS[method], **(options or {}).get(method, {})}
    train_features = extract_features(method, train_images, grid=grid, options=method_options)
    test_features = extract_features(method, test_images, grid=grid, options=method_options)
    scores = handcrafted.fit_linear_svm_and_score(train_features, train_labels, test_features,
                                                  test_labels, c=svm_c)
    rows.append(Table5Row(METHOD_NAMES[method], scores["accuracy"], scores["mf1"],
                          int(train_features.shape[1]),
                          _settings_text(method, grid, method_options, svm_c)))
  return rows


def _mean_and_std(values):
  values = [float(v) for v in values if v is not None]
  if not values:
    return None, None
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def aggregate_over_seeds(rows_per_seed: Sequence[Sequence[Table5Row]]) -> list[Table5Row]:
  """One row per method: mean and sample standard deviation (n - 1) over the seeds' rows.

  Args:
    rows_per_seed: for each seed, its rows (a method may be missing from some seeds).

  Returns:
    Rows in first-seen method order; ``num_seeds`` counts the seeds that had the method.
  """
  by_method = {}
  for rows in rows_per_seed:
    for row in rows:
      by_method.setdefault(row.method, []).append(_as_row(row))
  out = []
  for method, rows in by_method.items():
    accuracy, accuracy_std = _mean_and_std(r.accuracy for r in rows)
    mf1, mf1_std = _mean_and_std(r.mf1 for r in rows)
    out.append(Table5Row(method, accuracy, mf1, rows[0].feature_dim, rows[0].settings,
                         accuracy_std, mf1_std, len(rows)))
  return out


# ------------------------------------------------------------------------------------- writer


def _as_row(row) -> Table5Row:
  if isinstance(row, Table5Row):
    return row
  if isinstance(row, Mapping):
    missing = {"method", "accuracy"} - set(row)
    extra = set(row) - set(_COLUMNS)
    if missing or extra:
      raise ValueError(f"rows: a mapping row needs keys {_COLUMNS[:2]} (optional "
                       f"{_COLUMNS[2:]}); got {sorted(row)}")
    return Table5Row(**row)
  raise ValueError(f"rows: expected Table5Row or mapping entries, got {type(row).__name__}")


def _percent(value: float | None, std: float | None = None) -> str:
  if value is None:
    return "-"
  return f"{100 * value:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _latex_escape(text: str) -> str:
  replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$"}
  return "".join(replacements.get(ch, ch) for ch in text)


def format_table5(rows: Sequence[Table5Row | Mapping], fmt: str = "markdown",
                  title: Sequence[str] = ()) -> str:
  """Table 5 as text.

  Markdown and LaTeX print accuracy and M-F1 in percent with two decimals ("-" when missing),
  "mean ± s.d." for rows averaged over seeds; CSV keeps the fractions at full precision (empty
  when missing) for further processing.

  Args:
    rows: :class:`Table5Row` records, or mappings with their fields (MTL rows may leave ``mf1``
      and ``feature_dim`` out).
    fmt: one of ``FORMATS``.
    title: lines written above the table (markdown: the first in bold; CSV: ``# `` comment
      lines; LaTeX: ``%`` comment lines).

  Returns:
    The table, ending with a newline.
  """
  if fmt not in FORMATS:
    raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
  rows = [_as_row(r) for r in rows]
  title = [str(line) for line in title]
  optional = lambda v, conv: "" if v is None else conv(v)
  if fmt == "csv":
    buf = io.StringIO()
    for line in title:
      buf.write(f"# {line}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for r in rows:
      writer.writerow([r.method, repr(float(r.accuracy)), optional(r.mf1, lambda v: repr(float(v))),
                       optional(r.feature_dim, int), r.settings,
                       optional(r.accuracy_std, lambda v: repr(float(v))),
                       optional(r.mf1_std, lambda v: repr(float(v))), optional(r.num_seeds, int)])
    return buf.getvalue()
  cells = [(r.method, _percent(r.accuracy, r.accuracy_std), _percent(r.mf1, r.mf1_std),
            "-" if r.num_seeds is None else str(int(r.num_seeds)),
            "-" if r.feature_dim is None else str(int(r.feature_dim)), r.settings or "-")
           for r in rows]
  if fmt == "markdown":
    lines = [f"**{title[0]}**", ""] + title[1:] + [""] if title else []
    lines += ["| method | accuracy (%) | M-F1 (%) | seeds | features | settings |",
              "|---|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(c.replace("|", r"\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"
  lines = [f"% {line}" for line in title]
  lines += [r"\begin{tabular}{lrrrrl}", r"\toprule",
            r"Method & Accuracy (\%) & M-F1 (\%) & Seeds & Features & Settings \\", r"\midrule"]
  lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in cells]
  lines += [r"\bottomrule", r"\end{tabular}"]
  return "\n".join(lines) + "\n"


def write_table5(rows: Sequence[Table5Row | Mapping], directory, *, stem: str = "table5",
                 formats: Sequence[str] = FORMATS,
                 title: Sequence[str] = ()) -> list[pathlib.Path]:
  """Writes ``stem.md``, ``stem.csv`` and ``stem.tex`` (those of ``formats``) atomically.

  Args:
    rows: as for :func:`format_table5`.
    directory: the output folder (created if needed).
    stem: file name without extension.
    formats: which of ``FORMATS`` to write.
    title: as for :func:`format_table5`.

  Returns:
    The written paths.
  """
  texts = {fmt: format_table5(rows, fmt, title) for fmt in formats}  # all checked before any write
  directory = pathlib.Path(directory)
  return [atomic.write_text(directory / f"{stem}.{_EXTENSIONS[fmt]}", text)
          for fmt, text in texts.items()]
