"""The CDMER protocol of the TGSR paper as a library function (``run``), for the CLI and notebooks.

For every experiment ``SRC->TGT`` it sweeps the (kappa, xi) grid, selects the best point by M-F1
(the authors' rule: the first grid row, in kappa-major order, with the highest M-F1) and writes
(through :mod:`tgsr_jax.experiment_outputs`)::

  WORKDIR/<SRC>_to_<TGT>/grid.csv          kappa,xi,acc,mf1,iterations,converged (every grid point)
  WORKDIR/<SRC>_to_<TGT>/best.json         the best point, its scores, confusion matrix, regions
  WORKDIR/<SRC>_to_<TGT>/regions.png       selected regions on the face grids (Fig. 2)
  WORKDIR/<SRC>_to_<TGT>/sensitivity_kappa.png, sensitivity_xi.png   (Figs. 3-4)
  WORKDIR/<SRC>_to_<TGT>/chunks/<setup>/chunk_NNNNN.npz   finished grid chunks (resume)
  WORKDIR/summary.md, WORKDIR/summary.csv  Tables II/III layout, with converged points per
                                           experiment; summary.md opens with the setup
  WORKDIR/summary.json                     the setup (data files or generator and seed, grid,
                                           precision, grouping, selection rule) and the rows

When ``config.methods`` names other methods than TGSR or ``config.selection`` label-free rules
(the default: all methods, all rules), the comparison of :mod:`tgsr_jax.comparison` runs on the
same data and adds::

  WORKDIR/<SRC>_to_<TGT>/<METHOD>/grid.csv, best_<RULE>.json   every method's grid and picks
  WORKDIR/results.csv                      method,selection,experiment,mf1,acc,params
  WORKDIR/reproduction.md, selection.md    published cells; each label-free rule's regret

and summary.md / summary.csv / summary.tex become its tables: one per selection rule, methods x
experiments laid out like Tables II/III (TGSR a row), under the same setup lines plus every
method's grid. TGSR's target scores in the comparison are its sweep's.

The config is read once into :class:`tgsr_jax.settings.CdmerSettings`, which every function
here takes. The data source is ``config.data.source``; its default ``auto`` reads feature files
when ``data.feature_dir`` or ``data.files`` names some and generates synthetic clips otherwise.
A selected point that did not converge (or a grid where none did) is logged as a warning and
marked in the tables.

Every file is written atomically. Grid chunks are kept in a
:class:`subtle_core.runfolder.ResultStore` under the fingerprint of what determines them (the data, grid, classes, grouping, precision,
chunk size and solver settings, and the chunk's grid points); ``<setup>`` is that fingerprint's
digest without the chunk. An interrupted run resumes from the chunks already written; a damaged
chunk, or one made under other settings, is recomputed.

On several processes (``experiments.cdmer --coordinator_address ... --num_processes N
--process_id I``; :mod:`subtle_core.distributed`) every process reads (or generates) the data
and solves its share of each TGSR grid's chunks (:func:`tgsr_jax.sweep.iter_sweep`); process 0
gathers them, keeps the chunk store and alone writes every output and runs the comparison and
the refits of the selected points. Generated data of the other processes go to a temporary
folder, not the workdir.
"""
from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from subtle_core import distributed
from subtle_core import runfolder
from tgsr_jax import cdmer_io
from tgsr_jax import layout
from tgsr_jax import metrics
from tgsr_jax import protocol
from tgsr_jax import solver
from tgsr_jax import sweep as sweep_lib
from tgsr_jax import comparison
from tgsr_jax import methods as methods_lib
from tgsr_jax.experiment_outputs import GRID_COLUMNS  # noqa: F401  (re-exported)
from tgsr_jax.experiment_outputs import selection_rule, write_experiment, write_summary
from tgsr_jax.experiment_outputs import write_comparison_summary
from tgsr_jax.methods import tgsr as methods_tgsr
from tgsr_jax.methods.tgsr import feature_groups  # noqa: F401  (re-exported)
from tgsr_jax.settings import DATA_SOURCES, GROUPINGS  # noqa: F401  (re-exported)
from tgsr_jax.settings import CdmerSettings, cdmer_settings
from tgsr_jax.synthetic import features as synthetic_features


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


