r"""Tables 4 and 5 of the MTL paper (and Fig. 3's plots) in one resumable command.

  python -m experiments.mtl_tables --config configs/mtl_tables.py[:variant] --workdir DIR

(see configs/mtl_tables.py for the real-data and smoke commands). For every seed:

* Table 4 (experiments/mtl_table4.py): each row of `tables.table4_rows` trains into
  DIR/<row>/seed_<s>/; DIR gets table4.md / .tex / .csv, table4_paired.csv, table4_seeds.csv and
  the Fig. 3 plots decrease_rates.png and embedding.png.
* Table 5, the expression task: the hand-crafted descriptors of `tables.handcrafted` (LBP, LPQ,
  EOH) with a linear SVM on the seed's training faces, scored on its test faces (the same split
  as the networks'), cached in DIR/table5/handcrafted/seed_<s>.json; the plain CNNs of
  `tables.table5_networks` trained as single-task expression networks by the same loop into
  DIR/table5/<network>/seed_<s>/; and Table 4's rows' expression accuracy beside them. DIR gets
  table5.md / .tex / .csv (mean +- sample standard deviation over the seeds).

Everything is checked (row and network names, the data fields) before the first run trains.
Finished runs are read, not recomputed (a finished run made under other settings is refused,
naming the fields that differ); an interrupted run resumes from its checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import mtl_table4
from mtl_flax import datasets
from mtl_flax.baselines import table5
from mtl_flax.models import multitask
from subtle_core import atomic
from subtle_core import cli

NETWORK_NAMES = {"alexnet": "AlexNet-style", "alexnet_tiny": "AlexNet-style (1/8 width)",
                 "vgg": "VGG-16-style", "vgg11": "VGG-11-style",
                 "vgg_tiny": "VGG-style (1/8 width)"}


def split_config(config):
  """(the MTL base config without `tables`, the `tables` fields)."""
  tables = config.tables
  base = config.copy_and_resolve_references()
  base.unlock()
  del base["tables"]
  return base, tables


def table_seeds(base, tables) -> tuple[int, ...]:
  """`tables.seeds` when set, else `tables.num_seeds` seeds from `base.seed`."""
  if tables.seeds is not None:
    return mtl_table4.resolve_seeds(tuple(tables.seeds), base.seed, name="tables.seeds")
  return mtl_table4.resolve_seeds(int(tables.num_seeds), base.seed, name="tables.num_seeds")


def network_config(base, network: str, seed: int):
  """A single-task expression network with the plain `network` trunk, trained like the rows."""
  config = mtl_table4.row_config(base, "single", seed)
  config.tasks = ("expression",)
  config.model.backbone = network
  return config


def check(base, tables) -> None:
  """Raises ValueError naming the field before anything trains."""
  for row in tables.table4_rows:
    if row not in mtl_table4.ROWS:
      raise ValueError(f"tables.table4_rows: unknown row {row!r}; expected names from "
                       f"{list(mtl_table4.ROWS)}")
  for network in tables.table5_networks:
    if network not in multitask.PLAIN_BACKBONES:
      raise ValueError(f"tables.table5_networks: unknown network {network!r}; expected names "
                       f"from {list(multitask.PLAIN_BACKBONES)}")
  if not set(tables.handcrafted) <= set(table5.METHODS):
    raise ValueError(f"tables.handcrafted: expected names from {table5.METHODS}, got "
                     f"{tuple(tables.handcrafted)}")
  if "expression" not in base.tasks:
    raise ValueError(f"tasks: Table 5 is on the expression task; got tasks={tuple(base.tasks)}")
  for task in base.tasks:
    datasets.check_data_config(task, base.data[task])


def _handcrafted_settings(base, tables, seed: int) -> dict:
  """What a cached hand-crafted result depends on (a cache made under others is refused)."""
  data = base.data.expression
  return {"seed": int(seed), "image_size": int(base.image_size),
          "num_classes": int(base.model.num_classes),
          "data": {k: data[k] for k in ("source", "path", "test_path", "num", "test_fraction",
                                        "face_detection")},
          "data_variant": base.data.get(mtl_table4.DATA_VARIANT_FIELD, None),
          "methods": list(tables.handcrafted), "grid": [int(g) for g in tables.handcrafted_grid],
          "svm_c": float(tables.svm_c)}


def handcrafted_rows(base, tables, seed: int, cache_dir) -> list[table5.Table5Row]:
  """The hand-crafted rows of one seed: read from the cache, or computed and cached.

  The faces are the seed's expression training / test split, exactly those the networks of
  that seed see (before augmentation), at `base.image_size`.
  """
  path = pathlib.Path(cache_dir) / f"seed_{seed}.json"
  wanted = _handcrafted_settings(base, tables, seed)
  if path.is_file():
    cached = json.loads(path.read_text())
    differ = sorted(k for k in set(wanted) | set(cached["settings"])
                    if wanted.get(k) != cached["settings"].get(k))
    if differ:
      raise ValueError(f"{path}: made under other settings ({', '.join(differ)} differ); use "
                       f"another --workdir or delete {path}")
    logging.info("hand-crafted rows, seed %d: reading %s", seed, path)
    return [table5.Table5Row(**row) for row in cached["rows"]]
  logging.info("hand-crafted rows, seed %d: extracting features", seed)
  train, test = datasets.load_task_data(
      "expression", base.data.expression, image_size=base.image_size,
      num_classes=base.model.num_classes, seed=seed)
  rows = table5.run_handcrafted_baselines(
      train.images, train.targets, test.images, test.targets, image_size=base.image_size,
      methods=tuple(tables.handcrafted), grid=tuple(tables.handcrafted_grid),
      svm_c=float(tables.svm_c))
  atomic.write_text(path, json.dumps({"settings": wanted,
                                      "rows": [dataclasses.asdict(r) for r in rows]}, indent=1))
  return rows


def network_row(base, network: str, seed: int, workdir) -> table5.Table5Row:
  """A plain CNN's row for one seed (trained now, resumed, or read when finished)."""
  config = network_config(base, network, seed)
  summary = mtl_table4.train_or_read(config, pathlib.Path(workdir) / network / f"seed_{seed}",
                                     f"table 5 network {network}, seed {seed}")
  return table5.Table5Row(
      f"{NETWORK_NAMES.get(network, network)} CNN ({network})",
      summary["eval"]["expression_accuracy"], mf1=summary["eval"].get("expression_mf1"),
      settings=f"single-task expression network, backbone {network}, trained by the MTL loop")


