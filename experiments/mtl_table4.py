r"""Runs the paper's Table 4 comparison over seeds and writes table4.md / .csv / .tex.

  python -m experiments.mtl_table4 --config configs/mtl.py[:base] --workdir DIR [--rows a,b] \
      [--seeds 3 | --seeds 0,4,7]

`--config` gives the base setting (e.g. `configs/mtl.py` for the CPU setting,
`configs/mtl.py:resnet34` plus data paths for the paper's); every row then changes only the
sharing / regulariser / ADA fields and trains, once per seed, into DIR/<row>/seed_<s>/. `--seeds N`
runs the N seeds config.seed, config.seed + 1, ... (default 3); a comma-separated list runs those
seeds. A seed sets `config.seed`, which draws the synthetic data, the train / test split and the
initialisation, so each seed is a whole replicate of the experiment and all rows of one seed see
the same data. Runs whose `summary.json` exists are not rerun (a finished run made under other
settings is refused, naming the fields that differ), and an interrupted run resumes from its
checkpoints, so the script is resumable.

Outputs (every table is titled with the data, the settings, the seeds and the evaluation rule):
  table4.md / table4.tex   mean +- sample standard deviation over seeds of every row, and the
                           PAIRED comparison of every row with single-task learning (per seed:
                           row - single; their mean, standard deviation, range and the seeds the
                           row is better on)
  table4.csv               the per-row means and standard deviations
  table4_paired.csv        the paired differences, one column per seed
  table4_seeds.csv         every (row, seed) run's numbers, from which the others are computed

Rows (the paper has ADA only with the trace-norm MTL models, so only those get an ADA twin):
  single                independent networks, no coupling
  hard_s1 .. hard_s4    hard sharing up to the end of stage 1-4 (ResNet-34: k = 6, 14, 26, 32)
  cross_stitch          cross-stitch units
  laf, tucker, tt       tensor trace-norm sharing
  laf_ada, tucker_ada, tt_ada   the same with adversarial domain alignment

Besides the tables, DIR gets `decrease_rates.png` (Fig. 3a-b: LAF, Tucker, TT) and
`embedding.png` (Fig. 3c: LAF without vs with ADA) from the first seed's runs when those rows ran.
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

# (record key, column title, scale printed, which direction is better)
METRICS = (
    ("expression_accuracy", "expression accuracy (%)", 100.0, "higher"),
    ("landmark_nme", "landmark NME, inter-pupil (%)", 100.0, "lower"),
    ("domain_separability", "domain separability", 1.0, None),
)
PAIRED_METRICS = tuple(m for m in METRICS if m[3] is not None)
REFERENCE_ROW = "single"
DEFAULT_SEEDS = 3
# The `config.data` field that picks the built-in data's variant (e.g. 'planted' / 'control');
# written into every title when the config has it.
DATA_VARIANT_FIELD = "synthetic"
EVALUATION_RULE = ("each run is evaluated once, at its final step, on its held-out test set (no "
                   "checkpoint selection)")


def define_flags():
  """The command line's flags. They are defined only when the module runs as a program, so that
  tests and notebooks can import its functions beside another entry point's flags."""
  config = config_flags.DEFINE_config_file("config", None, "Base config (configs/mtl.py).",
                                           lock_config=False)
  workdir = flags.DEFINE_string("workdir", None, "Output directory (one subfolder per row).")
  rows = flags.DEFINE_list("rows", list(ROWS), f"Rows to run, from {list(ROWS)}.")
  seeds = flags.DEFINE_list(
      "seeds", [str(DEFAULT_SEEDS)],
      "A count N (the seeds config.seed .. config.seed + N - 1) or a comma-separated list of "
      "seeds.")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir, rows, seeds


def seeds_from_flag(values) -> int | tuple[int, ...]:
  """`--seeds` as `resolve_seeds` takes it: one value is a count, several are the seeds."""
  values = [str(v).strip() for v in values if str(v).strip()]
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    raise ValueError(f"--seeds: expected a count N or a comma-separated list of integer seeds, "
                     f"got {','.join(values)!r}") from None
  if not numbers:
    raise ValueError("--seeds: expected a count N or a comma-separated list of seeds, got nothing")
  return numbers[0] if len(numbers) == 1 else tuple(numbers)