def _files_in_feature_dir(feature_dir: pathlib.Path) -> dict[str, pathlib.Path]:
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
  return found


def load_databases(settings: CdmerSettings, workdir: pathlib.Path,
                   needed: set[str] | None = None) -> LoadedData:
  """Reads (or generates) the feature sets the experiments need.

  Args:
    settings: the run's settings (``settings.data`` says where the features come from).
    workdir: the run's folder (generated data go under it).
    needed: database names (default: those of ``settings.experiments``).

  Raises:
    ValueError / FeatureFileError: naming the config field or file that is wrong.
  """
  data = settings.data
  needed = settings.needed_databases if needed is None else set(needed)
  seed = data.synthetic_seed
  if data.source == "synthetic_clips":
    # Generated raw clips in the CASME II / SMIC layouts -> face crop, TIM, LBP-TOP -> .mat files.
    from tgsr_jax import extraction  # noqa: PLC0415  (OpenCV only when clips are used)
    num_clips = data.num_clips or None
    feature_dir = extraction.prepare_synthetic_feature_dir(
        workdir / "synthetic_clips", seed=seed, databases=tuple(sorted(needed)),
        num_clips=num_clips, progress=settings.progress)
    paths = {db: feature_dir / f"{db}.mat" for db in needed}
    description = (f"synthetic clips (tgsr_jax.synthetic.microexpressions), seed {seed}, "
                   f"{num_clips or 'the generator default number of'} clips per database, "
                   "features extracted here (face crop, TIM, LBP-TOP)")
  elif data.source == "synthetic_features":
    paths = synthetic_features.write_benchmark(
        workdir / "synthetic_features", seed=seed, scale=data.synthetic_scale,
        databases=tuple(sorted(needed)))
    description = (f"synthetic features (tgsr_jax.synthetic.features), seed {seed}, "
                   f"scale {data.synthetic_scale:g}")
  else:
    paths = {}
    if data.feature_dir:
      paths.update(_files_in_feature_dir(pathlib.Path(data.feature_dir)))
    paths.update(dict(data.files))
    if not paths:
      raise ValueError("config.data.source='files' needs config.data.feature_dir (a folder of "
                       "feature files) or config.data.files ('CODE=path,...')")
    description = "feature files"
  missing = sorted(needed - set(paths))
  if missing:
    where = " and ".join(f"config.data.{name}={value!r}" for name, value in (
        ("feature_dir", data.feature_dir),
        ("files", ",".join(f"{db}={p}" for db, p in data.files))) if value)
    raise ValueError(f"no feature file for {missing} (found {sorted(paths)} in {where}); drop "
                     "those experiments with --config.experiments=... or add the files")
  feature_sets = {db: cdmer_io.read_feature_file(paths[db], db, num_groups=settings.num_groups,
                                                 classes=settings.classes)
                  for db in sorted(needed)}
  return LoadedData(source=data.source, description=description, feature_sets=feature_sets)


def setup_fingerprint(source: cdmer_io.FeatureSet, target: cdmer_io.FeatureSet,
                      settings: CdmerSettings) -> dict[str, Any]:
  """The fields that determine an experiment's grid results (see the module docstring)."""
  return {
      "source_features": source.features, "source_labels": source.labels,
      "target_features": target.features, "target_labels": target.labels,
      "kappas": np.asarray(settings.kappas, np.int64),
      "xis": np.asarray(settings.xis, np.float64), "classes": list(settings.classes),
      "precision": settings.precision, "grouping": settings.grouping,
      "num_groups": settings.num_groups, "chunk_size": settings.chunk_size,
      "solver": settings.solver,
  }


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


