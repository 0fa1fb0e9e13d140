"""Tables II/III whole: every comparison method on every experiment, picked by every rule.

For each experiment ``SRC->TGT`` and each method of :mod:`tgsr_jax.methods`, the method's grid is
fitted at once (``fit_predict``), every grid point is scored on the labelled target, and each
selection rule picks one grid point. ``oracle`` is the rule of every published row: the first grid
point (grid order) with the highest M-F1 on the labelled target. The label-free rules
(:data:`LABEL_FREE_RULES`, from :mod:`tgsr_jax.selection`) score the grid points from the source
labels and the unlabelled target alone; the target labels are read only afterwards, to score the
pick. Outputs (all atomic; a rerun reuses every finished method x experiment)::

  WORKDIR/<SRC>_to_<TGT>/<METHOD>/grid.csv          every grid point: parameters, acc, mf1,
                                                    iterations/converged (iterative methods),
                                                    failed, and each rule's score
  WORKDIR/<SRC>_to_<TGT>/<METHOD>/best_<RULE>.json  the pick of each rule
  WORKDIR/results.csv                               method,selection,experiment,mf1,acc,params
  WORKDIR/comparison.md / .csv / .tex               one table per rule, laid out like Tables II/III
  WORKDIR/reproduction.md                           published cells beside the oracle values
  WORKDIR/selection.md                              each label-free rule's regret against the oracle
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import pathlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from subtle_core import atomic
from subtle_core import runfolder
from tgsr_jax import cdmer_io
from tgsr_jax import methods as methods_lib
from tgsr_jax import metrics
from tgsr_jax import protocol
from tgsr_jax import reproduction

ORACLE = "oracle"
ORACLE_DESCRIPTION = ("oracle: the first grid point (grid order) with the highest M-F1 on the "
                      "labelled target. It reads the target labels, as every published row does")
RESULT_COLUMNS = ("method", "selection", "experiment", "mf1", "acc", "params")

# A label-free rule: (method, xs, ys, xt, params, num_classes=, precision=) -> (G,) scores, higher
# is better. It never sees target labels.
Rule = Callable[..., np.ndarray]


@dataclasses.dataclass(frozen=True)
class MethodRun:
  """One method's grid on one experiment, scored and picked."""
  method: str
  experiment: protocol.Experiment
  params: dict[str, np.ndarray]
  acc: np.ndarray
  mf1: np.ndarray
  failed: np.ndarray
  iterations: np.ndarray | None
  converged: np.ndarray | None
  rule_scores: dict[str, np.ndarray]
  picks: dict[str, int]            # rule -> grid index (-1 where every point failed)


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


def first_best(scores: np.ndarray) -> int:
  """The first index with the highest score, NaN ignored; -1 when every score is NaN."""
  scores = np.asarray(scores, np.float64)
  if np.all(np.isnan(scores)):
    return -1
  return int(np.nanargmax(scores))   # nanargmax returns the first maximum


def _labels_of(fs: cdmer_io.FeatureSet, classes: Sequence[int]) -> np.ndarray:
  index = {int(c): i for i, c in enumerate(classes)}
  missing = sorted(set(int(v) for v in np.unique(fs.labels)) - set(index))
  if missing:
    raise ValueError(f"{fs.path}: labels {missing} are not among classes {tuple(classes)}")
  return np.asarray([index[int(v)] for v in fs.labels], np.int64)


