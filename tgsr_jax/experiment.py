"""The CDMER protocol of the TGSR paper as a library function (``run``), for the CLI and notebooks.

For every experiment ``SRC->TGT`` it sweeps the (kappa, xi) grid, selects the best point by M-F1
(the authors' rule: the first grid row, in kappa-major order, with the highest M-F1) and writes::

  WORKDIR/<SRC>_to_<TGT>/grid.csv          kappa,xi,acc,mf1,iterations,converged (every grid point)
  WORKDIR/<SRC>_to_<TGT>/best.json         the best point, its scores, confusion matrix, regions
  WORKDIR/<SRC>_to_<TGT>/regions.png       selected regions on the face grids (Fig. 2)
  WORKDIR/<SRC>_to_<TGT>/sensitivity_kappa.png, sensitivity_xi.png   (Figs. 3-4)
  WORKDIR/<SRC>_to_<TGT>/chunks/<setup>/chunk_NNNNN.npz   finished grid chunks (resume)
  WORKDIR/summary.md, WORKDIR/summary.csv  Tables II/III layout

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
      raise ValueError(f"data.files: {entry!r} is not of the form CODE=path (e.g. 'V=smic_vis.mat')")
    code, path = (p.strip() for p in entry.split("=", 1))
    name = cdmer_io.CODE_DATABASES.get(code.upper(), code.upper())
    if name not in cdmer_io.DATABASE_CODES:
      raise ValueError(f"data.files: unknown database {code!r}")
    files[name] = pathlib.Path(path)
  return files


def load_databases(config, workdir: pathlib.Path, needed: set[str]) -> dict[str, cdmer_io.FeatureSet]:
  """Reads (or generates) the feature sets the experiments need.

  Raises:
    ValueError / FeatureFileError: naming the config field or file that is wrong.
  """
  source = config.data.source
  num_groups = int(config.num_groups)
  if source == "synthetic_clips":
    # Generated raw clips in the CASME II / SMIC layouts -> face crop, TIM, LBP-TOP -> .mat files.
    from tgsr_jax import extraction  # noqa: PLC0415  (OpenCV only when clips are used)
    feature_dir = extraction.prepare_synthetic_feature_dir(
        workdir / "synthetic_clips", seed=int(config.data.synthetic_seed),
        databases=tuple(sorted(needed)), num_clips=int(config.data.num_clips) or None,
        progress=bool(config.progress))
    paths = {db: feature_dir / f"{db}.mat" for db in needed}
  elif source == "synthetic_features":
    paths = synthetic_features.write_benchmark(
        workdir / "synthetic_features", seed=int(config.data.synthetic_seed),
        scale=float(config.data.synthetic_scale), databases=tuple(sorted(needed)))
  elif source == "files":
    paths = {}
    if config.data.feature_dir:
      paths.update(cdmer_io.find_feature_files(config.data.feature_dir))
    paths.update(_parse_files(config.data.files))
    if not paths:
      raise ValueError("data.source='files' needs data.feature_dir (a folder of feature files) "
                       "or data.files ('CODE=path,...')")
  else:
    raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {source!r}")
  missing = sorted(needed - set(paths))
  if missing:
    raise ValueError(f"no feature file for {missing} (found {sorted(paths)} in "
                     f"{config.data.feature_dir or config.data.files or source}); "
                     "drop those experiments with --config.experiments=... or add the files")
  classes = tuple(int(c) for c in config.classes)
  return {db: cdmer_io.read_feature_file(paths[db], db, num_groups=num_groups, classes=classes)
          for db in sorted(needed)}


def feature_groups(grouping: str, num_features: int, num_groups: int) -> np.ndarray:
  """Group id of every column: ``contiguous`` chunks (the authors' code) or true facial ``regions``.

  ``regions`` assumes the benchmark's column layout (:mod:`tgsr_jax.layout`).
  """
  if grouping == "contiguous":
    return layout.contiguous_groups(num_features, num_groups)
  if grouping == "regions":
    groups = layout.benchmark_region_groups()
    if groups.size != num_features:
      raise ValueError(f"grouping='regions' needs the 85-region benchmark layout "
                       f"({groups.size} columns), got {num_features} columns")
    return groups
  raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")


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


def run_experiment(exp: protocol.Experiment, source: cdmer_io.FeatureSet,
                   target: cdmer_io.FeatureSet, config, out_dir: pathlib.Path,
                   bar: tqdm | None = None) -> dict[str, Any]:
  """Sweeps one experiment's grid (resuming from saved chunks) and writes its outputs."""
  classes = tuple(int(c) for c in config.classes)
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
  return write_outputs(exp, source, target, result, groups, ys, yt, classes, config, out_dir)


def write_outputs(exp, source, target, result: sweep_lib.SweepResult, groups, ys, yt, classes,
                  config, out_dir: pathlib.Path) -> dict[str, Any]:
  """grid.csv, best.json and the figures of one experiment."""
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
  }
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


