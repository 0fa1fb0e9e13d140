"""tgsr_jax.comparison: methods x experiments x selection rules, scored, picked and tabulated."""
import csv
import dataclasses
import json
import pathlib

import numpy as np
import pytest

from tgsr_jax import cdmer_io
from tgsr_jax import comparison
from tgsr_jax import methods
from tgsr_jax import protocol


def _feature_set(db, rng, n, shift, tmp_path):
  centres = np.eye(3, 12) * 3.0
  labels = np.tile([1, 2, 3], n // 3 + 1)[:n]
  x = centres[labels - 1] + rng.normal(size=(n, 12)) + shift
  return cdmer_io.FeatureSet(db, x, labels, tmp_path / f"{db}.mat")


@pytest.fixture
def data(tmp_path):
  rng = np.random.default_rng(0)
  return {"SMIC_VIS": _feature_set("SMIC_VIS", rng, 45, 0.0, tmp_path),
          "SMIC_NIR": _feature_set("SMIC_NIR", rng, 36, 0.7, tmp_path)}


def test_grid_scores_and_first_best():
  labels = np.array([[0, 1, 2, 2], [0, 0, 0, 0], [0, 1, -1, 2]])
  acc, mf1, failed = comparison.grid_scores(labels, np.array([0, 1, 2, 2]), 3)
  np.testing.assert_allclose(acc[:2], [1.0, 0.25])
  assert np.isnan(acc[2]) and failed.tolist() == [False, False, True]
  np.testing.assert_allclose(mf1[1], (2 * 1 / (1 + 4)) / 3)
  assert comparison.first_best(np.array([0.2, 0.5, np.nan, 0.5])) == 1
  assert comparison.first_best(np.array([np.nan, np.nan])) == -1


def test_run_comparison_writes_and_resumes(data, tmp_path, monkeypatch):
  exps = protocol.parse_experiments("V->N,N->V")
  # A label-free rule that prefers the smallest C: it sees no target labels.
  seen = []

  def smallest_c(method, xs, ys, xt, params, *, num_classes, precision):
    seen.append((xs.shape, xt.shape))
    return -np.asarray(params["C"], float)

  grids = {"SVM": {"C": (0.001, 1.0, 100.0)}}
  rows = comparison.run_comparison(data, exps, tmp_path / "run", method_names=["SVM"],
                                   grids=grids, rules={"smallest_c": smallest_c},
                                   progress=False)
  assert len(seen) == 2 and seen[0] == ((45, 12), (36, 12))
  run = tmp_path / "run"
  with open(run / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == list(comparison.RESULT_COLUMNS)
  assert {(r["selection"], r["experiment"]) for r in table} == {
      ("oracle", "V->N"), ("smallest_c", "V->N"), ("oracle", "N->V"), ("smallest_c", "N->V")}
  picked = [r for r in rows if r["selection"] == "smallest_c"]
  assert all(json.loads(r["params"]) == {"C": 0.001} for r in picked)
  # The oracle's M-F1 is the grid's best, read back from grid.csv.
  with open(run / "SMIC_VIS_to_SMIC_NIR" / "SVM" / "grid.csv") as f:
    grid = list(csv.DictReader(f))
  assert [float(g["C"]) for g in grid] == [0.001, 1.0, 100.0]
  oracle = next(r for r in rows if r["selection"] == "oracle" and r["experiment"] == "V->N")
  assert oracle["mf1"] == max(float(g["mf1"]) for g in grid)
  best = json.loads((run / "SMIC_VIS_to_SMIC_NIR" / "SVM" / "best_oracle.json").read_text())
  assert "target labels" in best["rule"] and best["grid"] == {"C": [0.001, 1.0, 100.0]}
  text = (run / "comparison.md").read_text()
  assert "## Selection: oracle" in text and "## Selection: smallest_c" in text
  assert "\\begin{tabular}" in (run / "comparison.tex").read_text()
  assert "| SVM |" in (run / "selection.md").read_text()
  assert (run / "reproduction.md").is_file()

  # A rerun loads every finished method x experiment: nothing is fitted again.
  def refuse(*args, **kwargs):
    raise AssertionError("refitted")

  real = methods.get("SVM")
  monkeypatch.setattr(comparison.methods_lib, "get",
                      lambda name: dataclasses.replace(real, fit_predict=refuse))
  again = comparison.run_comparison(data, exps, run, method_names=["SVM"], grids=grids,
                                    rules={"smallest_c": smallest_c}, progress=False)
  assert again == rows


def test_changed_grid_refits(data, tmp_path):
  exps = protocol.parse_experiments("V->N")
  a = comparison.run_comparison(data, exps, tmp_path, method_names=["SVM"],
                                grids={"SVM": {"C": (1.0,)}}, progress=False)
  b = comparison.run_comparison(data, exps, tmp_path, method_names=["SVM"],
                                grids={"SVM": {"C": (0.001, 1.0)}}, progress=False)
  assert len(a) == 1 and len(b) == 1
  with open(pathlib.Path(tmp_path) / "SMIC_VIS_to_SMIC_NIR" / "SVM" / "grid.csv") as f:
    assert len(list(csv.DictReader(f))) == 2
