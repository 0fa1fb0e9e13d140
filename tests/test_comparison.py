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
from tgsr_jax import selection


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
  assert selection.pick(np.array([0.2, 0.5, np.nan, 0.5])) == 1
  assert selection.pick(np.array([np.nan, np.nan])) == -1


def test_run_comparison_writes_and_resumes(data, tmp_path, monkeypatch):
  exps = protocol.parse_experiments("V->N,N->V")
  # The label-free rules see the source and the unlabelled target only: record what they get.
  seen = []
  real_select = selection.select

  def spy(method, xs, ys, xt, params, **kwargs):
    seen.append((xs.shape, xt.shape, kwargs["num_folds"]))
    return real_select(method, xs, ys, xt, params, **kwargs)

  monkeypatch.setattr(comparison.selection, "select", spy)
  grids = {"SVM": {"C": (0.001, 1.0, 100.0)}}
  options = {"num_folds": 3, "seed": 1}
  rows, runs = comparison.run_comparison(data, exps, tmp_path / "run", method_names=["SVM"],
                                         grids=grids, rules=["SrcCV", "IWCV"],
                                         selection_options=options, progress=False)
  assert seen == [((45, 12), (36, 12), 3), ((36, 12), (45, 12), 3)]
  run = tmp_path / "run"
  with open(run / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == list(comparison.RESULT_COLUMNS)
  assert {(r["selection"], r["experiment"]) for r in table} == {
      (s, e) for s in ("oracle", "SrcCV", "IWCV") for e in ("V->N", "N->V")}
  # Each rule's pick is the first best of the scores select() gives for the same grid.
  src, tgt = data["SMIC_VIS"], data["SMIC_NIR"]
  direct = real_select(methods.get("SVM"), src.features, src.labels - 1, tgt.features,
                       methods.grid_points(grids["SVM"]), num_classes=3, **options)
  vn = next(r for r in runs if r.experiment.name == "V->N")
  assert vn.picks["SrcCV"] == direct.picks["SrcCV"] and vn.picks["IWCV"] == direct.picks["IWCV"]
  picked = next(r for r in rows if r["selection"] == "SrcCV" and r["experiment"] == "V->N")
  assert json.loads(picked["params"]) == {"C": grids["SVM"]["C"][direct.picks["SrcCV"]]}
  # The oracle's M-F1 is the grid's best, read back from grid.csv.
  with open(run / "SMIC_VIS_to_SMIC_NIR" / "SVM" / "grid.csv") as f:
    grid = list(csv.DictReader(f))
  assert [float(g["C"]) for g in grid] == [0.001, 1.0, 100.0]
  np.testing.assert_allclose([float(g["score_SrcCV"]) for g in grid], direct.scores["SrcCV"])
  oracle = next(r for r in rows if r["selection"] == "oracle" and r["experiment"] == "V->N")
  assert oracle["mf1"] == max(float(g["mf1"]) for g in grid)
  best = json.loads((run / "SMIC_VIS_to_SMIC_NIR" / "SVM" / "best_oracle.json").read_text())
  assert "target labels" in best["rule"] and best["grid"] == {"C": [0.001, 1.0, 100.0]}
  text = (run / "comparison.md").read_text()
  assert "## Selection: oracle" in text and "## Selection: SrcCV" in text
  assert "\\begin{tabular}" in (run / "comparison.tex").read_text()
  regret = (run / "selection.md").read_text()
  assert "| SVM | 2 |" in regret and "Grid of SVM: C [0.001, 1.0, 100.0] = 3 points" in regret
  assert (run / "reproduction.md").is_file()

  # A rerun loads every finished method x experiment: nothing is fitted again.
  def refuse(*args, **kwargs):
    raise AssertionError("refitted")

  real = methods.get("SVM")
  monkeypatch.setattr(comparison.methods_lib, "get",
                      lambda name: dataclasses.replace(real, fit_predict=refuse))
  monkeypatch.setattr(comparison.selection, "select", refuse)
  again, _ = comparison.run_comparison(data, exps, run, method_names=["SVM"], grids=grids,
                                       rules=["SrcCV", "IWCV"], selection_options=options,
                                       progress=False)
  assert again == rows


def test_subgrid_and_given_target_scores(data, tmp_path):
  """Rules score a subgrid only; target scores given by the caller are used as they are."""
  exps = protocol.parse_experiments("V->N")
  given = comparison.TargetScores(acc=np.array([0.5, 0.6, 0.7]), mf1=np.array([0.4, 0.9, 0.9]))
  rows, (run,) = comparison.run_comparison(
      data, exps, tmp_path, method_names=["SVM"], grids={"SVM": {"C": (0.001, 1.0, 100.0)}},
      rules=["SrcCV"], selection_options={"num_folds": 3},
      target_scores={("SVM", "V->N"): given},
      selection_subsets={"SVM": np.array([True, False, True])}, tables=None, progress=False)
  assert run.picks["oracle"] == 1 and np.isnan(run.rule_scores["SrcCV"][1])
  assert run.picks["SrcCV"] in (0, 2)
  oracle = next(r for r in rows if r["selection"] == "oracle")
  assert (oracle["mf1"], oracle["acc"]) == (0.9, 0.6)
  assert not (tmp_path / "comparison.md").exists()


def test_changed_grid_refits(data, tmp_path):
  exps = protocol.parse_experiments("V->N")
  a, _ = comparison.run_comparison(data, exps, tmp_path, method_names=["SVM"],
                                   grids={"SVM": {"C": (1.0,)}}, progress=False)
  b, _ = comparison.run_comparison(data, exps, tmp_path, method_names=["SVM"],
                                   grids={"SVM": {"C": (0.001, 1.0)}}, progress=False)
  assert len(a) == 1 and len(b) == 1
  with open(pathlib.Path(tmp_path) / "SMIC_VIS_to_SMIC_NIR" / "SVM" / "grid.csv") as f:
    assert len(list(csv.DictReader(f))) == 2