def run_method(method: methods_lib.Method, params: Mapping[str, np.ndarray],
               exp: protocol.Experiment, source: cdmer_io.FeatureSet,
               target: cdmer_io.FeatureSet, *, classes: Sequence[int], precision: str,
               rules: Mapping[str, Rule], out_dir: pathlib.Path) -> MethodRun:
  """Fits, scores and picks one method's grid on one experiment (resuming a finished one)."""
  num_classes = len(classes)
  ys, yt = _labels_of(source, classes), _labels_of(target, classes)
  params = {k: np.asarray(v) for k, v in params.items()}
  store = runfolder.ResultStore(out_dir)
  fp = runfolder.fingerprint(method=method.name, params=params, precision=precision,
                             classes=list(classes), xs=source.features, ys=ys,
                             xt=target.features, rules=sorted(rules))
  saved = store.load_arrays("predictions", fp)
  if saved is None:
    out = method.fit_predict(source.features, ys, target.features, target.features, params,
                             num_classes=num_classes, precision=precision)
    # Label-free rules see the source labels and the unlabelled target only.
    rule_scores = {name: np.asarray(rule(method, source.features, ys, target.features, params,
                                         num_classes=num_classes, precision=precision),
                                    np.float64) for name, rule in rules.items()}
    arrays = {"labels": out.labels,
              "failed": (out.failed if out.failed is not None
                         else np.zeros(len(out), bool)),
              **{f"rule_{k}": v for k, v in rule_scores.items()}}
    if out.iterations is not None:
      arrays["iterations"] = out.iterations
    if out.converged is not None:
      arrays["converged"] = out.converged
    store.save_arrays("predictions", fp, arrays)
    saved = store.load_arrays("predictions", fp)
  labels = np.asarray(saved["labels"])
  acc, mf1, failed = grid_scores(labels, yt, num_classes)
  failed = failed | np.asarray(saved["failed"], bool)
  acc, mf1 = np.where(failed, np.nan, acc), np.where(failed, np.nan, mf1)
  rule_scores = {k[len("rule_"):]: np.where(failed, np.nan, v)
                 for k, v in saved.items() if k.startswith("rule_")}
  picks = {ORACLE: first_best(mf1), **{k: first_best(v) for k, v in rule_scores.items()}}
  run = MethodRun(method=method.name, experiment=exp, params=params, acc=acc, mf1=mf1,
                  failed=failed, iterations=saved.get("iterations"),
                  converged=saved.get("converged"), rule_scores=rule_scores, picks=picks)
  _write_method_outputs(run, method, source, target, out_dir)
  return run


def _point_params(params: Mapping[str, np.ndarray], g: int) -> dict[str, Any]:
  return {k: np.asarray(v)[g].item() for k, v in params.items()}


def _write_method_outputs(run: MethodRun, method: methods_lib.Method, source, target,
                          out_dir: pathlib.Path) -> None:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  extra = [c for c, v in (("iterations", run.iterations), ("converged", run.converged))
           if v is not None]
  rules = sorted(run.rule_scores)
  writer.writerow([*run.params, "acc", "mf1", *extra, "failed", *(f"score_{r}" for r in rules)])
  for g in range(len(run.acc)):
    row = [repr(v) for v in _point_params(run.params, g).values()]
    row += [repr(float(run.acc[g])), repr(float(run.mf1[g]))]
    if run.iterations is not None:
      row.append(int(run.iterations[g]))
    if run.converged is not None:
      row.append(int(bool(run.converged[g])))
    row.append(int(bool(run.failed[g])))
    row += [repr(float(run.rule_scores[r][g])) for r in rules]
    writer.writerow(row)
  atomic.write_text(out_dir / "grid.csv", buf.getvalue())
  for rule, g in run.picks.items():
    best = {
        "method": run.method, "experiment": run.experiment.name, "selection": rule,
        "rule": ORACLE_DESCRIPTION if rule == ORACLE else
                f"{rule}: the first grid point with the highest {rule} score; no target label read",
        "source_file": str(source.path), "target_file": str(target.path),
        "grid": {k: sorted(set(np.asarray(v).tolist())) for k, v in run.params.items()},
        "grid_source": method.grid_source, "grid_points": len(run.acc),
        "failed_points": int(run.failed.sum()),
    }
    if g >= 0:
      best.update(params=_point_params(run.params, g), acc=float(run.acc[g]),
                  mf1=float(run.mf1[g]))
      if run.converged is not None:
        best["converged"] = bool(run.converged[g])
    else:
      best.update(params=None, acc=None, mf1=None, note="every grid point failed")
    atomic.write_text(out_dir / f"best_{rule}.json", json.dumps(best, indent=2) + "\n")


def results_rows(runs: Sequence[MethodRun]) -> list[dict[str, Any]]:
  """One row per method x rule x experiment (the columns of ``results.csv``)."""
  rows = []
  for run in runs:
    for rule, g in run.picks.items():
      rows.append({"method": run.method, "selection": rule, "experiment": run.experiment.name,
                   "mf1": float(run.mf1[g]) if g >= 0 else math.nan,
                   "acc": float(run.acc[g]) if g >= 0 else math.nan,
                   "params": json.dumps(_point_params(run.params, g)) if g >= 0 else ""})
  return rows


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: pathlib.Path) -> None:
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


def comparison_tables(rows: Sequence[Mapping[str, Any]], rules: Sequence[str],
                      rule_descriptions: Mapping[str, str]) -> tuple[str, str, str]:
  """Markdown, CSV and LaTeX tables: one per rule, methods x experiments (M-F1 / ACC %)."""
  md, tex = ["# Tables II/III: methods x experiments", ""], []
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["selection", "type", "method", "experiment", "mf1", "acc"])
  for rule in rules:
    method_names, kinds, cells = _table_layout(rows, rule)
    if not method_names:
      continue
    md += [f"## Selection: {rule_descriptions.get(rule, rule)}", ""]
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


