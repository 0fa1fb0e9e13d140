"""The published cells of the TGSR paper's Tables II/III beside the values computed here.

The package ships every published cell (``tgsr_jax/data/published_tables.csv``: method, type,
experiment, M-F1, ACC in %, source), the facts of the papers. :func:`write_reproduction` puts them
beside a run's results and flags, without any hand-kept list:

* **impossible** cells: an ACC that is no k / n_t for the target's n_t test samples (e.g. 49.83 %
  of 71 samples), and a printed average that is not the mean of its printed cells;
* **differs**: a computed value that does not round to the published one (4 decimals for M-F1,
  2 for ACC in %), e.g. a published cell that does not come out of the authors' own code.

Only the ``oracle`` rule (best M-F1 on the labelled target, the rule of every published row) is
compared with the published cells.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import io
import math
import os
import pathlib
from typing import Iterable, Mapping

import numpy as np

from subtle_core import atomic

# Test samples of each database in the benchmark's feature files (C: CASME II, H: SMIC-HS,
# V: SMIC-VIS, N: SMIC-NIR), used to check whether a published ACC can exist.
TARGET_SIZES = {"C": 130, "H": 164, "V": 71, "N": 71}


@dataclasses.dataclass(frozen=True)
class PublishedCell:
  method: str
  kind: str          # TYPE-I or TYPE-II
  experiment: str    # e.g. V->N, or Average
  mf1: float         # NaN where not printed
  acc_percent: float  # NaN where not printed
  source: str


def published_cells(path: str | os.PathLike | None = None) -> list[PublishedCell]:
  """The published cells (the shipped table, or the CSV at ``path`` in the same format)."""
  if path is None:
    text = (importlib.resources.files("tgsr_jax") / "data" / "published_tables.csv").read_text()
  else:
    text = pathlib.Path(path).read_text()
  rows = list(csv.DictReader(io.StringIO(text)))
  expected = {"method", "type", "experiment", "mf1", "acc_percent", "source"}
  if not rows or set(rows[0]) != expected:
    raise ValueError(f"{path or 'published_tables.csv'}: expected columns {sorted(expected)}")
  number = lambda s: float(s) if s.strip() else math.nan  # noqa: E731
  return [PublishedCell(r["method"], r["type"], r["experiment"], number(r["mf1"]),
                        number(r["acc_percent"]), r["source"]) for r in rows]


def acc_is_possible(acc_percent: float, num_samples: int) -> bool:
  """Whether ``acc_percent`` (2 decimals) is k / num_samples for some integer k."""
  k = round(acc_percent / 100 * num_samples)
  return any(round(100 * j / num_samples, 2) == round(acc_percent, 2)
             for j in (k - 1, k, k + 1) if 0 <= j <= num_samples)


def cell_flags(cell: PublishedCell, cells: Iterable[PublishedCell]) -> list[str]:
  """Why a published cell cannot be what it claims (empty when nothing is wrong)."""
  flags = []
  if cell.experiment == "Average":
    members = [c for c in cells if c.method == cell.method and c.kind == cell.kind
               and c.experiment != "Average" and c.source == cell.source]
    for field, digits in (("acc_percent", 2), ("mf1", 4)):
      printed = getattr(cell, field)
      values = [getattr(c, field) for c in members]
      if math.isnan(printed) or not values or any(math.isnan(v) for v in values):
        continue
      mean = float(np.mean(values))
      # Each printed cell is rounded, so their mean may miss the printed average by one unit.
      if abs(mean - printed) > 1.1 * 10.0**-digits:
        what = "ACC" if field == "acc_percent" else "M-F1"
        flags.append(f"inconsistent: the printed average {what} {printed:.{digits}f} is not the "
                     f"mean of its cells ({mean:.{digits}f})")
  else:
    target = cell.experiment.split("->")[-1]
    n = TARGET_SIZES.get(target)
    if n is not None and not math.isnan(cell.acc_percent) and not acc_is_possible(
        cell.acc_percent, n):
      flags.append(f"impossible: ACC {cell.acc_percent:.2f} % is no k / {n}")
  return flags


def _differs(published: float, computed: float, digits: int) -> bool:
  return not (math.isnan(published) or math.isnan(computed)) and round(computed, digits) != round(
      published, digits)


def reproduction_markdown(results: Iterable[Mapping], cells: list[PublishedCell] | None = None,
                          *, title: str = "Reproduction of the TGSR paper's Tables II/III") -> str:
  """The reproduction report.

  Args:
    results: rows with ``method, selection, experiment, mf1, acc`` (acc as a fraction), as in
      ``results.csv``; only ``selection == 'oracle'`` rows are compared.
    cells: the published cells (default: the shipped table).
    title: the report's heading.

  Returns:
    Markdown: one table per method with every published cell for which a value was computed,
    the computed value, the difference and the flags; then the published cells that cannot be
    what they claim, computed or not.
  """
  cells = published_cells() if cells is None else cells
  computed = {(r["method"], r["experiment"]): (float(r["mf1"]), 100 * float(r["acc"]))
              for r in results if r["selection"] == "oracle"}
  lines = [f"# {title}", "",
           "Published cells (M-F1, ACC %) beside the values computed here with the same rule: the "
           "best M-F1 on the labelled target (the oracle rule of every published row). "
           "Differences are computed - published.", ""]
  for method in dict.fromkeys(c.method for c in cells):
    rows = []
    for cell in (c for c in cells if c.method == method):
      if cell.experiment == "Average":
        members = [c.experiment for c in cells if c.method == method and c.kind == cell.kind
                   and c.experiment != "Average"]
        got = [computed.get((method, e)) for e in members]
        if not members or any(g is None for g in got):
          continue
        value = (float(np.mean([g[0] for g in got])), float(np.mean([g[1] for g in got])))
      else:
        value = computed.get((method, cell.experiment))
        if value is None:
          continue
      flags = cell_flags(cell, cells)
      if _differs(cell.mf1, value[0], 4) or _differs(cell.acc_percent, value[1], 2):
        flags.append("differs")
      rows.append(f"| {cell.kind} | {cell.experiment} | {_fmt(cell.mf1, 4)} / "
                  f"{_fmt(cell.acc_percent, 2)} | {value[0]:.4f} / {value[1]:.2f} | "
                  f"{_signed(value[0] - cell.mf1, 4)} / {_signed(value[1] - cell.acc_percent, 2)} "
                  f"| {'; '.join(flags) or 'reproduced'} |")
    if rows:
      lines += [f"## {method}", "", "| type | experiment | published | computed | difference "
                "| note |", "| --- | --- | --- | --- | --- | --- |", *rows, ""]
  flagged = [(c, f) for c in cells for f in cell_flags(c, cells)]
  if flagged:
    lines += ["## Published cells that cannot be what they claim", ""]
    lines += [f"- {c.method} {c.kind} {c.experiment} ({c.source}): {f}" for c, f in flagged]
    lines.append("")
  return "\n".join(lines)


def write_reproduction(path: str | os.PathLike, results: Iterable[Mapping], **kwargs) -> str:
  """Writes :func:`reproduction_markdown` to ``path`` atomically and returns the text."""
  text = reproduction_markdown(list(results), **kwargs)
  atomic.write_text(path, text)
  return text


def _fmt(value: float, digits: int) -> str:
  return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _signed(value: float, digits: int) -> str:
  return "-" if math.isnan(value) else f"{value:+.{digits}f}"
