"""The Table-4 script end to end on the smoke config: rows train, the table is written, reruns skip."""
import csv
import json
import pathlib
import subprocess
import sys

import pytest

from configs import mtl as mtl_configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(workdir, *extra, rows="single,laf"):
  cmd = [sys.executable, "-m", "experiments.mtl_table4", "--config", "configs/mtl.py:runlocal",
         f"--workdir={workdir}", f"--rows={rows}", *extra]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_table4_rows_and_resume(tmp_path):
  done = _run(tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "table4.csv")))
  assert [r["row"] for r in rows] == ["single", "laf"]
  assert [r["regulariser"] for r in rows][1] == "laf"
  assert all(0.0 <= float(r["expression_accuracy"]) <= 1.0 for r in rows)
  assert all(float(r["landmark_nme"]) > 0.0 for r in rows)
  for sub in ("single", "laf"):
    assert (tmp_path / sub / "summary.json").exists()
  table = (tmp_path / "table4.md").read_text()
  assert "laf" in table.lower() and "single" in table.lower()
  assert "Data, expression: synthetic, seed 0, 26 samples" in table
  assert "Data, landmarks: synthetic, seed 1, 16 samples" in table
  assert "at its final step" in table
  before = (tmp_path / "laf" / "summary.json").stat().st_mtime_ns
  again = _run(tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert (tmp_path / "laf" / "summary.json").stat().st_mtime_ns == before  # finished rows skipped
  # A finished row trained under another config is not silently reused.
  changed = _run(tmp_path, "--config.regulariser.strength=0.5", rows="laf")
  assert changed.returncode != 0
  assert "regulariser.strength" in changed.stderr and "another --workdir" in changed.stderr
  assert changed.returncode == 2 and changed.stderr.startswith("error: row laf: ")
  # A wrong data path is named before any row trains.
  wrong = _run(tmp_path / "other", "--config.data.landmarks.source=300w",
               "--config.data.landmarks.path=/no/such/300W", rows="single")
  assert wrong.returncode == 2
  assert wrong.stderr.splitlines()[0] == ("error: data.landmarks.path: /no/such/300W does not "
                                          "exist (expected the root of a '300w' dataset)")
  assert not (tmp_path / "other" / "single").exists()
  assert (tmp_path / "laf" / "summary.json").stat().st_mtime_ns == before


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