def selection_markdown(rows: Sequence[Mapping[str, Any]], rules: Sequence[str]) -> str:
  """Each label-free rule's regret: the oracle's M-F1 less the M-F1 at the rule's pick."""
  oracle = {(r["method"], r["experiment"]): r["mf1"] for r in rows if r["selection"] == ORACLE}
  lines = ["# Model selection without target labels", "",
           "Regret = the oracle's M-F1 (best on the labelled target) - the M-F1 at the rule's "
           "pick, averaged over the experiments (and its largest value). 0 means the rule found "
           "the oracle's point; the published numbers all use the oracle.", "",
           "| Method | " + " | ".join(r for r in rules if r != ORACLE) + " |",
           "| --- |" + " --- |" * len([r for r in rules if r != ORACLE])]
  for m in dict.fromkeys(r["method"] for r in rows):
    cells = []
    for rule in (r for r in rules if r != ORACLE):
      regrets = [oracle[(m, r["experiment"])] - r["mf1"] for r in rows
                 if r["method"] == m and r["selection"] == rule
                 and not math.isnan(r["mf1"]) and (m, r["experiment"]) in oracle]
      cells.append(f"{np.mean(regrets):.4f} (max {np.max(regrets):.4f})" if regrets else "-")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def run_comparison(datasets: Mapping[str, cdmer_io.FeatureSet],
                   experiments: Sequence[protocol.Experiment], workdir: str | pathlib.Path, *,
                   method_names: Sequence[str], grids: Mapping[str, Mapping[str, Sequence]] | None = None,
                   rules: Mapping[str, Rule] | None = None,
                   rule_descriptions: Mapping[str, str] | None = None,
                   classes: Sequence[int] = (1, 2, 3), precision: str = "float64",
                   extra_rows: Sequence[Mapping[str, Any]] = (),
                   progress: bool = True) -> list[dict[str, Any]]:
  """Runs every method on every experiment and writes the comparison's outputs.

  Args:
    datasets: database name -> features (every experiment's source and target).
    experiments: the experiments.
    workdir: output folder (reruns reuse finished method x experiment results).
    method_names: names from :data:`tgsr_jax.methods.NAMES`.
    grids: per method, a grid overriding its default (name -> values per axis).
    rules: label-free rules by name (``oracle`` is always applied).
    rule_descriptions: text for each rule's table title.
    classes: the label values of the files, in class-index order.
    precision: ``float64`` or ``float32``.
    extra_rows: result rows computed elsewhere (e.g. TGSR's own sweep) to put in the tables.
    progress: show one progress bar over every method's grid points.

  Returns:
    The rows of ``results.csv``.
  """
  workdir = pathlib.Path(workdir)
  rules = dict(rules or {})
  grids = dict(grids or {})
  chosen = [methods_lib.get(n) for n in method_names]
  params = {m.name: methods_lib.grid_points(grids.get(m.name, m.grid)) for m in chosen}
  total = len(experiments) * sum(len(next(iter(p.values()), [0])) for p in params.values())
  runs = []
  with tqdm(total=total, desc="comparison grid", unit="point", disable=not progress) as bar:
    for exp in experiments:
      for m in chosen:
        bar.set_postfix_str(f"{exp.name} {m.name}")
        runs.append(run_method(m, params[m.name], exp, datasets[exp.source],
                               datasets[exp.target], classes=classes, precision=precision,
                               rules=rules, out_dir=workdir / exp.folder / m.name))
        bar.update(len(runs[-1].acc))
        if runs[-1].failed.any():
          logging.warning("%s %s: %d of %d grid points failed (recorded in grid.csv)", exp.name,
                          m.name, int(runs[-1].failed.sum()), len(runs[-1].failed))
  rows = list(extra_rows) + results_rows(runs)
  write_results_csv(rows, workdir / "results.csv")
  rule_names = [ORACLE, *rules]
  descriptions = {ORACLE: ORACLE_DESCRIPTION, **(rule_descriptions or {})}
  md, table_csv, tex = comparison_tables(rows, rule_names, descriptions)
  atomic.write_text(workdir / "comparison.md", md)
  atomic.write_text(workdir / "comparison.csv", table_csv)
  atomic.write_text(workdir / "comparison.tex", tex)
  reproduction.write_reproduction(workdir / "reproduction.md", rows)
  if rules:
    atomic.write_text(workdir / "selection.md", selection_markdown(rows, rule_names))
  return rows
