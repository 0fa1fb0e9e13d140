"""The comparison through experiments.cdmer: settings, outputs, resuming, the CLI on real data."""
import csv
import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import cdmer as cdmer_config
from tgsr_jax import comparison
from tgsr_jax import experiment
from tgsr_jax import methods
from tgsr_jax import selection
from tgsr_jax import settings
from tgsr_jax import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**overrides):
  config = cdmer_config.get_config("runlocal")
  config.experiments = "V->N"
  for key, value in overrides.items():
    config[key] = value
  return config


def test_settings_defaults_and_validation():
  paper = settings.CdmerSettings.from_config(cdmer_config.get_config("paper"))
  assert paper.methods == settings.available_methods() and paper.methods[-1] == "TGSR"
  assert paper.selection == ("oracle", *selection.RULES) and paper.runs_comparison
  assert paper.method_grid("DRLS") == dict(methods.get("DRLS").grid)
  assert paper.selection_kappas == cdmer_config.PAPER_SELECTION_KAPPAS
  quick = settings.CdmerSettings.from_config(cdmer_config.get_config())
  assert quick.method_grid("DRLS") == {"lambda": (0.1, 10.0), "mu": (0.01, 0.6)}
  # The method's own axis order is kept whatever the config's key order.
  assert list(quick.method_grid("TCA")) == list(methods.get("TCA").grid)
  picked = settings.CdmerSettings.from_config(_config(methods="tgsr, iw_svm", selection="RV"))
  assert picked.methods == ("IW-SVM", "TGSR") and picked.selection == ("oracle", "RV")
  assert not settings.CdmerSettings.from_config(_config()).runs_comparison
  cases = [
      (dict(methods="SVM,FOO"), "config.methods: unknown method 'FOO'"),
      (dict(selection="oracle,LOO"), "config.selection: unknown rule"),
      (dict(methods="SVM,svm"), "config.methods names a method twice"),
      (dict(select_by="acc", methods="SVM,TGSR"), "config.select_by='acc' applies to TGSR"),
  ]
  for overrides, message in cases:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
      settings.CdmerSettings.from_config(_config(**overrides))
  config = _config(methods="all")
  config.method_grids.DRLS.nu = (1.0,)
  with pytest.raises(ValueError, match="config.method_grids.DRLS.nu: DRLS has no grid axis 'nu'"):
    settings.CdmerSettings.from_config(config)
  config = _config(methods="all")
  config.method_grids.NOPE = {"a": (1,)}
  with pytest.raises(ValueError, match="config.method_grids.NOPE: unknown method"):
    settings.CdmerSettings.from_config(config)
  config = _config(methods="all")
  config.selection_options.num_folds = 1
  with pytest.raises(ValueError, match="config.selection_options.num_folds"):
    settings.CdmerSettings.from_config(config)
  config = _config(methods="all", selection="all")
  config.selection_options.kappas = (4,)
  with pytest.raises(ValueError, match="config.selection_options.kappas/xis share no value"):
    settings.CdmerSettings.from_config(config)
  # The subgrid is TGSR's label-free rules' only: with the oracle alone it is not checked.
  config.selection = "oracle"
  assert settings.CdmerSettings.from_config(config).selection == ("oracle",)


def test_a_registered_method_without_module_is_named(monkeypatch):
  monkeypatch.setitem(methods._MODULES, "STM", "stm_not_written")
  with pytest.raises(ValueError, match="config.methods: method STM is registered but its module "
                     "tgsr_jax.methods.stm_not_written does not exist"):
    settings.CdmerSettings.from_config(_config(methods="STM,SVM"))
  assert "STM" not in settings.parse_methods("all")


def test_comparison_run_resumes_and_tgsr_oracle_is_its_best(tmp_path, monkeypatch):
  config = _config(methods="SVM,DRLS,TGSR", selection="oracle,SrcCV,RV")
  config.method_grids.DRLS.lambda_ = (1.0,)
  config.method_grids.DRLS.mu = (0.01, 0.6)
  config.selection_options.num_folds = 2
  config.selection_options.kappas = ()            # every kappa of the grid ...
  config.selection_options.xis = (1.0,)           # ... x {1.0}: TGSR's rules score these only
  bests = experiment.run(config, tmp_path)
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["method", "selection", "experiment", "mf1", "acc", "params"]
  assert len(rows) == 3 * 3
  tgsr = next(r for r in rows if r["method"] == "TGSR" and r["selection"] == "oracle")
  assert float(tgsr["mf1"]) == bests[0]["mf1"] and float(tgsr["acc"]) == bests[0]["acc"]
  assert json.loads(tgsr["params"]) == {"kappa": bests[0]["kappa"], "xi": bests[0]["xi"]}
  grid = list(csv.DictReader(open(tmp_path / "SMIC_VIS_to_SMIC_NIR" / "TGSR" / "grid.csv")))
  assert [np.isnan(float(g["score_SrcCV"])) for g in grid] == [
      float(g["xi"]) != 1.0 for g in grid]
  summary = (tmp_path / "summary.md").read_text()
  assert "## Selection: oracle" in summary and "it picks by the target labels" in summary
  assert "## Selection: RV" in summary
  assert "- Grid of DRLS: lambda [1.0] x mu [0.01, 0.6]" in summary
  assert "- Data (synthetic_features)" in summary and "- TGSR grid: 3 kappa" in summary
  assert "| TGSR |" in summary and "\\begin{tabular}" in (tmp_path / "summary.tex").read_text()
  table = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert {r["selection"] for r in table} == {"oracle", "SrcCV", "RV"}
  assert "| DRLS | 1 |" in (tmp_path / "selection.md").read_text()
  assert (tmp_path / "reproduction.md").is_file()
  for rule in ("oracle", "SrcCV", "RV"):
    best = json.loads((tmp_path / "SMIC_VIS_to_SMIC_NIR" / "DRLS" / f"best_{rule}.json")
                      .read_text())
    assert best["selection"] == rule and best["grid"] == {"lambda": [1.0], "mu": [0.01, 0.6]}
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.suffix in (".csv", ".md")}

  # A rerun fits nothing: no sweep chunk, no method fit, no selection.
  def refuse(*args, **kwargs):
    raise AssertionError("refitted")

  monkeypatch.setattr(sweep.PreparedSweep, "solve", refuse)
  monkeypatch.setattr(comparison.selection, "select", refuse)
  real_get = methods.get
  monkeypatch.setattr(comparison.methods_lib, "get",
                      lambda name: dataclasses.replace(real_get(name), fit_predict=refuse))
  experiment.run(config, tmp_path)
  assert before == {p: p.read_bytes() for p in before}