def resolve_seeds(spec, base_seed: int, *, name: str = "--seeds") -> tuple[int, ...]:
  """The seeds to run: an int N gives base_seed .. base_seed + N - 1; a sequence gives itself."""
  if isinstance(spec, bool):
    raise ValueError(f"{name}: expected a count or a list of seeds, got {spec!r}")
  if isinstance(spec, (int, np.integer)):
    if spec < 1:
      raise ValueError(f"{name}: a count of seeds must be >= 1, got {spec}")
    return tuple(int(base_seed) + i for i in range(int(spec)))
  seeds = tuple(int(s) for s in spec)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"{name}: expected distinct seeds, got {seeds}")
  return seeds


def row_config(base, row: str, seed: int | None = None):
  """The base config with the row's variant tokens applied (and `seed` set, when given)."""
  if row not in ROWS:
    raise ValueError(f"--rows: unknown row {row!r}; expected names from {list(ROWS)}")
  config = base.copy_and_resolve_references()
  config.ada.enabled = False
  for token in ROWS[row]:
    mtl_configs.apply_variant(config, token)
  if seed is not None:
    config.seed = int(seed)
  return config


def run_dir(workdir, row: str, seed: int) -> pathlib.Path:
  """Where the run of `row` with `seed` trains."""
  return pathlib.Path(workdir) / row / f"seed_{seed}"


def describe(config) -> dict:
  """Sharing / regulariser / ADA columns of a row."""
  sharing = config.model.sharing
  if sharing == "hard":
    k = settings.resolve_hard_share_convs(config.model.backbone, config.model.hard_share_convs)
    sharing = f"hard (k={k})"
  return {"sharing": sharing, "regulariser": config.regulariser.kind,
          "ada": "yes" if config.ada.enabled else "no"}


def train_or_read(config, run_workdir, name: str) -> dict:
  """The summary of a finished run in `run_workdir`, or of training it (resuming) now.

  A finished run made under other settings is refused, naming the fields that differ.
  """
  run_workdir = pathlib.Path(run_workdir)
  summary_path = run_workdir / "summary.json"
  if summary_path.is_file():
    try:
      runs.check_run(run_workdir, config, on_mismatch="refuse",
                     hint=f"; use another --workdir or delete {run_workdir}")
    except runfolder.FingerprintMismatch as e:
      raise ValueError(f"{name}: {e}") from e
    logging.info("%s: finished earlier, reading %s", name, summary_path)
    return json.loads(summary_path.read_text())
  logging.info("%s: training into %s", name, run_workdir)
  return train.train_and_evaluate(config, run_workdir)


def run_rows(base, workdir, rows, seeds=None) -> list:
  """Trains every (row, seed) run not finished yet and returns their records, seed-major.

  Args:
    base: the base config (configs/mtl.py).
    workdir: the output folder.
    rows: names from `ROWS`.
    seeds: the seeds (default: `base.seed` only).

  Returns:
    One dict per run: row, seed, sharing, regulariser, ada, the `METRICS` and the data.
  """
  workdir = pathlib.Path(workdir)
  seeds = (int(base.seed),) if seeds is None else tuple(seeds)
  # Every row name and data field is checked before the first run trains.
  configs = {(row, seed): row_config(base, row, seed) for seed in seeds for row in rows}
  for config in configs.values():
    for task in config.tasks:
      datasets.check_data_config(task, config.data[task])
  records = []
  for seed in seeds:  # a whole replicate at a time: an early stop leaves complete seeds
    for row in rows:
      config = configs[(row, seed)]
      summary = train_or_read(config, run_dir(workdir, row, seed), f"row {row}, seed {seed}")
      records.append({"row": row, "seed": seed, **describe(config),
                      "expression_accuracy": summary["eval"].get("expression_accuracy"),
                      # Table 5 lists it beside its baselines (None in runs made before).
                      "expression_mf1": summary["eval"].get("expression_mf1"),
                      "landmark_nme": summary["eval"].get("landmark_nme_inter_pupil"),
                      "domain_separability": summary.get("domain_separability"),
                      # Summaries written before the data were named get them from the config.
                      "data": summary.get("data") or datasets.describe_data(
                          tuple(config.tasks), lambda t: config.data[t], config.seed)})
  return records


# ------------------------------------------------------------------------------- statistics


