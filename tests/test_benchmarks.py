"""The speed scripts run end to end on a tiny network (their numbers are not checked here)."""
import json

import pytest

from benchmarks import mtl_step


def test_mtl_step_benchmark_writes_a_consistent_record(tmp_path, capsys):
  out = tmp_path / "mtl_step.json"
  mtl_step.main(["--backbone", "tiny", "--batch", "2", "--image_size", "16", "--steps", "1",
                 "--rounds", "2", "--variants", "laf/gram", "--json", str(out)])
  record = json.loads(out.read_text())
  assert set(record["median_seconds"]) == {"stacked", "laf/gram"}  # stacked: the reference
  assert all(len(r) == 2 and min(r) > 0 for r in record["rounds"].values())
  seconds = record["median_seconds"]
  assert record["overhead_percent"]["laf/gram vs stacked"] == pytest.approx(
      100 * (seconds["laf/gram"] / seconds["stacked"] - 1))
  assert record["penalty_alone_seconds"]["laf/gram"] > 0
  assert "laf/gram vs stacked" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="unknown"):
    mtl_step.main(["--variants", "tucker/svd"])
