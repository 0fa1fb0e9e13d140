"""What a CDMER run writes: grid.csv, best.json, the figures and the summary tables.

Pure writers (every file atomic); :mod:`tgsr_jax.experiment` computes what they write.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import pathlib
from typing import Any

import numpy as np

from subtle_core import atomic
from tgsr_jax import layout
from tgsr_jax import plots
from tgsr_jax import protocol
from tgsr_jax import sweep as sweep_lib

GRID_COLUMNS = ("kappa", "xi", "acc", "mf1", "iterations", "converged")


def write_grid_csv(result: sweep_lib.SweepResult, path: pathlib.Path) -> pathlib.Path:
  """``kappa,xi,acc,mf1,iterations,converged`` for every grid point, in grid order."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(GRID_COLUMNS)
  for k, x, a, m, it, cv in zip(result.kappa, result.xi, result.acc, result.mf1,
                                result.iterations, result.converged):
    writer.writerow([int(k), repr(float(x)), repr(float(a)), repr(float(m)), int(it),
                     int(bool(cv))])
  return atomic.write_text(path, buf.getvalue())


def write_experiment(out_dir: pathlib.Path, result: sweep_lib.SweepResult, best: dict[str, Any],
                     selected: np.ndarray, group_weights: np.ndarray) -> None:
  """grid.csv, best.json and the figures of one experiment.

  Args:
    out_dir: the experiment's folder.
    result: every grid point's scores.
    best: the contents of best.json (as built by :func:`tgsr_jax.experiment.best_record`).
    selected: (K,) bool, the groups the refitted best point keeps.
    group_weights: (K,) their norms (the shade of Fig. 2).
  """
  write_grid_csv(result, out_dir / "grid.csv")
  warn_convergence(best)
  atomic.write_text(out_dir / "best.json", json.dumps(best, indent=2) + "\n")
  name, best_kappa, best_xi = best["experiment"], best["kappa"], best["xi"]
  note = ("groups are the benchmark's consecutive 177-column chunks, drawn at region i as the "
          "authors do" if best["grouping"] == "contiguous" else "groups are facial regions")
  if selected.size == layout.num_regions():
    plots.plot_selected_regions(
        selected, out_dir / "regions.png", weights=group_weights,
        title=f"{name}: kappa={best_kappa}, xi={best_xi:g}", note=note)
  at_xi = np.isclose(result.xi, best_xi)
  plots.plot_sensitivity(result.kappa[at_xi], result.mf1[at_xi], result.acc[at_xi],
                         out_dir / "sensitivity_kappa.png", xlabel="kappa",
                         title=f"{name}, xi = {best_xi:g}")
  at_kappa = result.kappa == best_kappa
  plots.plot_sensitivity(result.xi[at_kappa], result.mf1[at_kappa], result.acc[at_kappa],
                         out_dir / "sensitivity_xi.png", xlabel="xi", log_x=True,
                         title=f"{name}, kappa = {best_kappa}")


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


def write_comparison_summary(rows: list[dict[str, Any]], runs: list, bests: list[dict[str, Any]],
                             workdir: pathlib.Path, setup: dict[str, Any],
                             rules: tuple[str, ...]) -> str:
  """summary.md / .csv / .tex as the comparison's tables, one per rule, and summary.json.

  summary.md opens with the setup lines of :func:`write_summary` (data, TGSR's grid, precision,
  grouping) and every method's grid, then one table per selection rule (methods x experiments,
  M-F1 / ACC %, averages per type), then TGSR's convergence warnings.

  Args:
    rows: the comparison's result rows (``results.csv``).
    runs: its :class:`tgsr_jax.comparison.MethodRun` objects (for the grids).
    bests: TGSR's best.json contents (empty when TGSR is not compared).
    workdir: the run's folder.
    setup: :func:`tgsr_jax.experiment.describe_setup`.
    rules: the selection rules, oracle first.

  Returns:
    The text of summary.md.
  """
  from tgsr_jax import comparison  # noqa: PLC0415  (comparison imports the methods)
  head = [line for line in setup_lines(setup) if not line.startswith("- Selection:")]
  if not bests:
    head = [line for line in head if not line.startswith("- Grid:")]
  else:
    head = [line.replace("- Grid:", "- TGSR grid:") for line in head]
  head += comparison.grid_lines(runs)
  head.append(f"- Selection rules: {', '.join(rules)} (one table each; see selection.md for the "
              "label-free rules' regret, reproduction.md for the published cells)")
  for b in bests:
    note = convergence_note(b)
    if note:
      head.append(f"- Warning: TGSR {b['experiment']}: {note}")
  not_converged = [f"{r.method} {r.experiment.name} ({rule})" for r in runs
                   for rule, g in r.picks.items()
                   if r.converged is not None and g >= 0 and not bool(r.converged[g])]
  if not_converged:
    head.append("- Not converged at the picked point: " + ", ".join(not_converged))
  text = comparison.write_tables(
      workdir, "summary", rows, list(rules),
      title="Cross-database micro-expression recognition: methods x experiments", head=head)
  record = {"setup": setup, "grids": comparison.grid_lines(runs), "results": rows,
            "tgsr": [{k: b[k] for k in ("experiment", "mf1", "acc", "kappa", "xi", "converged",
                                        "converged_points", "grid_points", "source_file",
                                        "target_file")} for b in bests]}
  atomic.write_text(workdir / "summary.json",
                    json.dumps(record, indent=2, default=_json_default) + "\n")
  return text


def _json_default(value):
  if isinstance(value, float) and np.isnan(value):
    return None
  return str(value)
