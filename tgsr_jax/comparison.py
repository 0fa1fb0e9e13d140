"""Tables II/III whole: every comparison method on every experiment, picked by every rule.

For each experiment ``SRC->TGT`` and each method (a :class:`tgsr_jax.methods.Method`), the
method's grid is fitted at once (``fit_predict``) and every grid point is scored on the labelled
target. Each selection rule then picks one grid point:

* ``oracle``, the rule of every published row: the first grid point (grid order) with the highest
  M-F1 on the labelled target;
* the label-free rules of :mod:`tgsr_jax.selection` (IWCV, RV, DEV, SrcCV), computed by one
  :func:`tgsr_jax.selection.select` call per method x experiment from the source labels and the
  unlabelled target alone; the target labels are read only afterwards, to score the pick and its
  regret (:func:`tgsr_jax.selection.regret_row`).

A method's target scores may come from elsewhere (``target_scores``: TGSR's own sweep, so that
TGSR's oracle row is its ``best.json``), and its label-free rules may score a subgrid only
(``selection_subsets``: TGSR's 23035-point paper grid would cost ~10 full sweeps); points outside
the subgrid have no score and are never picked by those rules.

Outputs (all atomic; a rerun reuses every finished method x experiment and fits nothing)::

  WORKDIR/<SRC>_to_<TGT>/<METHOD>/grid.csv          every grid point: parameters, acc, mf1,
                                                    iterations/converged (iterative methods),
                                                    failed, and each label-free rule's score
  WORKDIR/<SRC>_to_<TGT>/<METHOD>/best_<RULE>.json  the pick of each rule
  WORKDIR/results.csv                               method,selection,experiment,mf1,acc,params
  WORKDIR/reproduction.md                           published cells beside the oracle values
  WORKDIR/selection.md                              each label-free rule's regret per method
  WORKDIR/<tables>.md / .csv / .tex                 one table per rule, laid out like Tables
                                                    II/III (``experiments.cdmer``: summary.*)
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from subtle_core import atomic
from subtle_core import runfolder
from tgsr_jax import cdmer_io
from tgsr_jax import methods as methods_lib
from tgsr_jax import metrics
from tgsr_jax import protocol
from tgsr_jax import reproduction
from tgsr_jax import selection

ORACLE = "oracle"
RULE_DESCRIPTIONS = {
    ORACLE: ("oracle: the first grid point (grid order) with the highest M-F1 on the labelled "
             "target; it picks by the target labels, as every published row does"),
    "IWCV": ("IWCV: importance-weighted source cross-validation (Sugiyama et al. 2007), weighted "
             "M-F1; no target label read"),
    "RV": ("RV: reverse validation (Zhong et al. 2010), M-F1 of the target-to-source round trip; "
           "no target label read"),
    "DEV": ("DEV: deep embedded validation (You et al. 2019), control-variate weighted 0-1 risk; "
            "no target label read"),
    "SrcCV": "SrcCV: plain source cross-validation M-F1 (ignores the shift); no target label read",
}
RESULT_COLUMNS = ("method", "selection", "experiment", "mf1", "acc", "params")


@dataclasses.dataclass(frozen=True)
class TargetScores:
  """Every grid point's scores on the labelled target, computed by the caller (e.g. a sweep)."""
  acc: np.ndarray
  mf1: np.ndarray
  iterations: np.ndarray | None = None
  converged: np.ndarray | None = None
  failed: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class MethodRun:
  """One method's grid on one experiment, scored and picked.

  Attributes:
    method: the method's name.
    experiment: the experiment.
    params: name -> (G,) grid values.
    acc, mf1: (G,) target scores (NaN where failed).
    failed: (G,) failed points.
    iterations, converged: (G,) for iterative methods, else None.
    failure: (G,) why each failed point failed ('' elsewhere), where the method says, else None.
    rule_scores: label-free rule -> (G,) score (NaN where failed or outside the scored subgrid).
    scored: (G,) the points the label-free rules scored.
    picks: rule -> grid index (-1 where no point could be picked).
    grid_source: where the grid comes from.
  """
  method: str
  experiment: protocol.Experiment
  params: dict[str, np.ndarray]
  acc: np.ndarray
  mf1: np.ndarray
  failed: np.ndarray
  iterations: np.ndarray | None
  converged: np.ndarray | None
  rule_scores: dict[str, np.ndarray]
  scored: np.ndarray
  picks: dict[str, int]
  grid_source: str = ""
  failure: np.ndarray | None = None

  def regret(self) -> selection.RegretRow | None:
    """The label-free rules' regret against the oracle (None without rules or oracle)."""
    if not self.rule_scores or self.picks[ORACLE] < 0:
      return None
    picks = {r: g for r, g in self.picks.items() if r != ORACLE}
    return selection.regret_row(self.method, self.experiment.name, self.mf1, picks)