def mean_and_std(values) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (n - 1; None for one value) of the non-None values."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def row_statistics(records) -> list[dict]:
  """Per row (in first-seen order): its columns, seeds, and mean / std of every metric."""
  by_row = {}
  for r in records:
    by_row.setdefault(r["row"], []).append(r)
  out = []
  for row, runs_of_row in by_row.items():
    entry = {"row": row, **{k: runs_of_row[0][k] for k in ("sharing", "regulariser", "ada")},
             "seeds": [r["seed"] for r in runs_of_row]}
    for key, *_ in METRICS:
      entry[f"{key}_mean"], entry[f"{key}_std"] = mean_and_std(r[key] for r in runs_of_row)
    out.append(entry)
  return out


def paired_comparison(records, reference: str = REFERENCE_ROW) -> list[dict]:
  """Every other row against `reference` on the same seeds: per-seed differences and spread.

  The difference is row - reference on each seed the two share (in percentage points where the
  metric is printed in percent: see `METRICS`); `better_on` counts the seeds on which the row is
  better (higher accuracy, lower NME). Empty when `reference` did not run.
  """
  ref = {r["seed"]: r for r in records if r["row"] == reference}
  out = []
  if not ref:
    return out
  rows = list(dict.fromkeys(r["row"] for r in records if r["row"] != reference))
  for row in rows:
    for key, _, _, better in PAIRED_METRICS:
      diffs = {r["seed"]: float(r[key]) - float(ref[r["seed"]][key])
               for r in records if r["row"] == row and r["seed"] in ref
               and r[key] is not None and ref[r["seed"]][key] is not None}
      if not diffs:
        continue
      d = np.array(list(diffs.values()))
      mean, std = mean_and_std(d)
      wins = int(np.sum(d > 0 if better == "higher" else d < 0))
      out.append({"row": row, "metric": key, "better": better, "diffs": diffs, "mean": mean,
                  "std": std, "min": float(d.min()), "max": float(d.max()), "better_on": wins,
                  "n": len(diffs)})
  return out


# ----------------------------------------------------------------------------------- titles


def data_title(config) -> str:
  """The data of a config's tasks, seed-free (the seeds are named separately)."""
  variant = config.data.get(DATA_VARIANT_FIELD, None)
  parts = []
  for task in config.tasks:
    d = config.data[task]
    if d.source == "synthetic":
      kind = "built-in synthetic data" + (f" (variant {variant!r})" if variant else "")
      parts.append(f"{task}: {kind}, {d.num} faces, {d.test_fraction:.0%} held out for testing")
    else:
      test = (f"test set {d.test_path}" if d.test_path else
              f"{d.test_fraction:.0%} held out for testing (by subject where known)")
      parts.append(f"{task}: {d.source} {d.path}, {test}")
  return "; ".join(parts)


def settings_title(config) -> str:
  """The training settings every row shares (the rows change sharing / regulariser / ADA)."""
  opt = config.optimizer
  optimiser = f"{opt.name} (lr {opt.learning_rate:g}"
  optimiser += f", momentum {opt.momentum:g}" if opt.name == "sgd" else ""
  optimiser += f", weight decay {opt.weight_decay:g})" if opt.weight_decay else ")"
  reg = config.regulariser
  return (f"backbone {config.model.backbone}, {config.image_size} x {config.image_size} images, "
          f"{config.num_steps} steps of {optimiser}, batch {config.batch_size} per task, "
          f"augmentation {'on' if config.augment.enabled else 'off'}; trace-norm strength "
          f"{reg.strength:g} ({reg.method}); ADA, in the rows that have it: {config.ada.mode}, "
          f"weight {config.ada.weight:g}")


def seeds_title(seeds, config) -> str:
  synthetic = any(config.data[t].source == "synthetic" for t in config.tasks)
  drawn = "the synthetic data, " if synthetic else ""
  return (f"{', '.join(map(str, seeds))} (each seed draws {drawn}the train / test split and "
          f"the initialisation; every row of a seed sees the same data)")


def title_lines(what: str, config, seeds) -> list[str]:
  """The title of a table: what it is, its data, settings, seeds and evaluation rule."""
  return [what, f"Data: {data_title(config)}.", f"Settings: {settings_title(config)}.",
          f"Seeds: {seeds_title(seeds, config)}.",
          f"Evaluation: {EVALUATION_RULE}; mean +- sample standard deviation (n - 1) over the "
          f"seeds."]


