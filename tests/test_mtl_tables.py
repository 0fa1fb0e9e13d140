"""Tables 4 and 5 in one command on the smoke config: killed and rerun, nothing finished recomputed;
the paired comparison and Table 5's rows equal the per-seed records."""
import csv
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import mtl_tables as tables_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.tables.num_seeds=2", "--config.tables.table4_rows=('single','laf')",
        "--config.tables.table5_networks=('alexnet_tiny',)", "--config.tables.handcrafted=('eoh',)",
        "--config.plots=False"]  # per-run plots; the tables command draws Fig. 3 itself


def _command(workdir, *extra):
  return [sys.executable, "-m", "experiments.mtl_tables", "--config",
          "configs/mtl_tables.py:runlocal", f"--workdir={workdir}", *TINY, *extra]


def _run(workdir, *extra):
  return subprocess.run(_command(workdir, *extra), cwd=REPO, capture_output=True, text=True,
                        timeout=600)


def _csv(path):
  lines = pathlib.Path(path).read_text().splitlines(keepends=True)
  title = [line[2:].strip() for line in lines if line.startswith("# ")]
  return title, list(csv.DictReader(line for line in lines if not line.startswith("# ")))


def _summary(path):
  return json.loads(pathlib.Path(path, "summary.json").read_text())


def test_tables_command_resumes_after_a_kill_and_its_numbers_are_the_runs(tmp_path):
  first = tmp_path / "single" / "seed_0" / "summary.json"
  with open(tmp_path.parent / f"{tmp_path.name}.log", "w") as log:
    process = subprocess.Popen(_command(tmp_path), cwd=REPO, stdout=log, stderr=log)
    deadline = time.monotonic() + 400
    while not first.is_file() and process.poll() is None and time.monotonic() < deadline:
      time.sleep(0.2)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert first.is_file() and killed, "the first run did not finish before the kill"
  assert not (tmp_path / "table5.md").exists()
  first_done = first.stat().st_mtime_ns

  done = _run(tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  assert first.stat().st_mtime_ns == first_done  # finished before the kill: read, not retrained
  assert "row single, seed 0: finished earlier" in done.stderr

  # Table 4: the paired differences are the per-seed records' differences.
  acc = {(row, seed): _summary(tmp_path / row / f"seed_{seed}")["eval"]["expression_accuracy"]
         for row in ("single", "laf") for seed in (0, 1)}
  nme = {(row, seed): _summary(tmp_path / row / f"seed_{seed}")["eval"]
         ["landmark_nme_inter_pupil"] for row in ("single", "laf") for seed in (0, 1)}
  title, paired = _csv(tmp_path / "table4_paired.csv")
  assert title[0].startswith("Table 4, paired with single-task learning")
  assert title[3].startswith("Seeds: 0, 1 (")
  for metric, values in (("expression_accuracy", acc), ("landmark_nme", nme)):
    [entry] = [p for p in paired if p["row"] == "laf" and p["metric"] == metric]
    diffs = np.array([values[("laf", s)] - values[("single", s)] for s in (0, 1)])
    np.testing.assert_allclose([float(entry["seed_0"]), float(entry["seed_1"])], diffs)
    np.testing.assert_allclose([float(entry["mean"]), float(entry["std"])],
                               [diffs.mean(), diffs.std(ddof=1)])
  _, seeds = _csv(tmp_path / "table4_seeds.csv")
  assert {(r["row"], int(r["seed"])): float(r["expression_accuracy"]) for r in seeds} == acc
  _, stats = _csv(tmp_path / "table4.csv")
  single = [acc[("single", s)] for s in (0, 1)]
  np.testing.assert_allclose([float(stats[0]["expression_accuracy_mean"]),
                              float(stats[0]["expression_accuracy_std"])],
                             [np.mean(single), np.std(single, ddof=1)])
  for name in ("table4.md", "table4.tex", "decrease_rates.png", "embedding.png"):
    assert (tmp_path / name).is_file(), name

  # Table 5: the hand-crafted rows per seed, the network trained by the loop, Table 4's rows.
  title, rows = _csv(tmp_path / "table5.csv")
  assert title[0].startswith("Table 5: expression recognition")
  assert any("deterministic given a seed's data and split" in line for line in title)
  by_method = {r["method"]: r for r in rows}
  eoh = [json.loads((tmp_path / "table5" / "handcrafted" / f"seed_{s}.json").read_text())
         ["rows"][0]["accuracy"] for s in (0, 1)]
  np.testing.assert_allclose(float(by_method["EOH + linear SVM"]["accuracy"]), np.mean(eoh))
  network = [_summary(tmp_path / "table5" / "alexnet_tiny" / f"seed_{s}") for s in (0, 1)]
  assert json.loads((tmp_path / "table5" / "alexnet_tiny" / "seed_1" / "config.json")
                    .read_text())["model"]["backbone"] == "alexnet_tiny"
  # A single-task network: expression metrics only.
  assert list(network[0]["eval"]) == ["expression_accuracy", "expression_mf1"]
  [alexnet] = [r for m, r in by_method.items() if "alexnet_tiny" in m]
  np.testing.assert_allclose(float(alexnet["accuracy"]),
                             np.mean([n["eval"]["expression_accuracy"] for n in network]))
  np.testing.assert_allclose(float(alexnet["mf1"]),
                             np.mean([n["eval"]["expression_mf1"] for n in network]))
  [laf] = [r for m, r in by_method.items() if "'laf'" in m]
  np.testing.assert_allclose(float(laf["accuracy"]), np.mean([acc[("laf", s)] for s in (0, 1)]))
  assert laf["num_seeds"] == "2"
  md = (tmp_path / "table5.md").read_text()
  assert md.startswith("**Table 5") and "Seeds: 0, 1 (" in md
  assert "\\begin{tabular}" in (tmp_path / "table5.tex").read_text()


def test_tables_command_checks_names_and_data_before_training(tmp_path):
  from experiments import mtl_tables
  config = tables_config.get_config("runlocal")
  config.tables.table5_networks = ("resnet9",)
  with pytest.raises(ValueError, match="tables.table5_networks: unknown network 'resnet9'"):
    mtl_tables.run(config, tmp_path)
  config = tables_config.get_config("runlocal")
  config.data.expression.source = "image_folder"
  config.data.expression.path = "/no/such/LSEMSW"
  with pytest.raises(ValueError, match="data.expression.path: /no/such/LSEMSW does not exist"):
    mtl_tables.run(config, tmp_path)
  assert not list(tmp_path.iterdir())


def test_tables_config_is_the_mtl_config_plus_tables():
  from experiments import mtl_tables
  from configs import mtl
  config = tables_config.get_config("runlocal")
  base, tables = mtl_tables.split_config(config)
  assert base.to_dict() == mtl.get_config("runlocal").to_dict()  # runs share Table 4's folders
  assert mtl_tables.table_seeds(base, tables) == (0, 1, 2)
  tables.seeds = (4, 9)
  assert mtl_tables.table_seeds(base, tables) == (4, 9)
  assert tables_config.get_config("resnet34").tables.table5_networks == ("alexnet", "vgg")
  net = mtl_tables.network_config(base, "vgg_tiny", 5)
  assert (tuple(net.tasks), net.model.backbone, net.seed) == (("expression",), "vgg_tiny", 5)
  assert (net.model.sharing, net.regulariser.kind, net.ada.enabled) == ("none", "none", False)
  with pytest.raises(ValueError, match="tables.table4_rows: unknown row 'tuker'"):
    tables.table4_rows = ("tuker",)
    mtl_tables.check(base, tables)