def grid_scores(labels: np.ndarray, y_true: np.ndarray, num_classes: int) -> tuple[np.ndarray, ...]:
  """ACC and M-F1 (G,) of predicted labels (G, Q); a failed point (any label < 0) scores NaN."""
  labels = np.asarray(labels)
  failed = (labels < 0).any(axis=1)
  safe = np.where(labels < 0, 0, labels)
  conf = np.zeros((len(labels), num_classes, num_classes), np.int64)
  for g in range(len(labels)):
    np.add.at(conf[g], (np.asarray(y_true), safe[g]), 1)
  scores = metrics.scores_from_confusion(conf)
  acc = np.where(failed, np.nan, scores["acc"])
  mf1 = np.where(failed, np.nan, scores["mf1"])
  return acc, mf1, failed


def class_indices(fs: cdmer_io.FeatureSet, classes: Sequence[int]) -> np.ndarray:
  """The labels of a feature set as class indices (positions in ``classes``)."""
  index = {int(c): i for i, c in enumerate(classes)}
  missing = sorted(set(int(v) for v in np.unique(fs.labels)) - set(index))
  if missing:
    raise ValueError(f"{fs.path}: labels {missing} are not among classes {tuple(classes)}")
  return np.asarray([index[int(v)] for v in fs.labels], np.int64)


def num_points(params: Mapping[str, np.ndarray]) -> int:
  return len(next(iter(params.values()))) if params else 1


def _units(params, scored, rules, num_folds, target_given) -> int:
  """Progress units of one method x experiment: its target fits plus ~2 k fits per scored point."""
  g = num_points(params)
  sub = int(np.sum(scored)) if scored is not None else g
  return (0 if target_given else g) + (2 * num_folds * sub if rules else 0)