# ---------------------------------------------------------------------------------- writers


def _fmt(value, spec):
  return "-" if value is None else format(value, spec)


def _cell(mean, std, scale, spec, sep=" ± "):
  if mean is None:
    return "-"
  text = format(scale * mean, spec)
  return text if std is None else f"{text}{sep}{format(scale * std, spec.lstrip('+'))}"


def _signed(value, scale):
  return "-" if value is None else f"{scale * value:+.2f}"


def _metric(key):
  return next(m for m in METRICS if m[0] == key)


def _paired_cells(p):
  _, title, scale, better = _metric(p["metric"])
  unit = " (points)" if scale == 100.0 else ""
  return (p["row"], f"{title.split(' (')[0]}{unit}, {better} is better",
          [_signed(p["diffs"].get(s), scale) for s in p["seeds"]],
          _cell(p["mean"], p["std"], scale, "+.2f"),
          f"{_signed(p['min'], scale)} .. {_signed(p['max'], scale)}",
          f"{p['better_on']} of {p['n']}")


def _csv_text(title, fields, rows) -> str:
  buf = io.StringIO()
  for line in title:
    buf.write(f"# {line}\n")
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


def _latex(text: str) -> str:
  replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$"}
  return "".join(replacements.get(ch, ch) for ch in text)


def _latex_table(title, header, rows, align) -> list[str]:
  lines = [f"% {line}" for line in title]
  lines += [r"\begin{table}[t]", r"\centering", r"\caption{" + _latex(" ".join(title)) + "}",
            r"\begin{tabular}{" + align + "}", r"\toprule",
            " & ".join(_latex(h) for h in header) + r" \\", r"\midrule"]
  lines += [" & ".join(_latex(c) for c in row) + r" \\" for row in rows]
  lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
  return lines