def _sweep_grid(prepared: sweep_lib.PreparedSweep, fields: dict[str, Any],
                settings: CdmerSettings, chunk_root: pathlib.Path,
                bar: tqdm | None) -> sweep_lib.SweepResult | None:
  """Solves the grid chunk by chunk, reusing every chunk stored under its fingerprint.

  On several processes only process 0 reads and writes the store and returns the result (the
  others solve their share of the chunks and return None).
  """
  main = distributed.is_main_process()
  kappa, xi = sweep_lib.grid_points(settings.kappas, settings.xis)
  setup = runfolder.fingerprint(**fields)
  store = runfolder.ResultStore(chunk_root / setup.digest)
  names = [f.name for f in dataclasses.fields(sweep_lib.SweepResult)]
  saved, prints = {}, {}

  def load_saved(index, idx):
    """Whether chunk `index` is saved with these settings and grid points (then it is reused)."""
    # The setup's stored fields (arrays already digested) plus the chunk's grid points.
    prints[index] = runfolder.fingerprint(**setup.fields, chunk=np.asarray(idx, np.int64))
    if not main:
      return False  # process 0's store decides
    arrays = store.load_arrays(f"chunk_{index:05d}", prints[index])
    if arrays is not None and all(n in arrays for n in names):
      saved[index] = sweep_lib.SweepResult(**{n: arrays[n] for n in names})
    return index in saved

  parts, order = [], []
  for index, idx, result in sweep_lib.iter_sweep(prepared, kappa, xi,
                                                 chunk_size=settings.chunk_size, skip=load_saved):
    if not main:
      continue
    if result is None:
      result = saved.pop(index)
    else:
      store.save_arrays(f"chunk_{index:05d}", prints[index], dataclasses.asdict(result))
    parts.append(result)
    order.append(idx)
    if bar is not None:
      bar.update(idx.size)
  if not main:
    return None
  merged = sweep_lib.SweepResult.concatenate(parts)
  inverse = np.argsort(np.concatenate(order))
  return sweep_lib.SweepResult(**{n: getattr(merged, n)[inverse] for n in names})


def run_experiment(exp: protocol.Experiment, source: cdmer_io.FeatureSet,
                   target: cdmer_io.FeatureSet, settings: CdmerSettings, out_dir: pathlib.Path,
                   bar: tqdm | None = None, setup: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
  """Sweeps one experiment's grid (resuming from saved chunks) and writes its outputs.

  Returns the contents of ``best.json`` (:func:`sweep_experiment` also returns the sweep).
  """
  return sweep_experiment(exp, source, target, settings, out_dir, bar, setup)[0]


def sweep_experiment(exp: protocol.Experiment, source: cdmer_io.FeatureSet,
                     target: cdmer_io.FeatureSet, settings: CdmerSettings, out_dir: pathlib.Path,
                     bar: tqdm | None = None, setup: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], sweep_lib.SweepResult]:
  """Sweeps one experiment's grid (resuming from saved chunks) and writes its outputs.

  Args:
    exp: the transfer.
    source, target: its feature sets.
    settings: the run's settings (a ConfigDict is read too).
    out_dir: the experiment's folder.
    bar: a progress bar to advance by the grid points done.
    setup: recorded in ``best.json`` (see :func:`describe_setup`).

  Returns:
    The contents of ``best.json`` and every grid point's scores; (None, None) on a process other
    than 0 of several (it solves its share of the grid and writes nothing).
  """
  settings = cdmer_settings(settings)
  classes = settings.classes
  check_source_classes(source, classes)
  class_index = {c: i for i, c in enumerate(classes)}
  ys = np.vectorize(class_index.get)(source.labels)
  yt = np.vectorize(class_index.get)(target.labels)
  groups = feature_groups(settings.grouping, source.features.shape[1], settings.num_groups)
  try:
    prepared = sweep_lib.prepare_sweep(source.features, ys, target.features, yt, groups=groups,
                                       num_classes=len(classes), precision=settings.precision,
                                       settings=settings.solver)
  except ValueError as e:
    raise ValueError(f"{exp.name} ({source.path} -> {target.path}): {e}") from e
  num_groups = prepared.layout.num_groups
  if min(settings.kappas) < 1 or max(settings.kappas) > num_groups:
    raise ValueError(f"config.kappas must lie in [1, {num_groups}], got {list(settings.kappas)}")
  result = _sweep_grid(prepared, setup_fingerprint(source, target, settings), settings,
                       out_dir / "chunks", bar)
  if result is None:
    return None, None
  best, selected, group_weights = best_record(exp, source, target, result, groups, ys, yt,
                                              settings)
  if setup is not None:
    best["setup"] = setup
  write_experiment(out_dir, result, best, selected, group_weights)
  return best, result