def run_method(method: methods_lib.Method, params: Mapping[str, np.ndarray],
               exp: protocol.Experiment, source: cdmer_io.FeatureSet,
               target: cdmer_io.FeatureSet, *, classes: Sequence[int], precision: str,
               rules: Sequence[str], out_dir: pathlib.Path,
               selection_options: Mapping[str, Any] | None = None,
               target_scores: TargetScores | None = None, scored: np.ndarray | None = None,
               fingerprint_fields: Mapping[str, Any] | None = None,
               bar: tqdm | None = None, density_cache: dict | None = None) -> MethodRun:
  """Fits, scores and picks one method's grid on one experiment (resuming a finished one).

  Args:
    method: the method.
    params: its grid, name -> (G,) values.
    exp, source, target: the experiment and its feature sets.
    classes: the label values of the files, in class-index order.
    precision: passed to ``fit_predict``.
    rules: label-free rules (names of :data:`tgsr_jax.selection.RULES`); may be empty.
    out_dir: the method's folder of this experiment.
    selection_options: keyword arguments of :func:`tgsr_jax.selection.select` (num_folds, seed).
    target_scores: the target scores when computed elsewhere (then the target is not fitted).
    scored: (G,) bool, the points the label-free rules score (default all).
    fingerprint_fields: what else determines the method's results (its static settings).
    bar: a progress bar advanced by the fits done.
    density_cache: the source folds' density ratios, shared by the methods of one experiment
      (:func:`tgsr_jax.selection.select`).
  """
  num_classes = len(classes)
  options = dict(selection_options or {})
  ys, yt = class_indices(source, classes), class_indices(target, classes)
  params = {k: np.asarray(v) for k, v in params.items()}
  g_all = num_points(params)
  scored = np.ones(g_all, bool) if scored is None else np.asarray(scored, bool)
  store = runfolder.ResultStore(out_dir)
  common = dict(method=method.name, params=params, precision=precision, classes=list(classes),
                xs=source.features, ys=ys, xt=target.features, **(fingerprint_fields or {}))
  folds = int(options.get("num_folds", 5))

  if target_scores is None:
    fp = runfolder.fingerprint(**common)
    saved = store.load_arrays("target", fp)
    if saved is None:
      out = method.fit_predict(source.features, ys, target.features, target.features, params,
                               num_classes=num_classes, precision=precision)
      arrays = {"labels": np.asarray(out.labels),
                "failed": (np.zeros(len(out), bool) if out.failed is None
                           else np.asarray(out.failed, bool))}
      if out.iterations is not None:
        arrays["iterations"] = np.asarray(out.iterations)
      if out.converged is not None:
        arrays["converged"] = np.asarray(out.converged)
      if out.failure is not None:
        arrays["failure"] = np.asarray(out.failure, str)
      store.save_arrays("target", fp, arrays)
      saved = arrays
      if bar is not None:
        bar.update(g_all)
    acc, mf1, failed = grid_scores(np.asarray(saved["labels"]), yt, num_classes)
    failed = failed | np.asarray(saved["failed"], bool)
    iterations, converged = saved.get("iterations"), saved.get("converged")
    failure = saved.get("failure")
  else:
    failure = None
    acc, mf1 = np.asarray(target_scores.acc, float), np.asarray(target_scores.mf1, float)
    failed = (np.zeros(g_all, bool) if target_scores.failed is None
              else np.asarray(target_scores.failed, bool))
    iterations, converged = target_scores.iterations, target_scores.converged
  acc, mf1 = np.where(failed, np.nan, acc), np.where(failed, np.nan, mf1)

  rule_scores = {}
  if rules:
    sub = {k: v[scored] for k, v in params.items()}
    fp = runfolder.fingerprint(**{**common, "params": sub}, selection=options)
    saved = store.load_arrays("selection", fp)
    if saved is None:
      # Label-free: the source labels and the unlabelled target only.
      chosen = selection.select(method, source.features, ys, target.features, sub,
                                num_classes=num_classes, precision=precision,
                                density_cache=density_cache, **options)
      saved = {f"score_{r}": chosen.scores[r] for r in selection.RULES}
      saved["failed"] = chosen.failed
      store.save_arrays("selection", fp, saved)
      if bar is not None:
        bar.update(2 * folds * int(scored.sum()))
    for r in rules:
      full = np.full(g_all, np.nan)
      full[scored] = np.asarray(saved[f"score_{r}"], float)
      rule_scores[r] = np.where(failed, np.nan, full)
  picks = {ORACLE: selection.pick(mf1), **{r: selection.pick(s) for r, s in rule_scores.items()}}
  run = MethodRun(method=method.name, experiment=exp, params=params, acc=acc, mf1=mf1,
                  failed=failed, iterations=iterations, converged=converged,
                  rule_scores=rule_scores, scored=scored, picks=picks,
                  grid_source=method.grid_source, failure=failure)
  write_method_outputs(run, source, target, out_dir, options)
  return run


def point_params(params: Mapping[str, np.ndarray], g: int) -> dict[str, Any]:
  """The hyper-parameters of grid point ``g`` as plain Python values."""
  return {k: np.asarray(v)[g].item() for k, v in params.items()}


