"""tgsr_jax.reproduction: the shipped published cells, their checks, and the report."""
import math

import pytest

from tgsr_jax import reproduction


def test_shipped_table_matches_shared(shared):
  """The package's copy is the shared table, cell for cell."""
  shipped = reproduction.published_cells()
  assert shipped == reproduction.published_cells(shared("cdmer", "published_tables.csv"))
  methods = {c.method for c in shipped}
  assert {"SVM", "IW-SVM", "TCA", "GFK", "SA", "STM", "TKL", "TSRG", "DRLS", "TGSR"} <= methods


def test_acc_is_possible():
  assert reproduction.acc_is_possible(63.38, 71)       # 45 / 71
  assert not reproduction.acc_is_possible(49.83, 71)   # between 35/71 = 49.30 and 36/71 = 50.70
  assert reproduction.acc_is_possible(61.54, 130) and not reproduction.acc_is_possible(61.50, 130)
  assert reproduction.acc_is_possible(0.0, 71) and reproduction.acc_is_possible(100.0, 164)


def test_flags_of_the_published_tables():
  """The known impossible cells (METHODS.md) are found from the numbers alone."""
  cells = reproduction.published_cells()
  flagged = {(c.method, c.experiment): f for c in cells for f in reproduction.cell_flags(c, cells)}
  assert ("GFK", "V->C") in flagged and ("DRLS", "C->N") in flagged and ("DRLS", "N->C") in flagged
  assert "67.74" in flagged[("IW-SVM", "Average")] and "69.74" in flagged[("IW-SVM", "Average")]
  # Reproduced cells carry no flag.
  assert ("SVM", "V->N") not in flagged and ("TGSR", "C->V") not in flagged


def test_report_compares_oracle_rows_only():
  results = [
      {"method": "SVM", "selection": "oracle", "experiment": "V->N", "mf1": 0.61859, "acc": 45 / 71},
      {"method": "SVM", "selection": "iwcv", "experiment": "V->N", "mf1": 0.1, "acc": 0.1},
      {"method": "DRLS", "selection": "oracle", "experiment": "C->N", "mf1": 0.4885, "acc": 35 / 71},
      {"method": "DRLS", "selection": "oracle", "experiment": "V->N", "mf1": 0.7209, "acc": 0.7042},
  ]
  text = reproduction.reproduction_markdown(results)
  svm_row = next(line for line in text.splitlines() if line.startswith("| TYPE-I | V->N | 0.6186"))
  assert "0.6186 / 63.38" in svm_row and svm_row.endswith("| reproduced |")
  drls_cn = next(line for line in text.splitlines() if "| C->N |" in line)
  assert "impossible: ACC 49.83 % is no k / 71" in drls_cn and "-0.53" in drls_cn
  drls_vn = next(line for line in text.splitlines() if "| TYPE-I | V->N | 0.6620" in line)
  assert "differs" in drls_vn and "+0.0589" in drls_vn
  assert "0.1000" not in text   # the iwcv row is not compared
  # No value computed for TCA: no TCA table.
  assert "## TCA" not in text


def test_bad_table(tmp_path):
  bad = tmp_path / "t.csv"
  bad.write_text("method,experiment\nSVM,V->N\n")
  with pytest.raises(ValueError, match="expected columns"):
    reproduction.published_cells(bad)
  # Cells printed without an ACC (RSTR's per-experiment cells) read as NaN.
  rstr = [c for c in reproduction.published_cells() if c.method == "RSTR" and c.experiment == "V->N"]
  assert len(rstr) == 1 and math.isnan(rstr[0].acc_percent) and rstr[0].mf1 == 0.7506