def best_record(exp: protocol.Experiment, source: cdmer_io.FeatureSet,
                target: cdmer_io.FeatureSet, result: sweep_lib.SweepResult, groups: np.ndarray,
                ys: np.ndarray, yt: np.ndarray, settings: CdmerSettings
                ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
  """The selected point's record (best.json), its kept groups and their norms.

  The point is refitted for its coefficients (the group weights of Fig. 2, the confusion
  matrix).
  """
  classes = settings.classes
  b = best_index(result, settings.select_by)
  best_kappa, best_xi = int(result.kappa[b]), float(result.xi[b])
  fit = solver.fit(source.features, ys, target.features, groups=groups, kappa=best_kappa,
                   xi=best_xi, num_classes=len(classes), precision=settings.precision,
                   settings=settings.solver)
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
      "grouping": settings.grouping, "precision": settings.precision, "grid_points": len(result),
      "all_converged": bool(result.converged.all()),
      "converged_points": int(result.converged.sum()),
      "selection_rule": selection_rule(settings.select_by),
  }
  return best, fit.selected, group_weights


def describe_setup(settings: CdmerSettings, data: LoadedData) -> dict[str, Any]:
  """What determines a run's table: data, grid, precision, grouping and the selection rule."""
  kappas, xis = list(settings.kappas), list(settings.xis)
  return {
      "data": {"source": data.source, "description": data.description, "files": data.files},
      "grid": {"kappas": kappas, "xis": xis, "points": len(kappas) * len(xis)},
      "precision": settings.precision, "tolerance": settings.tolerance,
      "max_iterations": settings.solver.max_iterations,
      "grouping": settings.grouping, "num_groups": settings.num_groups,
      "select_by": settings.select_by, "selection_rule": selection_rule(settings.select_by),
      "methods": list(settings.methods), "selection": list(settings.selection),
      "selection_options": {"num_folds": settings.selection_folds,
                            "seed": settings.selection_seed},
  }


def validate_config(config) -> CdmerSettings:
  """Checks the fields a user can get wrong (naming the field); returns the settings."""
  return CdmerSettings.from_config(config)


def tgsr_method(settings: CdmerSettings) -> methods_lib.Method:
  """TGSR on the config's grid, grouping, K and solver settings, as a comparison method."""
  return methods_tgsr.make(kappas=settings.kappas, xis=settings.xis,
                           grid_source="config.kappas x config.xis",
                           grouping=settings.grouping, num_groups=settings.num_groups,
                           settings=settings.solver, chunk_size=settings.chunk_size)


def tgsr_selection_subset(settings: CdmerSettings) -> np.ndarray:
  """(G,) bool: the config grid's points TGSR's label-free rules score (kappa-major order)."""
  kappa, xi = sweep_lib.grid_points(settings.kappas, settings.xis)
  kappas = settings.kappas if settings.selection_kappas is None else settings.selection_kappas
  xis = settings.xis if settings.selection_xis is None else settings.selection_xis
  return np.isin(kappa, kappas) & np.isclose(xi[:, None], np.asarray(xis)[None, :]).any(axis=1)