def write_method_outputs(run: MethodRun, source: cdmer_io.FeatureSet,
                         target: cdmer_io.FeatureSet, out_dir: pathlib.Path,
                         selection_options: Mapping[str, Any] | None = None) -> None:
  """``grid.csv`` and ``best_<rule>.json`` of one method x experiment."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  extra = [c for c, v in (("iterations", run.iterations), ("converged", run.converged))
           if v is not None]
  rules = list(run.rule_scores)
  why = [] if run.failure is None else ["failure"]
  writer.writerow([*run.params, "acc", "mf1", *extra, "failed", *(f"score_{r}" for r in rules),
                   *why])
  for g in range(len(run.acc)):
    row = [repr(v) for v in point_params(run.params, g).values()]
    row += [repr(float(run.acc[g])), repr(float(run.mf1[g]))]
    if run.iterations is not None:
      row.append(int(run.iterations[g]))
    if run.converged is not None:
      row.append(int(bool(run.converged[g])))
    row.append(int(bool(run.failed[g])))
    row += [repr(float(run.rule_scores[r][g])) for r in rules]
    if run.failure is not None:
      row.append(str(run.failure[g]))
    writer.writerow(row)
  atomic.write_text(out_dir / "grid.csv", buf.getvalue())
  for rule, g in run.picks.items():
    best = {
        "method": run.method, "experiment": run.experiment.name, "selection": rule,
        "rule": RULE_DESCRIPTIONS.get(rule, rule),
        "source_file": str(source.path), "target_file": str(target.path),
        "grid": {k: list(dict.fromkeys(np.asarray(v).tolist())) for k, v in run.params.items()},
        "grid_source": run.grid_source, "grid_points": len(run.acc),
        "failed_points": int(run.failed.sum()),
    }
    if rule != ORACLE:
      best.update(scored_points=int(run.scored.sum()), options=dict(selection_options or {}))
    if g >= 0:
      best.update(params=point_params(run.params, g), acc=float(run.acc[g]),
                  mf1=float(run.mf1[g]))
      if run.converged is not None:
        best["converged"] = bool(run.converged[g])
    else:
      best.update(params=None, acc=None, mf1=None, note="no grid point could be picked")
    atomic.write_text(out_dir / f"best_{rule}.json", json.dumps(best, indent=2) + "\n")


def results_rows(runs: Sequence[MethodRun]) -> list[dict[str, Any]]:
  """One row per method x rule x experiment (the columns of ``results.csv``)."""
  rows = []
  for run in runs:
    for rule, g in run.picks.items():
      rows.append({"method": run.method, "selection": rule, "experiment": run.experiment.name,
                   "mf1": float(run.mf1[g]) if g >= 0 else math.nan,
                   "acc": float(run.acc[g]) if g >= 0 else math.nan,
                   "params": json.dumps(point_params(run.params, g)) if g >= 0 else ""})
  return rows


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: pathlib.Path) -> None:
  """``results.csv``: ``method,selection,experiment,mf1,acc,params`` (acc as a fraction)."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(RESULT_COLUMNS)
  for r in rows:
    writer.writerow([r["method"], r["selection"], r["experiment"], _num(r["mf1"]),
                     _num(r["acc"]), r["params"]])
  atomic.write_text(path, buf.getvalue())


def _num(value: float) -> str:
  return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(
      float(value))


def _table_layout(rows, rule):
  """(methods, experiments by kind, cell lookup) of one rule's rows."""
  chosen = [r for r in rows if r["selection"] == rule]
  method_names = list(dict.fromkeys(r["method"] for r in chosen))
  cells = {(r["method"], r["experiment"]): (r["mf1"], r["acc"]) for r in chosen}
  present = list(dict.fromkeys(r["experiment"] for r in chosen))
  kinds = {}
  for kind, names in (("TYPE-I", protocol.TYPE_I), ("TYPE-II", protocol.TYPE_II)):
    kinds[kind] = [e for e in names if e in present]
  kinds["other"] = [e for e in present if e not in protocol.ALL_EXPERIMENTS]
  return method_names, {k: v for k, v in kinds.items() if v}, cells


def _average(cells, method, experiments, index):
  values = [cells.get((method, e), (math.nan, math.nan))[index] for e in experiments]
  return float(np.mean(values)) if values and not any(math.isnan(v) for v in values) else math.nan