def write_summary(bests: list[dict[str, Any]], workdir: pathlib.Path) -> str:
  """summary.md and summary.csv laid out like Tables II/III (M-F1 / ACC, averages per type)."""
  rows = []
  for kind in ("TYPE-I", "TYPE-II", "other"):
    chosen = [b for b in bests if _kind(b["experiment"]) == kind]
    if not chosen:
      continue
    for b in chosen:
      rows.append((kind, b["experiment"], b["mf1"], b["acc"], b["kappa"], b["xi"]))
    rows.append((kind, "Average", float(np.mean([b["mf1"] for b in chosen])),
                 float(np.mean([b["acc"] for b in chosen])), None, None))
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["type", "experiment", "mf1", "acc", "kappa", "xi"])
  for kind, name, mf1, acc, k, x in rows:
    writer.writerow([kind, name, f"{mf1:.4f}", f"{acc:.4f}", "" if k is None else k,
                     "" if x is None else repr(float(x))])
  atomic.write_text(workdir / "summary.csv", buf.getvalue())
  lines = ["# TGSR cross-database micro-expression recognition", "",
           "M-F1 / ACC at the best (kappa, xi) of each experiment's grid.", ""]
  for kind in ("TYPE-I", "TYPE-II", "other"):
    chosen = [r for r in rows if r[0] == kind]
    if not chosen:
      continue
    lines += [f"## {kind}", "", "| Experiment | M-F1 / ACC | (kappa, xi) |", "| --- | --- | --- |"]
    for _, name, mf1, acc, k, x in chosen:
      where = "" if k is None else f"({k}, {x:g})"
      label = f"**{name}**" if k is None else name
      lines.append(f"| {label} | {mf1:.4f} / {acc:.4f} | {where} |")
    lines.append("")
  text = "\n".join(lines)
  atomic.write_text(workdir / "summary.md", text)
  return text


def _kind(name: str) -> str:
  return "TYPE-I" if name in protocol.TYPE_I else "TYPE-II" if name in protocol.TYPE_II else "other"


def validate_config(config) -> None:
  """Checks the fields a user can get wrong, naming the field."""
  if config.precision not in solver.PRECISIONS:
    raise ValueError(f"precision must be one of {solver.PRECISIONS}, got {config.precision!r}")
  if config.grouping not in GROUPINGS:
    raise ValueError(f"grouping must be one of {GROUPINGS}, got {config.grouping!r}")
  if len(config.kappas) == 0 or len(config.xis) == 0:
    raise ValueError("kappas and xis need at least one value each")
  if any(float(x) < 0 for x in config.xis):
    raise ValueError(f"xis must be >= 0, got {tuple(config.xis)}")
  if any(int(k) != k or int(k) < 1 for k in config.kappas):
    raise ValueError(f"kappas must be positive integers, got {tuple(config.kappas)}")
  if int(config.chunk_size) <= 0:
    raise ValueError(f"chunk_size must be positive, got {config.chunk_size}")
  if config.select_by not in ("mf1", "acc"):
    raise ValueError(f"select_by must be 'mf1' or 'acc', got {config.select_by!r}")
  classes = tuple(config.classes)
  if (len(classes) < 2 or len(set(classes)) != len(classes)
      or any(int(c) != c for c in classes)):
    raise ValueError(f"classes must be at least two distinct integer label values, got {classes}")


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
  total = len(experiments) * len(config.kappas) * len(config.xis)
  bests = []
  with tqdm(total=total, desc="TGSR grid", unit="fit", disable=not config.progress) as bar:
    for exp in experiments:
      bar.set_postfix_str(exp.name)
      bests.append(run_experiment(exp, data[exp.source], data[exp.target], config,
                                  workdir / exp.folder, bar))
  write_summary(bests, workdir)
  return bests
