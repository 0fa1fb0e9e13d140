"""The CDMER protocol of the TGSR paper as a library function (``run``), for the CLI and notebooks.

For every experiment ``SRC->TGT`` it sweeps the (kappa, xi) grid, selects the best point by M-F1
(the authors' rule: the first grid row, in kappa-major order, with the highest M-F1) and writes::

  WORKDIR/<SRC>_to_<TGT>/grid.csv          kappa,xi,acc,mf1,iterations,converged (every grid point)
  WORKDIR/<SRC>_to_<TGT>/best.json         the best point, its scores, confusion matrix, regions
  WORKDIR/<SRC>_to_<TGT>/regions.png       selected regions on the face grids (Fig. 2)
  WORKDIR/<SRC>_to_<TGT>/sensitivity_kappa.png, sensitivity_xi.png   (Figs. 3-4)
  WORKDIR/<SRC>_to_<TGT>/chunks/<setup>/chunk_NNNNN.npz   finished grid chunks (resume)
  WORKDIR/summary.md, WORKDIR/summary.csv  Tables II/III layout, with converged points per
                                           experiment; summary.md opens with the setup
  WORKDIR/summary.json                     the setup (data files or generator and seed, grid,
                                           precision, grouping, selection rule) and the rows

The data source is ``config.data.source``; its default ``auto`` reads feature files when
``data.feature_dir`` or ``data.files`` names some and generates synthetic clips otherwise.
A selected point that did not converge (or a grid where none did) is logged as a warning and
marked in the tables.

Every file is written atomically; an interrupted run resumes from the chunks already written
(the ``<setup>`` hash covers the data, grid, grouping, precision and solver settings).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import numbers
import pathlib
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from subtle_core import atomic
from tgsr_jax import cdmer_io
from tgsr_jax import layout
from tgsr_jax import metrics
from tgsr_jax import plots
from tgsr_jax import protocol
from tgsr_jax import solver
from tgsr_jax import sweep as sweep_lib
from tgsr_jax.synthetic import features as synthetic_features

# config.data.source: one of these, or "auto" (see resolve_source).
DATA_SOURCES = ("synthetic_clips", "synthetic_features", "files")
GROUPINGS = ("contiguous", "regions")
GRID_COLUMNS = ("kappa", "xi", "acc", "mf1", "iterations", "converged")


def solver_settings(config) -> solver.Settings:
  """The ALM settings of a config (``config.solver``); ``tol <= 0`` means the precision default."""
  s = config.solver
  return solver.Settings(mu0=float(s.mu0), rho=float(s.rho), mu_max=float(s.mu_max),
                         tol=float(s.tol) if float(s.tol) > 0 else None,
                         max_iterations=int(s.max_iterations))


def _parse_files(spec: str) -> dict[str, pathlib.Path]:
  files = {}
  for entry in (e.strip() for e in spec.split(",") if e.strip()):
    if "=" not in entry:
      raise ValueError(f"config.data.files: {entry!r} is not of the form CODE=path "
                       "(e.g. 'V=smic_vis.mat')")
    code, path = (p.strip() for p in entry.split("=", 1))
    name = cdmer_io.CODE_DATABASES.get(code.upper(), code.upper())
    if name not in cdmer_io.DATABASE_CODES:
      raise ValueError(f"config.data.files: unknown database {code!r} in {entry!r}; use one of "
                       f"{sorted(cdmer_io.CODE_DATABASES)} or {sorted(cdmer_io.DATABASE_CODES)}")
    if name in files:
      raise ValueError(f"config.data.files: {name} is given twice ({files[name]} and {path})")
    files[name] = pathlib.Path(path)
  return files


def resolve_source(config) -> str:
  """The data source a config asks for: ``config.data.source``, with ``auto`` resolved.

  ``auto`` (the default) reads feature files when ``data.feature_dir`` or ``data.files`` names
  some, and generates synthetic clips otherwise.

  Raises:
    ValueError: for an unknown source, or a synthetic source together with feature files (the
      files would be ignored).
  """
  source = str(config.data.source)
  given = [f"data.{name}={config.data[name]!r}" for name in ("feature_dir", "files")
           if config.data[name]]
  if source == "auto":
    return "files" if given else "synthetic_clips"
  if source not in DATA_SOURCES:
    raise ValueError(f"config.data.source must be one of {('auto',) + DATA_SOURCES}, "
                     f"got {source!r}")
  if source != "files" and given:
    raise ValueError(f"config.data.source={source!r} generates synthetic data, but "
                     f"{' and '.join('config.' + g for g in given)} names feature files, which "
                     "would be ignored; set config.data.source='files' (or 'auto') to read them, "
                     "or leave data.feature_dir and data.files empty")
  return source


@dataclasses.dataclass(frozen=True)
class LoadedData:
  """The feature sets of a run and where they came from.

  Attributes:
    source: the resolved data source ('synthetic_clips', 'synthetic_features' or 'files').
    description: one line saying which data were used (generator and seed, or 'feature files').
    feature_sets: database name -> its features.
  """
  source: str
  description: str
  feature_sets: dict[str, cdmer_io.FeatureSet]

  @property
  def files(self) -> dict[str, str]:
    return {db: str(fs.path) for db, fs in sorted(self.feature_sets.items())}


def load_databases(config, workdir: pathlib.Path, needed: set[str]) -> LoadedData:
  """Reads (or generates) the feature sets the experiments need.

  Raises:
    ValueError / FeatureFileError: naming the config field or file that is wrong.
  """
  source = resolve_source(config)
  num_groups = int(config.num_groups)
  seed = int(config.data.synthetic_seed)
  if source == "synthetic_clips":
    # Generated raw clips in the CASME II / SMIC layouts -> face crop, TIM, LBP-TOP -> .mat files.
    from tgsr_jax import extraction  # noqa: PLC0415  (OpenCV only when clips are used)
    num_clips = int(config.data.num_clips) or None
    feature_dir = extraction.prepare_synthetic_feature_dir(
        workdir / "synthetic_clips", seed=seed, databases=tuple(sorted(needed)),
        num_clips=num_clips, progress=bool(config.progress))
    paths = {db: feature_dir / f"{db}.mat" for db in needed}
    description = (f"synthetic clips (tgsr_jax.synthetic.microexpressions), seed {seed}, "
                   f"{num_clips or 'the generator default number of'} clips per database, "
                   "features extracted here (face crop, TIM, LBP-TOP)")
  elif source == "synthetic_features":
    scale = float(config.data.synthetic_scale)
    paths = synthetic_features.write_benchmark(
        workdir / "synthetic_features", seed=seed, scale=scale, databases=tuple(sorted(needed)))
    description = (f"synthetic features (tgsr_jax.synthetic.features), seed {seed}, "
                   f"scale {scale:g}")
  else:
    paths = {}
    if config.data.feature_dir:
      feature_dir = pathlib.Path(config.data.feature_dir)
      if not feature_dir.is_dir():
        raise cdmer_io.FeatureFileError(
            f"config.data.feature_dir: {feature_dir} is not a folder (expected a folder of "
            ".mat/.npz feature files)")
      found = cdmer_io.find_feature_files(feature_dir)
      if not found:
        names = sorted(p.name for p in feature_dir.iterdir() if not p.name.startswith("."))
        listing = (f"it holds {names[:8]}{' ...' if len(names) > 8 else ''}" if names else
                   "it is empty")
        raise cdmer_io.FeatureFileError(
            f"config.data.feature_dir: {feature_dir} holds no feature file ({listing}); expected "
            f".mat or .npz files with variables {{DB}}_micro_feature and {{DB}}_micro_label, DB "
            f"in {sorted(cdmer_io.DATABASE_CODES)}")
      paths.update(found)
    paths.update(_parse_files(config.data.files))
    if not paths:
      raise ValueError("config.data.source='files' needs config.data.feature_dir (a folder of "
                       "feature files) or config.data.files ('CODE=path,...')")
    description = "feature files"
  missing = sorted(needed - set(paths))
  if missing:
    where = (" and ".join(f"config.data.{name}={config.data[name]!r}"
                          for name in ("feature_dir", "files") if config.data[name]))
    raise ValueError(f"no feature file for {missing} (found {sorted(paths)} in {where}); drop "
                     "those experiments with --config.experiments=... or add the files")
  classes = tuple(int(c) for c in config.classes)
  feature_sets = {db: cdmer_io.read_feature_file(paths[db], db, num_groups=num_groups,
                                                 classes=classes)
                  for db in sorted(needed)}
  return LoadedData(source=source, description=description, feature_sets=feature_sets)


def feature_groups(grouping: str, num_features: int, num_groups: int) -> np.ndarray:
  """Group id of every column: ``contiguous`` chunks (the authors' code) or true facial ``regions``.

  ``regions`` assumes the benchmark's column layout (:mod:`tgsr_jax.layout`).
  """
  if grouping == "contiguous":
    return layout.contiguous_groups(num_features, num_groups)
  if grouping == "regions":
    groups = layout.benchmark_region_groups()
    if num_groups != layout.num_regions():
      raise ValueError(f"config.num_groups={num_groups} disagrees with config.grouping='regions' "
                       f"({layout.num_regions()} facial regions)")
    if groups.size != num_features:
      raise ValueError(f"config.grouping='regions' needs the 85-region benchmark layout "
                       f"({groups.size} columns), got {num_features} columns")
    return groups
  raise ValueError(f"config.grouping must be one of {GROUPINGS}, got {grouping!r}")


def _setup_hash(source: cdmer_io.FeatureSet, target: cdmer_io.FeatureSet, kappas, xis,
                config) -> str:
  h = hashlib.sha1()
  for fs in (source, target):
    h.update(np.ascontiguousarray(fs.features).tobytes())
    h.update(np.ascontiguousarray(fs.labels).tobytes())
  h.update(np.asarray(kappas, np.int64).tobytes())
  h.update(np.asarray(xis, np.float64).tobytes())
  h.update(json.dumps([config.precision, config.grouping, int(config.num_groups),
                       int(config.chunk_size),
                       dataclasses.astuple(solver_settings(config))]).encode())
  return h.hexdigest()[:12]


def _save_chunk(path: pathlib.Path, indices: np.ndarray, result: sweep_lib.SweepResult) -> None:
  with atomic.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, indices=indices, **dataclasses.asdict(result))


def _load_chunk(path: pathlib.Path) -> tuple[np.ndarray, sweep_lib.SweepResult] | None:
  """A saved chunk, or None when it is missing or unreadable (then it is recomputed)."""
  if not path.is_file():
    return None
  try:
    with np.load(path) as data:
      return data["indices"], sweep_lib.SweepResult(
          **{f.name: data[f.name] for f in dataclasses.fields(sweep_lib.SweepResult)})
  except Exception as e:  # pylint: disable=broad-except  (a truncated or foreign file)
    logging.warning("%s: unreadable saved chunk (%s: %s); recomputing it", path,
                    type(e).__name__, e)
    return None


def best_index(result: sweep_lib.SweepResult, by: str = "mf1") -> int:
  """The authors' selection: the first row (kappa-major grid order) with the highest score."""
  if by not in ("mf1", "acc"):
    raise ValueError(f"select_by must be 'mf1' or 'acc', got {by!r}")
  return result.best(by)


def class_name(label: int) -> str:
  """A label value as the files hold it, with its name when known: ``3 (Surprise)``."""
  name = cdmer_io.CLASS_NAMES.get(int(label))
  return f"{int(label)} ({name})" if name else str(int(label))


def check_source_classes(source: cdmer_io.FeatureSet, classes: tuple[int, ...]) -> None:
  """Raises a ValueError naming the file and the label values its source lacks."""
  missing = [c for c in classes if not np.any(source.labels == c)]
  if missing:
    raise ValueError(
        f"{source.path}: the source database {source.database} has no sample of class "
        f"{', '.join(class_name(c) for c in missing)}; every class of config.classes="
        f"{tuple(classes)} needs at least one source sample (drop its experiments with "
        "--config.experiments=... or change config.classes)")


def run_experiment(exp: protocol.Experiment, source: cdmer_io.FeatureSet,
                   target: cdmer_io.FeatureSet, config, out_dir: pathlib.Path,
                   bar: tqdm | None = None, setup: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
  """Sweeps one experiment's grid (resuming from saved chunks) and writes its outputs.

  ``setup`` (from :func:`describe_setup`) is recorded in ``best.json``.
  """
  classes = tuple(int(c) for c in config.classes)
  check_source_classes(source, classes)
  class_index = {c: i for i, c in enumerate(classes)}
  ys = np.vectorize(class_index.get)(source.labels)
  yt = np.vectorize(class_index.get)(target.labels)
  kappas = np.asarray(config.kappas, np.int64)
  xis = np.asarray(config.xis, np.float64)
  groups = feature_groups(config.grouping, source.features.shape[1], int(config.num_groups))
  settings = solver_settings(config)
  try:
    prepared = sweep_lib.prepare_sweep(source.features, ys, target.features, yt, groups=groups,
                                       num_classes=len(classes), precision=config.precision,
                                       settings=settings)
  except ValueError as e:
    raise ValueError(f"{exp.name} ({source.path} -> {target.path}): {e}") from e
  num_groups = prepared.layout.num_groups
  if kappas.min() < 1 or kappas.max() > num_groups:
    raise ValueError(f"kappas must lie in [1, {num_groups}], got {kappas.tolist()}")
  kappa, xi = sweep_lib.grid_points(kappas, xis)
  chunk_dir = out_dir / "chunks" / _setup_hash(source, target, kappas, xis, config)
  chunk_dir.mkdir(parents=True, exist_ok=True)
  chunk_path = lambda i: chunk_dir / f"chunk_{i:05d}.npz"  # noqa: E731
  saved = {}

  def load_saved(index, idx):
    """Whether chunk `index` is saved with these grid points (then it is not solved again)."""
    loaded = _load_chunk(chunk_path(index))
    if loaded is not None and not np.array_equal(loaded[0], idx):  # only a damaged file does this
      logging.warning("%s does not hold this grid chunk; recomputing it", chunk_path(index))
      loaded = None
    if loaded is not None:
      saved[index] = loaded[1]
    return loaded is not None

  parts, order = [], []
  for index, idx, result in sweep_lib.iter_sweep(
      prepared, kappa, xi, chunk_size=int(config.chunk_size), skip=load_saved):
    if result is None:
      result = saved.pop(index)
    else:
      _save_chunk(chunk_path(index), idx, result)
    parts.append(result)
    order.append(idx)
    if bar is not None:
      bar.update(idx.size)
  merged = sweep_lib.SweepResult.concatenate(parts)
  inverse = np.argsort(np.concatenate(order))
  result = sweep_lib.SweepResult(**{f.name: getattr(merged, f.name)[inverse]
                                    for f in dataclasses.fields(sweep_lib.SweepResult)})
  return write_outputs(exp, source, target, result, groups, ys, yt, classes, config, out_dir,
                       setup=setup)


def write_outputs(exp, source, target, result: sweep_lib.SweepResult, groups, ys, yt, classes,
                  config, out_dir: pathlib.Path, setup: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
  """grid.csv, best.json and the figures of one experiment.

  A selected point that did not converge, or a grid where no point converged, is logged as a
  warning and marked in ``best.json`` (``converged``, ``converged_points``).
  """
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(GRID_COLUMNS)
  for k, x, a, m, it, cv in zip(result.kappa, result.xi, result.acc, result.mf1,
                                result.iterations, result.converged):
    writer.writerow([int(k), repr(float(x)), repr(float(a)), repr(float(m)), int(it), int(bool(cv))])
  atomic.write_text(out_dir / "grid.csv", buf.getvalue())

  b = best_index(result, config.select_by)
  best_kappa, best_xi = int(result.kappa[b]), float(result.xi[b])
  # Refit the best point for its coefficients (group weights for Fig. 2, the confusion matrix).
  fit = solver.fit(source.features, ys, target.features, groups=groups, kappa=best_kappa,
                   xi=best_xi, num_classes=len(classes), precision=config.precision,
                   settings=solver_settings(config))
  pred = np.asarray(solver.predict(fit.coef, target.features))
  conf = np.asarray(metrics.confusion_matrix(yt, pred, len(classes)))
  group_weights = np.sqrt(np.bincount(groups, weights=np.sum(fit.coef**2, axis=1)))
  best = {
      "experiment": exp.name, "source": exp.source, "target": exp.target,
      "source_file": str(source.path), "target_file": str(target.path),
      "kappa": best_kappa, "xi": best_xi, "acc": float(result.acc[b]),
      "mf1": float(result.mf1[b]), "uar": float(result.uar[b]),
      "iterations": int(result.iterations[b]), "converged": bool(result.converged[b]),
      "selected_groups": np.flatnonzero(fit.selected).tolist(),
      "confusion": conf.tolist(), "classes": [cdmer_io.CLASS_NAMES.get(c, str(c)) for c in classes],
      "grouping": config.grouping, "precision": config.precision, "grid_points": len(result),
      "all_converged": bool(result.converged.all()),
      "converged_points": int(result.converged.sum()),
      "selection_rule": selection_rule(config.select_by),
  }
  if setup is not None:
    best["setup"] = setup
  warn_convergence(best)
  atomic.write_text(out_dir / "best.json", json.dumps(best, indent=2) + "\n")
  note = ("groups are the benchmark's consecutive 177-column chunks, drawn at region i as the "
          "authors do" if config.grouping == "contiguous" else "groups are facial regions")
  if fit.selected.size == layout.num_regions():
    plots.plot_selected_regions(
        fit.selected, out_dir / "regions.png", weights=group_weights,
        title=f"{exp.name}: kappa={best_kappa}, xi={best_xi:g}", note=note)
  at_xi = np.isclose(result.xi, best_xi)
  plots.plot_sensitivity(result.kappa[at_xi], result.mf1[at_xi], result.acc[at_xi],
                         out_dir / "sensitivity_kappa.png", xlabel="kappa",
                         title=f"{exp.name}, xi = {best_xi:g}")
  at_kappa = result.kappa == best_kappa
  plots.plot_sensitivity(result.xi[at_kappa], result.mf1[at_kappa], result.acc[at_kappa],
                         out_dir / "sensitivity_xi.png", xlabel="xi", log_x=True,
                         title=f"{exp.name}, kappa = {best_kappa}")
  return best


def selection_rule(select_by: str) -> str:
  """The rule that picks an experiment's reported point, in words."""
  score = {"mf1": "M-F1", "acc": "ACC"}[select_by]
  return (f"the first grid point, kappa-major, with the highest {score} on the labelled target "
          "(oracle: the target's labels choose the point)")


def convergence_note(best: dict[str, Any]) -> str:
  """'' when the selected point converged; else what did not converge."""
  if best["converged_points"] == 0:
    return f"no grid point converged (0 of {best['grid_points']})"
  if not best["converged"]:
    return (f"the selected point did not converge ({best['iterations']} iterations; "
            f"{best['converged_points']} of {best['grid_points']} points converged)")
  return ""


def warn_convergence(best: dict[str, Any]) -> None:
  note = convergence_note(best)
  if note:
    logging.warning("%s: %s; its scores come from unfinished iterations (raise "
                    "config.solver.max_iterations or config.solver.tol)", best["experiment"], note)


def describe_setup(config, data: LoadedData) -> dict[str, Any]:
  """What determines a run's table: data, grid, precision, grouping and the selection rule."""
  kappas = [int(k) for k in config.kappas]
  xis = [float(x) for x in config.xis]
  return {
      "data": {"source": data.source, "description": data.description, "files": data.files},
      "grid": {"kappas": kappas, "xis": xis, "points": len(kappas) * len(xis)},
      "precision": config.precision,
      "tolerance": solver_settings(config).resolved_tol(config.precision),
      "max_iterations": int(config.solver.max_iterations),
      "grouping": config.grouping, "num_groups": int(config.num_groups),
      "select_by": config.select_by, "selection_rule": selection_rule(config.select_by),
  }


def setup_lines(setup: dict[str, Any]) -> list[str]:
  """The setup as Markdown list items (the head of summary.md)."""
  data, grid = setup["data"], setup["grid"]
  files = "; ".join(f"{db} = {path}" for db, path in data["files"].items())
  if data["source"] == "files":
    data_line = f"feature files: {files}"
  else:
    data_line = f"{data['description']}; written to {files}"
  kappas, xis = grid["kappas"], grid["xis"]
  grouping = ("the authors' consecutive chunks" if setup["grouping"] == "contiguous" else
              "facial regions")
  return [
      f"- Data ({data['source']}): {data_line}",
      f"- Grid: {len(kappas)} kappa ({min(kappas)}..{max(kappas)}) x {len(xis)} xi "
      f"({min(xis):g}..{max(xis):g}) = {grid['points']} points per experiment",
      f"- Precision: {setup['precision']} (stopping tolerance {setup['tolerance']:g}, at most "
      f"{setup['max_iterations']} iterations); grouping: {setup['grouping']} "
      f"({setup['num_groups']} groups, {grouping})",
      f"- Selection: {setup['selection_rule']}",
  ]


def write_summary(bests: list[dict[str, Any]], workdir: pathlib.Path,
                  setup: dict[str, Any] | None = None) -> str:
  """summary.md, summary.csv and summary.json laid out like Tables II/III.

  M-F1 / ACC per experiment with the average of each type, and how many grid points converged.
  With ``setup`` (:func:`describe_setup`), summary.md opens with the data (each database's
  file, or the generator and seed), the grid, precision, grouping and the selection rule, and
  summary.json records it.

  Returns:
    The text of summary.md.
  """
  rows = []
  for kind in ("TYPE-I", "TYPE-II", "other"):
    chosen = [b for b in bests if _kind(b["experiment"]) == kind]
    if not chosen:
      continue
    for b in chosen:
      rows.append((kind, b["experiment"], b["mf1"], b["acc"], b["kappa"], b["xi"], b))
    rows.append((kind, "Average", float(np.mean([b["mf1"] for b in chosen])),
                 float(np.mean([b["acc"] for b in chosen])), None, None, None))
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["type", "experiment", "mf1", "acc", "kappa", "xi", "converged_points",
                   "grid_points", "best_converged"])
  for kind, name, mf1, acc, k, x, b in rows:
    writer.writerow([kind, name, f"{mf1:.4f}", f"{acc:.4f}", "" if k is None else k,
                     "" if x is None else repr(float(x)),
                     "" if b is None else b["converged_points"],
                     "" if b is None else b["grid_points"],
                     "" if b is None else int(b["converged"])])
  atomic.write_text(workdir / "summary.csv", buf.getvalue())
  lines = ["# TGSR cross-database micro-expression recognition", "",
           "M-F1 / ACC at the best (kappa, xi) of each experiment's grid.", ""]
  if setup is not None:
    lines += setup_lines(setup) + [""]
  for kind in ("TYPE-I", "TYPE-II", "other"):
    chosen = [r for r in rows if r[0] == kind]
    if not chosen:
      continue
    lines += [f"## {kind}", "", "| Experiment | M-F1 / ACC | (kappa, xi) | converged |",
              "| --- | --- | --- | --- |"]
    for _, name, mf1, acc, k, x, b in chosen:
      where = "" if k is None else f"({k}, {x:g})"
      label = f"**{name}**" if k is None else name
      converged = ""
      if b is not None:
        converged = f"{b['converged_points']}/{b['grid_points']}"
        if convergence_note(b):
          converged += " **(selected point not converged)**"
      lines.append(f"| {label} | {mf1:.4f} / {acc:.4f} | {where} | {converged} |")
    lines.append("")
  notes = [f"- {b['experiment']}: {convergence_note(b)}" for b in bests if convergence_note(b)]
  if notes:
    lines += ["## Warning: not converged", "",
              "These scores come from unfinished iterations (raise config.solver.max_iterations "
              "or config.solver.tol):", ""] + notes + [""]
  text = "\n".join(lines)
  atomic.write_text(workdir / "summary.md", text)
  record = {"setup": setup, "experiments": [
      {k: b[k] for k in ("experiment", "mf1", "acc", "kappa", "xi", "converged",
                         "converged_points", "grid_points", "source_file", "target_file")}
      for b in bests]}
  atomic.write_text(workdir / "summary.json", json.dumps(record, indent=2) + "\n")
  return text


def _kind(name: str) -> str:
  return "TYPE-I" if name in protocol.TYPE_I else "TYPE-II" if name in protocol.TYPE_II else "other"


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _numbers(config, field: str, kind) -> tuple:
  """``config.<field>`` as a tuple of ``kind``, or a ValueError naming the field."""
  values = config[field]
  if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
    values = (values,)
  example = "'(1, 12, 85)'" if kind is int else "'(0.001, 44.0)'"
  try:
    if any(isinstance(v, (str, bytes, bool)) for v in values):
      raise TypeError
    out = tuple(kind(v) for v in values)
    if kind is int and any(o != v for o, v in zip(out, values)):
      raise ValueError
  except (TypeError, ValueError, OverflowError):
    what = "integers" if kind is int else "numbers"
    raise ValueError(f"config.{field}: expected a tuple of {what} such as "
                     f"--config.{field}={example}, got {tuple(values)!r}") from None
  return out


def validate_config(config) -> None:
  """Checks the fields a user can get wrong, naming the field and what was expected."""
  if config.precision not in solver.PRECISIONS:
    raise ValueError(f"config.precision must be one of {solver.PRECISIONS}, "
                     f"got {config.precision!r}")
  if config.grouping not in GROUPINGS:
    raise ValueError(f"config.grouping must be one of {GROUPINGS}, got {config.grouping!r}")
  num_groups = config.num_groups
  if not _is_int(num_groups) or num_groups < 1:
    raise ValueError(f"config.num_groups must be a positive integer, got {num_groups!r}")
  regions = layout.num_regions()
  if config.grouping == "regions" and num_groups != regions:
    raise ValueError(f"config.num_groups={num_groups} disagrees with config.grouping='regions', "
                     f"which has the {regions} facial regions; set num_groups={regions} or use "
                     "grouping='contiguous'")
  kappas, xis = _numbers(config, "kappas", int), _numbers(config, "xis", float)
  if not kappas or not xis:
    raise ValueError("config.kappas and config.xis need at least one value each")
  if any(not np.isfinite(x) or x < 0 for x in xis):
    raise ValueError(f"config.xis must be finite numbers >= 0, got {xis}")
  if any(k < 1 or k > num_groups for k in kappas):
    raise ValueError(f"config.kappas must be integers in [1, config.num_groups={num_groups}], "
                     f"got {kappas}")
  if not _is_int(config.chunk_size) or config.chunk_size <= 0:
    raise ValueError(f"config.chunk_size must be a positive integer, got {config.chunk_size!r}")
  if config.select_by not in ("mf1", "acc"):
    raise ValueError(f"config.select_by must be 'mf1' or 'acc', got {config.select_by!r}")
  classes = _numbers(config, "classes", int)
  if len(classes) < 2 or len(set(classes)) != len(classes):
    raise ValueError(f"config.classes must be at least two distinct integer label values, "
                     f"got {tuple(config.classes)}")
  s = config.solver
  for name in ("mu0", "rho", "mu_max", "tol"):
    if isinstance(s[name], (str, bool)) or not np.isfinite(float(s[name])):
      raise ValueError(f"config.solver.{name} must be a finite number, got {s[name]!r}")
  if not _is_int(s.max_iterations) or s.max_iterations < 0:
    raise ValueError(f"config.solver.max_iterations must be an integer >= 0, "
                     f"got {s.max_iterations!r}")
  resolve_source(config)
  protocol.parse_experiments(config.experiments)


def run(config, workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """Runs every experiment of ``config`` into ``workdir`` and writes the summary tables.

  Args:
    config: an ml_collections ConfigDict as built by ``configs/cdmer.py``.
    workdir: output folder (created; reruns resume from it).

  Returns:
    The best point of every experiment (the contents of each ``best.json``).
  """
  validate_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  experiments = protocol.parse_experiments(config.experiments)
  needed = {db for e in experiments for db in (e.source, e.target)}
  data = load_databases(config, workdir, needed)
  classes = tuple(int(c) for c in config.classes)
  for exp in experiments:  # before any sweep, not after the earlier experiments finished
    check_source_classes(data.feature_sets[exp.source], classes)
  setup = describe_setup(config, data)
  total = len(experiments) * len(config.kappas) * len(config.xis)
  bests = []
  with tqdm(total=total, desc="TGSR grid", unit="fit", disable=not config.progress) as bar:
    for exp in experiments:
      bar.set_postfix_str(exp.name)
      bests.append(run_experiment(exp, data.feature_sets[exp.source],
                                  data.feature_sets[exp.target], config, workdir / exp.folder,
                                  bar, setup=setup))
  write_summary(bests, workdir, setup)
  return bests