def comparison_tables(rows: Sequence[Mapping[str, Any]], rules: Sequence[str], *,
                      title: str = "Tables II/III: methods x experiments",
                      head: Sequence[str] = ()) -> tuple[str, str, str]:
  """Markdown, CSV and LaTeX tables: one per rule, methods x experiments (M-F1 / ACC %).

  Args:
    rows: result rows (``results.csv``).
    rules: the rules, one table each, in this order.
    title: the Markdown heading.
    head: Markdown lines placed under the heading (the run's setup).
  """
  md, tex = [f"# {title}", "", *head, ""] if head else [f"# {title}", ""], []
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["selection", "type", "method", "experiment", "mf1", "acc"])
  for rule in rules:
    method_names, kinds, cells = _table_layout(rows, rule)
    if not method_names:
      continue
    md += [f"## Selection: {RULE_DESCRIPTIONS.get(rule, rule)}", ""]
    tex += [f"% Selection: {RULE_DESCRIPTIONS.get(rule, rule)}"]
    for kind, experiments in kinds.items():
      header = [*experiments, "Average"]
      md += [f"### {kind}", "", "| Method | " + " | ".join(header) + " |",
             "| --- |" + " --- |" * len(header)]
      tex += [f"% {rule}: {kind}", "\\begin{tabular}{l" + "c" * len(header) + "}", "\\hline",
              "Method & " + " & ".join(h.replace("->", "$\\rightarrow$") for h in header)
              + " \\\\", "\\hline"]
      for m in method_names:
        values = [cells.get((m, e), (math.nan, math.nan)) for e in experiments]
        values.append((_average(cells, m, experiments, 0), _average(cells, m, experiments, 1)))
        text = [_cell(v) for v in values]
        md.append(f"| {m} | " + " | ".join(text) + " |")
        tex.append(f"{m} & " + " & ".join(text) + " \\\\")
        for e, v in zip(header, values):
          writer.writerow([rule, kind, m, e, _num(v[0]), _num(v[1])])
      md.append("")
      tex += ["\\hline", "\\end{tabular}", ""]
    md += ["Cells are M-F1 / ACC (%).", ""]
  return "\n".join(md), buf.getvalue(), "\n".join(tex)


def _cell(value) -> str:
  mf1, acc = value
  return "-" if math.isnan(mf1) else f"{mf1:.4f} / {100 * acc:.2f}"


def write_tables(workdir: pathlib.Path, stem: str, rows: Sequence[Mapping[str, Any]],
                 rules: Sequence[str], **kwargs) -> str:
  """``<stem>.md/.csv/.tex`` of :func:`comparison_tables`; returns the Markdown."""
  md, table_csv, tex = comparison_tables(rows, rules, **kwargs)
  atomic.write_text(workdir / f"{stem}.md", md)
  atomic.write_text(workdir / f"{stem}.csv", table_csv)
  atomic.write_text(workdir / f"{stem}.tex", tex)
  return md


def grid_lines(runs: Sequence[MethodRun]) -> list[str]:
  """One Markdown line per method: its grid (axes and values), size and source."""
  lines = []
  for run in {r.method: r for r in runs}.values():
    axes = " x ".join(f"{k} {list(dict.fromkeys(np.asarray(v).tolist()))}"
                      for k, v in run.params.items())
    if run.method == "TGSR":
      axes = " x ".join(f"{k}: {len(set(np.asarray(v).tolist()))} values "
                        f"({min(v):g}..{max(v):g})" for k, v in run.params.items())
    sub = ""
    if run.rule_scores and not run.scored.all():
      sub = f"; label-free rules score {int(run.scored.sum())} of these points"
    lines.append(f"- Grid of {run.method}: {axes} = {len(run.acc)} points{sub} "
                 f"({run.grid_source})")
  return lines