def format_tables(records, config, seeds) -> dict[str, str]:
  """table4.md / .tex / .csv, table4_paired.csv and table4_seeds.csv as texts (file -> text).

  Args:
    records: from `run_rows`.
    config: the base config (for the titles).
    seeds: the seeds run.
  """
  stats = row_statistics(records)
  paired = paired_comparison(records)
  seeds = list(seeds)
  for p in paired:
    p["seeds"] = seeds
  title = title_lines("Table 4: multi-task learning of expressions and landmarks (mean ± s.d. "
                      f"over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}).", config, seeds)
  paired_title = title_lines(
      f"Table 4, paired with single-task learning: row - {REFERENCE_ROW} on the same seed.",
      config, seeds)

  header = ["row", "sharing", "trace norm", "ADA", "seeds"] + [m[1] for m in METRICS]
  body = [[s["row"], s["sharing"], s["regulariser"], s["ada"], str(len(s["seeds"]))]
          + [_cell(s[f"{k}_mean"], s[f"{k}_std"], scale, ".2f" if scale == 100.0 else ".3f")
             for k, _, scale, _ in METRICS] for s in stats]
  paired_header = (["row", "metric"] + [f"seed {s}" for s in seeds]
                   + ["mean ± s.d.", "range", "better on (seeds)"])
  paired_body = [[c[0], c[1], *c[2], c[3], c[4], c[5]] for c in map(_paired_cells, paired)]

  def md_table(head, rows, numeric_from):
    align = ["---"] * numeric_from + ["---:"] * (len(head) - numeric_from)
    return (["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(c.replace("|", r"\|") for c in row) + " |" for row in rows])

  md = [f"**{title[0]}**", ""] + [line for line in title[1:]] + [""]
  md += md_table(header, body, 4) + [""]
  if paired:
    md += [f"**{paired_title[0]}**", "",
           "Differences in percentage points for the percentages; the same data, settings, seeds "
           "and evaluation as above. s.d. is the spread of the per-seed differences (n - 1).", ""]
    md += md_table(paired_header, paired_body, 2) + [""]
  else:
    md += [f"No paired comparison: the reference row {REFERENCE_ROW!r} did not run.", ""]
  md.append("Figures (decrease_rates.png, embedding.png) show the first seed's runs "
            f"(seed {seeds[0]}).")
  for seed in seeds:
    sources = {}
    for r in records:
      if r["seed"] == seed:
        text = "; ".join(f"{task}: {source}" for task, source in (r.get("data") or {}).items())
        sources.setdefault(text, []).append(r["row"])
    md.append(f"Data of seed {seed}: " + " | ".join(
        text if len(sources) == 1 else f"{text} (rows {', '.join(who)})"
        for text, who in sources.items()) + ".")

  tex = _latex_table(title, header, body, "lllll" + "r" * len(METRICS))
  if paired:
    tex += _latex_table(paired_title, paired_header, paired_body,
                        "ll" + "r" * (len(seeds) + 3))

  stat_fields = ["row", "sharing", "regulariser", "ada", "num_seeds"] + [
      f"{k}_{x}" for k, *_ in METRICS for x in ("mean", "std")]
  stat_rows = [{**s, "num_seeds": len(s["seeds"])} for s in stats]
  paired_fields = (["row", "metric", "better"] + [f"seed_{s}" for s in seeds]
                   + ["mean", "std", "min", "max", "better_on", "n"])
  paired_rows = [{**p, **{f"seed_{s}": p["diffs"].get(s, "") for s in seeds}} for p in paired]
  seed_fields = ["row", "seed", "sharing", "regulariser", "ada"] + [m[0] for m in METRICS]
  return {
      "table4.md": "\n".join(md) + "\n",
      "table4.tex": "\n".join(tex),
      "table4.csv": _csv_text(title, stat_fields, stat_rows),
      "table4_paired.csv": _csv_text(paired_title, paired_fields, paired_rows),
      "table4_seeds.csv": _csv_text(title[1:], seed_fields, records),
  }


def write_tables(records, workdir, config, seeds):
  """Writes `format_tables`' files into `workdir` atomically (all formatted before any write)."""
  texts = format_tables(records, config, seeds)
  for name, text in texts.items():
    atomic.write_text(pathlib.Path(workdir) / name, text)


def write_figures(workdir, rows, seed):
  """Fig. 3a-b (decrease rates of LAF / Tucker / TT) and Fig. 3c (LAF without / with ADA)."""
  workdir = pathlib.Path(workdir)
  rates = {}
  for row in ("laf", "tucker", "tt"):
    path = run_dir(workdir, row, seed) / "summary.json"
    if row in rows and path.is_file():
      summary = json.loads(path.read_text())
      if "decrease_rates" in summary:
        rates[row.upper() if row != "tucker" else "Tucker"] = summary["decrease_rates"]
  if rates:
    evaluate.plot_decrease_rates(rates, workdir / "decrease_rates.png")
  panels = {}
  for row, title in (("laf", "without ADA"), ("laf_ada", "with ADA")):
    path = run_dir(workdir, row, seed) / "features.npz"
    if row in rows and path.is_file():
      with np.load(path) as f:
        panels[title] = (f["expression"], f["landmarks"])
  if panels:
    evaluate.plot_embeddings(panels, workdir / "embedding.png",
                             labels=("expression dataset", "landmark dataset"))


def run(base, workdir, rows=tuple(ROWS), seeds=DEFAULT_SEEDS) -> list:
  """Trains the (row, seed) runs not finished yet, writes the tables and the figures.

  Args:
    base: the base config (configs/mtl.py).
    workdir: the output folder.
    rows: names from `ROWS`.
    seeds: a count (from `base.seed`) or the seeds, see `resolve_seeds`.

  Returns:
    The records of `run_rows`.
  """
  workdir = pathlib.Path(workdir)
  seeds = resolve_seeds(seeds, base.seed)
  rows = list(rows)
  for row in rows:
    if row not in ROWS:  # before the folder is made
      raise ValueError(f"--rows: unknown row {row!r}; expected names from {list(ROWS)}")
  workdir.mkdir(parents=True, exist_ok=True)
  records = run_rows(base, workdir, rows, seeds)
  write_tables(records, workdir, base, seeds)
  write_figures(workdir, rows, seeds[0])
  return records


def main(argv, config_flag, workdir_flag, rows_flag, seeds_flag):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run(config_flag.value, workdir_flag.value, rows_flag.value, seeds_from_flag(seeds_flag.value))
  print((pathlib.Path(workdir_flag.value) / "table4.md").read_text())


if __name__ == "__main__":
  _flags = define_flags()
  cli.run(lambda argv: main(argv, *_flags))
