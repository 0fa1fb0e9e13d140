r"""Runs the paper's Table 4 comparison and writes table4.md / table4.csv.

  python -m experiments.mtl_table4 --config configs/mtl.py[:base] --workdir DIR [--rows a,b]

`--config` gives the base setting (e.g. `configs/mtl.py` for the CPU setting,
`configs/mtl.py:resnet34` plus data paths for the paper's); every row then changes only the
sharing / regulariser / ADA fields and trains into DIR/<row>/. Rows whose `summary.json` exists
are not rerun (a finished row made under other settings is refused, naming the fields that
differ), and an interrupted row resumes from its checkpoints, so the script is resumable.

Rows (the paper has ADA only with the trace-norm MTL models, so only those get an ADA twin):
  single                independent networks, no coupling
  hard_s1 .. hard_s4    hard sharing up to the end of stage 1-4 (ResNet-34: k = 6, 14, 26, 32)
  cross_stitch          cross-stitch units
  laf, tucker, tt       tensor trace-norm sharing
  laf_ada, tucker_ada, tt_ada   the same with adversarial domain alignment

Besides the table, DIR gets `decrease_rates.png` (Fig. 3a-b: LAF, Tucker, TT) and
`embedding.png` (Fig. 3c: LAF without vs with ADA) when those rows ran.
"""
import csv
import io
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from configs import mtl as mtl_configs
from mtl_flax import datasets
from mtl_flax import evaluate
from mtl_flax import runs
from mtl_flax import settings
from mtl_flax import train
from subtle_core import atomic
from subtle_core import cli
from subtle_core import runfolder

ROWS = {
    "single": ("single",),
    "hard_s1": ("hardstage1",),
    "hard_s2": ("hardstage2",),
    "hard_s3": ("hardstage3",),
    "hard_s4": ("hardstage4",),
    "cross_stitch": ("cross_stitch",),
    "laf": ("laf",),
    "tucker": ("tucker",),
    "tt": ("tt",),
    "laf_ada": ("laf", "ada"),
    "tucker_ada": ("tucker", "ada"),
    "tt_ada": ("tt", "ada"),
}


def define_flags():
  """The command line's flags. They are defined only when the module runs as a program, so that
  tests and notebooks can import its functions beside another entry point's flags."""
  config = config_flags.DEFINE_config_file("config", None, "Base config (configs/mtl.py).",
                                           lock_config=False)
  workdir = flags.DEFINE_string("workdir", None, "Output directory (one subfolder per row).")
  rows = flags.DEFINE_list("rows", list(ROWS), f"Rows to run, from {list(ROWS)}.")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir, rows


def row_config(base, row: str):
  """The base config with the row's variant tokens applied."""
  if row not in ROWS:
    raise ValueError(f"--rows: unknown row {row!r}; expected names from {list(ROWS)}")
  config = base.copy_and_resolve_references()
  config.ada.enabled = False
  for token in ROWS[row]:
    mtl_configs.apply_variant(config, token)
  return config


def describe(config) -> dict:
  """Sharing / regulariser / ADA columns of a row."""
  sharing = config.model.sharing
  if sharing == "hard":
    k = settings.resolve_hard_share_convs(config.model.backbone, config.model.hard_share_convs)
    sharing = f"hard (k={k})"
  return {"sharing": sharing, "regulariser": config.regulariser.kind,
          "ada": "yes" if config.ada.enabled else "no"}