def run_comparison(datasets: Mapping[str, cdmer_io.FeatureSet],
                   experiments: Sequence[protocol.Experiment], workdir: str | pathlib.Path, *,
                   method_names: Sequence[str] = (),
                   methods: Sequence[methods_lib.Method] = (),
                   grids: Mapping[str, Mapping[str, Sequence]] | None = None,
                   rules: Sequence[str] = (),
                   selection_options: Mapping[str, Any] | None = None,
                   classes: Sequence[int] = (1, 2, 3), precision: str = "float64",
                   target_scores: Mapping[tuple[str, str], TargetScores] | None = None,
                   selection_subsets: Mapping[str, np.ndarray] | None = None,
                   fingerprint_fields: Mapping[str, Mapping[str, Any]] | None = None,
                   tables: str | None = "comparison", progress: bool = True,
                   bar: tqdm | None = None) -> tuple[list[dict[str, Any]], list[MethodRun]]:
  """Runs every method on every experiment and writes the comparison's outputs.

  Args:
    datasets: database name -> features (every experiment's source and target).
    experiments: the experiments.
    workdir: output folder (reruns reuse finished method x experiment results).
    method_names: names from :data:`tgsr_jax.methods.NAMES` (their default methods).
    methods: further :class:`tgsr_jax.methods.Method` objects (e.g. a bound TGSR).
    grids: per method name, a grid overriding its own (name -> values per axis).
    rules: label-free rules (:data:`tgsr_jax.selection.RULES`); ``oracle`` is always applied.
    selection_options: keyword arguments of :func:`tgsr_jax.selection.select`.
    classes: the label values of the files, in class-index order.
    precision: ``float64`` or ``float32``.
    target_scores: (method, experiment name) -> target scores computed elsewhere.
    selection_subsets: method -> (G,) bool, the points its label-free rules score.
    fingerprint_fields: method -> the static settings that determine its results.
    tables: the stem of the tables written (None: none; the caller writes them).
    progress: show one progress bar over every method's fits (when ``bar`` is None).
    bar: a progress bar to advance instead.

  Returns:
    The rows of ``results.csv`` and the runs.
  """
  workdir = pathlib.Path(workdir)
  rules = list(rules)
  unknown = [r for r in rules if r not in selection.RULES]
  if unknown:
    raise ValueError(f"rules: unknown {unknown}; expected names of {selection.RULES}")
  grids = dict(grids or {})
  options = dict(selection_options or {})
  target_scores = dict(target_scores or {})
  chosen = [methods_lib.get(n) for n in method_names] + list(methods)
  params = {m.name: methods_lib.grid_points(grids.get(m.name) or m.grid) for m in chosen}
  subsets = dict(selection_subsets or {})
  total = sum(_units(params[m.name], subsets.get(m.name), rules, options.get("num_folds", 5),
                     (m.name, e.name) in target_scores) for e in experiments for m in chosen)
  own_bar = bar is None
  if own_bar:
    bar = tqdm(total=total, desc="comparison", unit="fit", disable=not progress)
  else:
    bar.total = (bar.total or 0) + total
    bar.refresh()
  runs = []
  try:
    for exp in experiments:
      density_cache = {}       # the folds' density ratios, the same for every method
      for m in chosen:
        bar.set_postfix_str(f"{exp.name} {m.name}")
        run = run_method(m, params[m.name], exp, datasets[exp.source], datasets[exp.target],
                         classes=classes, precision=precision, rules=rules,
                         out_dir=workdir / exp.folder / m.name, selection_options=options,
                         target_scores=target_scores.get((m.name, exp.name)),
                         scored=subsets.get(m.name),
                         fingerprint_fields=(fingerprint_fields or {}).get(m.name), bar=bar,
                         density_cache=density_cache)
        runs.append(run)
        if run.failed.any():
          logging.warning("%s %s: %d of %d grid points failed (recorded in grid.csv)", exp.name,
                          m.name, int(run.failed.sum()), len(run.failed))
  finally:
    if own_bar:
      bar.close()
  rows = results_rows(runs)
  write_results_csv(rows, workdir / "results.csv")
  reproduction.write_reproduction(workdir / "reproduction.md", rows)
  regrets = [r for r in (run.regret() for run in runs) if r is not None]
  if rules:
    notes = "\n".join([f"Source folds: {options.get('num_folds', 5)} (seed "
                       f"{options.get('seed', 0)}); every rule: "
                       + "; ".join(RULE_DESCRIPTIONS[r] for r in rules) + ".", "",
                       *grid_lines(runs)])
    selection.write_selection_markdown(workdir / "selection.md", regrets, rules=rules,
                                       notes=notes)
  if tables:
    write_tables(workdir, tables, rows, [ORACLE, *rules])
  return rows, runs
