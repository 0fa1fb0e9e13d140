"""The Table-4 script end to end on the smoke config: rows train, the table is written, reruns skip.

The same script over two seeds (the paired comparison against the per-seed records) runs end to
end in tests/test_mtl_tables.py, inside the one-command tables run.
"""
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import mtl as mtl_configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(workdir, *extra, rows="single,laf"):
  cmd = [sys.executable, "-m", "experiments.mtl_table4", "--config", "configs/mtl.py:runlocal",
         f"--workdir={workdir}", f"--rows={rows}", "--seeds=1", *extra]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_table4_rows_and_resume(tmp_path):
  done = _run(tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = _read_csv(tmp_path / "table4.csv")
  assert [r["row"] for r in rows] == ["single", "laf"]
  assert [r["regulariser"] for r in rows][1] == "laf"
  assert all(0.0 <= float(r["expression_accuracy_mean"]) <= 1.0 for r in rows)
  assert all(float(r["landmark_nme_mean"]) > 0.0 for r in rows)
  assert all(r["num_seeds"] == "1" and r["expression_accuracy_std"] == "" for r in rows)
  for sub in ("single", "laf"):
    summary = json.loads((tmp_path / sub / "seed_0" / "summary.json").read_text())
    row = next(r for r in rows if r["row"] == sub)
    assert float(row["expression_accuracy_mean"]) == summary["eval"]["expression_accuracy"]
  table = (tmp_path / "table4.md").read_text()
  assert "laf" in table.lower() and "single" in table.lower()
  assert ("Data of seed 0: expression: synthetic, seed 0, 26 samples; 25% held out for testing "
          "(by subject where known); variant 'planted' (docs/synthetic_mtl.md); landmarks: "
          "synthetic, seed 1, 16 samples") in table
  assert "Seeds: 0 (each seed draws the synthetic data" in table
  assert "at its final step" in table
  before = (tmp_path / "laf" / "seed_0" / "summary.json").stat().st_mtime_ns
  again = _run(tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert (tmp_path / "laf" / "seed_0" / "summary.json").stat().st_mtime_ns == before  # skipped
  # A finished row trained under another config is not silently reused.
  changed = _run(tmp_path, "--config.regulariser.strength=0.5", rows="laf")
  assert changed.returncode != 0
  assert "regulariser.strength" in changed.stderr and "another --workdir" in changed.stderr
  assert changed.returncode == 2 and changed.stderr.startswith("error: row laf, seed 0: ")
  # A wrong data path is named before any row trains.
  wrong = _run(tmp_path / "other", "--config.data.landmarks.source=300w",
               "--config.data.landmarks.path=/no/such/300W", rows="single")
  assert wrong.returncode == 2
  assert wrong.stderr.splitlines()[0] == ("error: data.landmarks.path: /no/such/300W does not "
                                          "exist (expected the root of a '300w' dataset)")
  assert not (tmp_path / "other" / "single").exists()
  assert (tmp_path / "laf" / "seed_0" / "summary.json").stat().st_mtime_ns == before


def _read_csv(path):
  """A table's CSV below its '# ' title lines."""
  lines = pathlib.Path(path).read_text().splitlines(keepends=True)
  assert lines[0].startswith("# Table 4")
  return list(csv.DictReader(line for line in lines if not line.startswith("# ")))


def test_seeds_are_a_count_from_the_config_seed_or_a_list():
  from experiments import mtl_table4
  assert mtl_table4.resolve_seeds(mtl_table4.seeds_from_flag(["3"]), 4) == (4, 5, 6)
  assert mtl_table4.resolve_seeds(mtl_table4.seeds_from_flag(["0", "7"]), 4) == (0, 7)
  with pytest.raises(ValueError, match="--seeds: a count of seeds must be >= 1"):
    mtl_table4.resolve_seeds(0, 0)
  with pytest.raises(ValueError, match="distinct"):
    mtl_table4.resolve_seeds((1, 1), 0)
  with pytest.raises(ValueError, match="--seeds: expected a count N"):
    mtl_table4.seeds_from_flag(["two"])


def test_statistics_and_paired_comparison_against_numpy():
  from experiments import mtl_table4
  rng = np.random.default_rng(0)
  accuracy = {(row, seed): float(rng.uniform()) for row in ("single", "laf") for seed in (3, 5, 9)}
  records = [{"row": row, "seed": seed, "sharing": "s", "regulariser": "r", "ada": "no",
              "expression_accuracy": value, "landmark_nme": None, "domain_separability": None}
             for (row, seed), value in accuracy.items()]
  stats = mtl_table4.row_statistics(records)
  single = [accuracy[("single", s)] for s in (3, 5, 9)]
  assert stats[0]["expression_accuracy_mean"] == pytest.approx(np.mean(single))
  assert stats[0]["expression_accuracy_std"] == pytest.approx(np.std(single, ddof=1))
  assert stats[0]["landmark_nme_mean"] is None
  [paired] = mtl_table4.paired_comparison(records)  # NME is missing: only accuracy is paired
  diffs = np.array([accuracy[("laf", s)] - accuracy[("single", s)] for s in (3, 5, 9)])
  assert paired["row"] == "laf" and paired["diffs"] == {s: pytest.approx(d) for s, d in
                                                         zip((3, 5, 9), diffs)}
  assert paired["mean"] == pytest.approx(diffs.mean())
  assert paired["std"] == pytest.approx(diffs.std(ddof=1))
  assert paired["better_on"] == int((diffs > 0).sum())
  assert mtl_table4.paired_comparison([r for r in records if r["row"] != "single"]) == []


def test_titles_name_the_built_in_data_variant():
  from experiments import mtl_table4
  config = mtl_configs.get_config("runlocal")
  config.data[mtl_table4.DATA_VARIANT_FIELD] = "control"
  title = mtl_table4.title_lines("Table 4.", config, (0, 1))
  assert title[1] == ("Data: expression: built-in synthetic data (variant 'control'), 26 faces, "
                      "25% held out for testing; landmarks: built-in synthetic data (variant "
                      "'control'), 16 faces, 25% held out for testing.")
  assert title[2].startswith("Settings: backbone tiny, 32 x 32 images, 3 steps of sgd")
  assert title[3].startswith("Seeds: 0, 1 (")


def test_table4_checks_every_row_name_before_training(tmp_path):
  from experiments import mtl_table4
  base = mtl_configs.get_config("runlocal")
  with pytest.raises(ValueError, match="unknown row 'tuker'"):
    mtl_table4.run_rows(base, tmp_path, ["laf", "tuker"])
  assert not list(tmp_path.iterdir())  # 'laf' did not train first


@pytest.mark.parametrize("base", ["runlocal,hardstage2", "runlocal,hard6"])
def test_rows_on_a_hard_sharing_base_config(base):
  from experiments import mtl_table4
  from mtl_flax import train
  for row in mtl_table4.ROWS:
    config = mtl_table4.row_config(mtl_configs.get_config(base), row)
    model = train.build_model(config)
    assert (model.hard_share_convs > 0) == row.startswith("hard"), row


def test_config_differences_lists_result_fields_only():
  from mtl_flax import train
  config = mtl_configs.get_config("runlocal,laf")
  saved = json.loads(config.to_json_best_effort())
  assert train.config_differences(saved, config) == []
  config.log_every = 5
  config.optimizer.learning_rate = 0.1
  config.data.expression.num = 30
  assert train.config_differences(saved, config) == ["data.expression.num",
                                                     "optimizer.learning_rate"]
