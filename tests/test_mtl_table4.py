"""The Table-4 script end to end on the smoke config: rows train, the table is written, reruns skip."""
import csv
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(workdir):
  cmd = [sys.executable, "-m", "experiments.mtl_table4", "--config", "configs/mtl.py:runlocal",
         f"--workdir={workdir}", "--rows=single,laf"]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


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
  before = (tmp_path / "laf" / "summary.json").stat().st_mtime_ns
  again = _run(tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert (tmp_path / "laf" / "summary.json").stat().st_mtime_ns == before  # finished rows skipped