def mtl_rows(table4_records) -> list[list[table5.Table5Row]]:
  """Table 4's rows as Table 5 rows (their expression accuracy), one list per seed."""
  per_seed = {}
  for r in table4_records:
    if r["expression_accuracy"] is None:
      continue
    if r["row"] == mtl_table4.REFERENCE_ROW:
      name, what = "ResNet, single task (Table 4 'single')", "independent networks"
    else:
      name = f"ResNet, multi-task (Table 4 '{r['row']}')"
      what = f"sharing {r['sharing']}, trace norm {r['regulariser']}, ADA {r['ada']}"
    per_seed.setdefault(r["seed"], []).append(table5.Table5Row(
        name, r["expression_accuracy"], mf1=r.get("expression_mf1"),
        settings=f"{what}; expression + landmark networks"))
  return list(per_seed.values())


def table5_title(base, seeds) -> list[str]:
  expression_only = base.copy_and_resolve_references()
  expression_only.tasks = ("expression",)
  lines = mtl_table4.title_lines(
      f"Table 5: expression recognition on the expression task's test set: hand-crafted "
      f"features + linear SVM, plain CNNs and the networks of Table 4 (mean ± s.d. over "
      f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}).", expression_only, seeds)
  lines[2] = (f"Settings of the networks (ResNet backbone {base.model.backbone}; the plain CNNs "
              f"take their own backbone): {mtl_table4.settings_title(base)}. Hand-crafted "
              f"descriptors see the same {base.image_size} x {base.image_size} faces, without "
              f"augmentation; their settings are in each row.")
  lines.insert(4, "The hand-crafted rows are deterministic given a seed's data and split (no "
                  "initialisation; the linear SVM's solver has a fixed random state), so their "
                  "spread over seeds is that of the data and the split alone.")
  return lines


def run_table5(base, tables, seeds, workdir, table4_records) -> list[table5.Table5Row]:
  """Table 5's rows over the seeds (training / reading as needed); writes table5.md/.csv/.tex."""
  workdir = pathlib.Path(workdir)
  per_seed = []
  for seed in seeds:
    rows = list(handcrafted_rows(base, tables, seed, workdir / "table5" / "handcrafted"))
    rows += [network_row(base, net, seed, workdir / "table5") for net in tables.table5_networks]
    per_seed.append(rows)
  rows = table5.aggregate_over_seeds(per_seed + mtl_rows(table4_records))
  table5.write_table5(rows, workdir, title=table5_title(base, seeds))
  return rows


def run(config, workdir) -> dict:
  """Both tables and the plots; returns {'table4': records, 'table5': rows}."""
  base, tables = split_config(config)
  seeds = table_seeds(base, tables)
  check(base, tables)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  records = mtl_table4.run(base, workdir, tuple(tables.table4_rows), seeds)
  rows = run_table5(base, tables, seeds, workdir, records)
  return {"table4": records, "table5": rows}


def define_flags():
  """The command line's flags, defined only when the module runs as a program (so that tests and
  notebooks can import it beside another entry point's flags)."""
  config = config_flags.DEFINE_config_file(
      "config", None, "Tables config (configs/mtl_tables.py).", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Output directory (runs, tables, plots).")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir


def main(argv, config_flag, workdir_flag):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run(config_flag.value, workdir_flag.value)
  workdir = pathlib.Path(workdir_flag.value)
  print((workdir / "table4.md").read_text())
  print((workdir / "table5.md").read_text())


if __name__ == "__main__":
  _flags = define_flags()
  cli.run(lambda argv: main(argv, *_flags))