def run_rows(base, workdir, rows) -> list:
  """Trains every row not finished yet and returns the table records."""
  workdir = pathlib.Path(workdir)
  # Every row name is checked before the first row trains.
  configs = {row: row_config(base, row) for row in rows}
  for config in configs.values():  # and the data fields
    for task in config.tasks:
      datasets.check_data_config(task, config.data[task])
  records = []
  for row in rows:
    config = configs[row]
    row_dir = workdir / row
    summary_path = row_dir / "summary.json"
    if summary_path.is_file():
      # A finished row made under other settings is refused, naming the fields that differ.
      try:
        runs.check_run(row_dir, config, on_mismatch="refuse",
                       hint=f"; use another --workdir or delete {row_dir}")
      except runfolder.FingerprintMismatch as e:
        raise ValueError(f"row {row}: {e}") from e
      logging.info("row %s: finished earlier, reading %s", row, summary_path)
      summary = json.loads(summary_path.read_text())
    else:
      logging.info("row %s: training into %s", row, row_dir)
      summary = train.train_and_evaluate(config, row_dir)
    records.append({"row": row, **describe(config),
                    "expression_accuracy": summary["eval"].get("expression_accuracy"),
                    "landmark_nme": summary["eval"].get("landmark_nme_inter_pupil"),
                    "domain_separability": summary.get("domain_separability"),
                    # Summaries written before the data were named get them from the config.
                    "data": summary.get("data") or datasets.describe_data(
                        tuple(config.tasks), lambda t: config.data[t], config.seed)})
  return records


def _fmt(value, spec):
  return "-" if value is None else format(value, spec)


def write_tables(records, workdir):
  """Writes table4.csv and table4.md atomically."""
  workdir = pathlib.Path(workdir)
  fields = ["row", "sharing", "regulariser", "ada", "expression_accuracy", "landmark_nme",
            "domain_separability"]
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
  writer.writeheader()
  writer.writerows(records)
  md = ["| row | sharing | trace norm | ADA | expression accuracy (%) | landmark NME, "
        "inter-pupil (%) | domain separability |", "|---|---|---|---|---:|---:|---:|"]
  for r in records:
    acc = None if r["expression_accuracy"] is None else 100 * r["expression_accuracy"]
    nme = None if r["landmark_nme"] is None else 100 * r["landmark_nme"]
    md.append(f"| {r['row']} | {r['sharing']} | {r['regulariser']} | {r['ada']} | "
              f"{_fmt(acc, '.2f')} | {_fmt(nme, '.2f')} | "
              f"{_fmt(r['domain_separability'], '.3f')} |")
  md.append("")
  md.append("Each row is evaluated once, at its final step, on the held-out test sets (no "
            "checkpoint selection).")
  sources = {}
  for r in records:
    for task, source in (r.get("data") or {}).items():
      sources.setdefault(f"{task}: {source}", []).append(r["row"])
  for text, rows in sources.items():
    which = "" if len(rows) == len(records) else f" (rows {', '.join(rows)})"
    md.append(f"Data, {text}{which}.")
  for name, text in (("table4.csv", buf.getvalue()), ("table4.md", "\n".join(md) + "\n")):
    atomic.write_text(workdir / name, text)


def write_figures(workdir, rows):
  """Fig. 3a-b (decrease rates of LAF / Tucker / TT) and Fig. 3c (LAF without / with ADA)."""
  workdir = pathlib.Path(workdir)
  rates = {}
  for row in ("laf", "tucker", "tt"):
    path = workdir / row / "summary.json"
    if row in rows and path.is_file():
      summary = json.loads(path.read_text())
      if "decrease_rates" in summary:
        rates[row.upper() if row != "tucker" else "Tucker"] = summary["decrease_rates"]
  if rates:
    evaluate.plot_decrease_rates(rates, workdir / "decrease_rates.png")
  panels = {}
  for row, title in (("laf", "without ADA"), ("laf_ada", "with ADA")):
    path = workdir / row / "features.npz"
    if row in rows and path.is_file():
      with np.load(path) as f:
        panels[title] = (f["expression"], f["landmarks"])
  if panels:
    evaluate.plot_embeddings(panels, workdir / "embedding.png",
                             labels=("expression dataset", "landmark dataset"))


def run(base, workdir, rows=tuple(ROWS)) -> list:
  """Trains the rows not finished yet, writes table4.md / table4.csv and the figures."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  records = run_rows(base, workdir, rows)
  write_tables(records, workdir)
  write_figures(workdir, rows)
  return records


def main(argv, config_flag, workdir_flag, rows_flag):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run(config_flag.value, workdir_flag.value, rows_flag.value)
  print((pathlib.Path(workdir_flag.value) / "table4.md").read_text())


if __name__ == "__main__":
  _flags = define_flags()
  cli.run(lambda argv: main(argv, *_flags))