def run_comparison(settings: CdmerSettings, data: LoadedData, workdir: pathlib.Path,
                   sweeps: dict[str, sweep_lib.SweepResult], bar: tqdm | None = None):
  """The comparison of ``settings.methods`` under ``settings.selection`` on the loaded data.

  TGSR's target scores are its sweeps' (``sweeps``: experiment name -> result), so its oracle
  row is its ``best.json``.
  """
  names = [n for n in settings.methods if n != "TGSR"]
  extra, target_scores, subsets, prints = [], {}, {}, {}
  if "TGSR" in settings.methods:
    extra.append(tgsr_method(settings))
    target_scores = {("TGSR", name): comparison.TargetScores(
        acc=r.acc, mf1=r.mf1, iterations=r.iterations, converged=r.converged)
        for name, r in sweeps.items()}
    subsets["TGSR"] = tgsr_selection_subset(settings)
    prints["TGSR"] = {"grouping": settings.grouping, "num_groups": settings.num_groups,
                      "solver": settings.solver}
  grids = {n: settings.method_grid(n) for n in names if settings.method_grid(n)}
  return comparison.run_comparison(
      data.feature_sets, settings.experiments, workdir, method_names=names, methods=extra,
      grids=grids, rules=settings.label_free_rules,
      selection_options={"num_folds": settings.selection_folds,
                         "seed": settings.selection_seed},
      classes=settings.classes, precision=settings.precision, target_scores=target_scores,
      selection_subsets=subsets, fingerprint_fields=prints, tables=None,
      progress=settings.progress, bar=bar)


def run(config, workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """Runs every experiment into ``workdir`` and writes the summary tables.

  TGSR (when ``settings.methods`` holds it) sweeps its grid per experiment as before; when other
  methods or label-free rules are asked, the comparison (:mod:`tgsr_jax.comparison`) runs on the
  same data and the summary becomes its tables, one per selection rule.

  Args:
    config: an ml_collections ConfigDict as built by ``configs/cdmer.py`` (read and checked
      once) or a :class:`tgsr_jax.settings.CdmerSettings`.
    workdir: output folder (created; reruns resume from it).

  Returns:
    TGSR's best point of every experiment (the contents of each ``best.json``); on a process
    other than 0 of several, an empty list (see the module docstring).
  """
  settings = cdmer_settings(config)
  workdir = pathlib.Path(workdir)
  if not distributed.is_main_process():
    return _run_share(settings)
  workdir.mkdir(parents=True, exist_ok=True)
  data = load_databases(settings, workdir)
  for exp in settings.experiments:  # before any sweep, not after the earlier experiments finished
    check_source_classes(data.feature_sets[exp.source], settings.classes)
  setup = describe_setup(settings, data)
  with_tgsr = "TGSR" in settings.methods
  total = len(settings.experiments) * len(settings.kappas) * len(settings.xis) * with_tgsr
  bests, sweeps = [], {}
  desc = "CDMER grids" if settings.runs_comparison else "TGSR grid"
  with tqdm(total=total, desc=desc, unit="fit", disable=not settings.progress) as bar:
    for exp in settings.experiments if with_tgsr else ():
      bar.set_postfix_str(f"{exp.name} TGSR")
      best, sweeps[exp.name] = sweep_experiment(
          exp, data.feature_sets[exp.source], data.feature_sets[exp.target], settings,
          workdir / exp.folder, bar, setup=setup)
      bests.append(best)
    if settings.runs_comparison:
      rows, runs = run_comparison(settings, data, workdir, sweeps, bar)
  if settings.runs_comparison:
    write_comparison_summary(rows, runs, bests, workdir, setup, settings.selection)
  else:
    write_summary(bests, workdir, setup)
  return bests


def _run_share(settings: CdmerSettings) -> list:
  """A process other than 0: its share of every TGSR sweep, writing nothing in the workdir."""
  if "TGSR" not in settings.methods:
    return []
  with tempfile.TemporaryDirectory(prefix="cdmer_process_") as scratch:
    data = load_databases(settings, pathlib.Path(scratch))
    for exp in settings.experiments:  # process 0 checks them all before any sweep, as here
      check_source_classes(data.feature_sets[exp.source], settings.classes)
    for exp in settings.experiments:
      sweep_experiment(exp, data.feature_sets[exp.source], data.feature_sets[exp.target],
                       settings, pathlib.Path(scratch) / exp.folder)
  return []