def _first_values(grids, keep):
  """Overrides giving every method's grid axis one value (``keep``, else its first)."""
  flags = []
  for key in grids:
    for axis, values in grids[key].items():
      value = keep.get((key, axis), (values[0],))
      flags.append(f"--config.method_grids.{key}.{axis}={value!r}")
  return flags


@pytest.mark.timeout(2400)  # 15 min measured on the shared 2-core machine at load 11-15
def test_cli_runs_the_whole_comparison_on_real_features(shared, tmp_path):
  """The issue's acceptance: the six experiments with features, every method and rule, CLI."""
  ssfr = shared("cdmer", "ssfr")
  paper = cdmer_config.get_config("paper")
  keep = {("DRLS", "lambda_"): (10.0,), ("DRLS", "mu"): (0.6,), ("TSRG", "lambda_"): (10.0,),
          ("TSRG", "mu"): (0.01,), ("TCA", "kernel"): ("linear",), ("TCA", "dim"): (20,),
          ("GFK", "dim"): (20,), ("SA", "dim"): (20,), ("TKL", "kernel"): ("linear",)}
  cmd = [sys.executable, "-m", "experiments.cdmer", "--config", "configs/cdmer.py:paper",
         f"--config.data.feature_dir={ssfr}",
         # The six experiments with features (C, V, N); one grid point per method.
         "--config.experiments=V->N,N->V,C->V,V->C,C->N,N->C", "--config.methods=all",
         "--config.selection=all", "--config.kappas=(12,)", "--config.xis=(44.0,)",
         "--config.selection_options.kappas=(12,)", "--config.selection_options.xis=(44.0,)",
         "--config.selection_options.num_folds=2", "--config.progress=False",
         *_first_values(paper.method_grids, keep), f"--workdir={tmp_path}"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "## Selection: oracle" in done.stdout and "| SVM |" in done.stdout
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["method", "selection", "experiment", "mf1", "acc", "params"]
  names = settings.available_methods()
  experiments = ("V->N", "N->V", "C->V", "V->C", "C->N", "N->C")
  assert len(rows) == len(names) * 5 * 6
  cell = {(r["method"], r["selection"], r["experiment"]): r for r in rows}
  assert set(cell) == {(m, r, e) for m in names for r in ("oracle", *selection.RULES)
                       for e in experiments}
  # The methods that cannot fail at their point give a score on every experiment.
  assert all(0 < float(cell[(m, "oracle", e)]["mf1"]) <= 1
             for m in ("SVM", "TSRG", "DRLS", "TGSR") for e in experiments)
  for exp, mf1, acc in (("V->N", 0.6186, 0.6338), ("N->V", 0.6078, 0.6338)):
    svm = cell[("SVM", "oracle", exp)]
    assert (round(float(svm["mf1"]), 4), round(float(svm["acc"]), 4)) == (mf1, acc)
  drls = cell[("DRLS", "oracle", "C->V")]
  assert (round(float(drls["mf1"]), 4), round(100 * float(drls["acc"]), 2)) == (0.5757, 57.75)
  assert json.loads(drls["params"]) == {"lambda": 10.0, "mu": 0.6}
  tgsr = cell[("TGSR", "oracle", "V->N")]
  assert (round(float(tgsr["mf1"]), 4), round(float(tgsr["acc"]), 4)) == (0.6984, 0.7042)
  text = (tmp_path / "reproduction.md").read_text()
  assert "## SVM" in text and "| TYPE-I | V->N | 0.6186 / 63.38 | 0.6186 / 63.38 |" in text
  assert "| TYPE-II | C->V | 0.5757 / 57.75 | 0.5757 / 57.75 |" in text  # DRLS
  assert "impossible" in text
  for rule in ("oracle", *selection.RULES):
    assert (tmp_path / "SMIC_VIS_to_SMIC_NIR" / "DRLS" / f"best_{rule}.json").is_file()
    assert (tmp_path / "SMIC_NIR_to_CASME2" / "TSRG" / f"best_{rule}.json").is_file()
  for exp in experiments:       # reproduction.md compares every experiment's SVM cell
    assert f"| {exp} |" in text
