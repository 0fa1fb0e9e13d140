"""The CDMER experiment end to end: outputs, resuming, the CLI on real features, config errors."""
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from configs import cdmer as cdmer_config
from tgsr_jax import experiment
from tgsr_jax import settings
from tgsr_jax import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]


def _runlocal(**overrides):
  config = cdmer_config.get_config("runlocal")
  config.chunk_size = 4  # several chunks per experiment, to exercise resuming
  for key, value in overrides.items():
    config[key] = value
  return config


def test_runlocal_writes_every_output(tmp_path):
  bests = experiment.run(_runlocal(), tmp_path)
  assert [b["experiment"] for b in bests] == ["V->N", "C->H"]
  for folder in ("SMIC_VIS_to_SMIC_NIR", "CASME2_to_SMIC_HS"):
    out = tmp_path / folder
    rows = list(csv.DictReader(open(out / "grid.csv")))
    assert list(rows[0]) == ["kappa", "xi", "acc", "mf1", "iterations", "converged"]
    assert len(rows) == 6 and all(r["converged"] == "1" for r in rows)
    best = json.loads((out / "best.json").read_text())
    assert max(float(r["mf1"]) for r in rows) == best["mf1"]
    assert len(best["selected_groups"]) == best["kappa"]
    assert np.asarray(best["confusion"]).sum() > 0
    for png in ("regions.png", "sensitivity_kappa.png", "sensitivity_xi.png"):
      assert (out / png).read_bytes()[:4] == b"\x89PNG"
  summary = (tmp_path / "summary.md").read_text()
  assert "TYPE-I" in summary and "TYPE-II" in summary and "Average" in summary
  table = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert [r["experiment"] for r in table] == ["V->N", "Average", "C->H", "Average"]


def test_interrupted_run_resumes_from_written_chunks(tmp_path, monkeypatch):
  calls = []
  original = sweep.PreparedSweep.solve

  def flaky(self, kappa, xi):
    calls.append(len(kappa))
    if len(calls) == 3:
      raise KeyboardInterrupt  # the run dies in its third chunk
    return original(self, kappa, xi)

  monkeypatch.setattr(sweep.PreparedSweep, "solve", flaky)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(_runlocal(), tmp_path)
  chunks = sorted((tmp_path / "SMIC_VIS_to_SMIC_NIR" / "chunks").rglob("chunk_*.npz"))
  assert len(chunks) == 2  # the two finished chunks are on disk, nothing half-written
  calls.clear()
  experiment.run(_runlocal(), tmp_path)
  # V->N: 6 grid points in chunks of 4 -> 2 chunks, both reused; C->H: 2 chunks computed.
  assert calls == [4, 2]
  resumed = (tmp_path / "SMIC_VIS_to_SMIC_NIR" / "grid.csv").read_text()
  monkeypatch.setattr(sweep.PreparedSweep, "solve", original)
  fresh = tmp_path / "fresh"
  experiment.run(_runlocal(), fresh)
  assert resumed == (fresh / "SMIC_VIS_to_SMIC_NIR" / "grid.csv").read_text()
  # A different grid is a different setup: its chunks do not mix with the old ones.
  calls.clear()
  monkeypatch.setattr(sweep.PreparedSweep, "solve", flaky)
  experiment.run(_runlocal(xis=(0.5,)), tmp_path)
  assert sum(calls) == 3 + 3


def test_damaged_chunks_are_recomputed(tmp_path, monkeypatch):
  experiment.run(_runlocal(experiments="V->N"), tmp_path)
  out = tmp_path / "SMIC_VIS_to_SMIC_NIR"
  first = (out / "grid.csv").read_text()
  chunks = sorted((out / "chunks").rglob("chunk_*.npz"))
  assert len(chunks) == 2
  chunks[0].write_bytes(b"")  # e.g. a power cut between the write and the disk
  chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # truncated
  calls = []
  original = sweep.PreparedSweep.solve
  monkeypatch.setattr(sweep.PreparedSweep, "solve",
                      lambda self, k, x: calls.append(len(k)) or original(self, k, x))
  experiment.run(_runlocal(experiments="V->N"), tmp_path)
  assert calls == [4, 2]
  assert (out / "grid.csv").read_text() == first
  calls.clear()
  experiment.run(_runlocal(experiments="V->N"), tmp_path)  # the rewritten chunks are reused
  assert calls == []
  # A readable file holding another chunk's grid points (e.g. copied by hand) is recomputed too.
  chunks[1].write_bytes(chunks[0].read_bytes())
  experiment.run(_runlocal(experiments="V->N"), tmp_path)
  assert calls == [2]
  assert (out / "grid.csv").read_text() == first


def test_best_point_is_the_first_maximum_in_grid_order():
  result = sweep.SweepResult(
      kappa=np.array([1, 1, 2, 2]), xi=np.array([0.1, 1.0, 0.1, 1.0]),
      acc=np.array([0.5, 0.4, 0.9, 0.6]), mf1=np.array([0.3, 0.7, 0.7, 0.2]),
      uar=np.zeros(4), iterations=np.ones(4, int), converged=np.ones(4, bool),
      selected=np.zeros((4, 2), bool))
  # M-F1 ties at rows 1 and 2: the authors' rule takes row 1 although row 2 has the higher ACC.
  assert result.best("mf1") == experiment.best_index(result, "mf1") == 1
  assert result.best("acc") == 2
  with pytest.raises(ValueError, match="'mf1' or 'acc'"):
    result.best("f1")


def test_classes_field_reaches_the_reader(tmp_path):
  rng = np.random.default_rng(0)
  for name, db in (("vis.mat", "SMIC_VIS"), ("nir.mat", "SMIC_NIR")):
    x = rng.random((12, 85 * 4))
    scipy.io.savemat(tmp_path / name, {f"{db}_micro_feature": x,
                                       f"{db}_micro_label": np.arange(12) % 3})  # 0, 1, 2
  config = _runlocal(experiments="V->N", kappas=(1, 2), xis=(1.0,), grouping="contiguous")
  config.data.source = "files"
  config.data.files = f"V={tmp_path / 'vis.mat'},N={tmp_path / 'nir.mat'}"
  with pytest.raises(ValueError, match=r"labels \[0\] are outside .*config field: classes"):
    experiment.run(config, tmp_path / "out")
  config.classes = (0, 1, 2)  # files labelled from 0 run once the field says so
  bests = experiment.run(config, tmp_path / "out")
  assert len(bests) == 1 and 0.0 <= bests[0]["mf1"] <= 1.0


def test_config_errors_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="precision"):
    experiment.run(_runlocal(precision="float16"), tmp_path)
  with pytest.raises(ValueError, match="grouping"):
    experiment.run(_runlocal(grouping="rows"), tmp_path)
  with pytest.raises(ValueError, match="select_by"):
    experiment.run(_runlocal(select_by="MF1"), tmp_path)
  with pytest.raises(ValueError, match="classes"):
    experiment.run(_runlocal(classes=(1, 1, 2)), tmp_path)
  assert not list(tmp_path.iterdir())  # rejected before any work
  config = _runlocal()
  config.data.source = "files"
  with pytest.raises(ValueError, match="data.feature_dir"):
    experiment.run(config, tmp_path)
  config.data.feature_dir = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="nowhere"):
    experiment.run(config, tmp_path)


def test_cli_reproduces_authors_rows_on_real_features(shared, tmp_path):
  ssfr = shared("cdmer", "ssfr")
  cmd = [sys.executable, "-m", "experiments.cdmer", "--config", "configs/cdmer.py:paper",
         f"--config.data.feature_dir={ssfr}", "--config.experiments=V->N",
         "--config.kappas=(1, 12, 85)", "--config.xis=(0.001, 44.0)", "--config.progress=False",
         "--config.methods=TGSR", "--config.selection=oracle", f"--workdir={tmp_path}"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "V->N" in done.stdout
  authors = scipy.io.loadmat(ssfr / "Acc_record_3class_SMIC_VIS_SMIC_NIR_feature_LBPTOP_R3P8.mat")["Acc"]
  lookup = {(int(k), round(x, 8)): (a, m) for k, x, a, m in authors}
  rows = list(csv.DictReader(open(tmp_path / "SMIC_VIS_to_SMIC_NIR" / "grid.csv")))
  assert len(rows) == 6
  for r in rows:
    acc, mf1 = lookup[(int(r["kappa"]), round(float(r["xi"]), 8))]
    assert float(r["acc"]) == pytest.approx(acc, abs=1e-12)
    assert float(r["mf1"]) == pytest.approx(mf1, abs=1e-12)
  best = json.loads((tmp_path / "SMIC_VIS_to_SMIC_NIR" / "best.json").read_text())
  assert (best["kappa"], best["xi"]) == (12, 44.0)
  assert round(best["acc"], 4) == 0.7042 and round(best["mf1"], 4) == 0.6984


def test_generated_clips_source_runs_end_to_end(tmp_path):
  config = _runlocal(experiments="V->N", kappas=(4, 85), xis=(1.0,))
  config.data.source = "synthetic_clips"
  config.data.num_clips = 9
  bests = experiment.run(config, tmp_path)
  assert bests[0]["experiment"] == "V->N" and 0.0 <= bests[0]["acc"] <= 1.0
  features = tmp_path / "synthetic_clips" / "features"
  assert (features / "SMIC_VIS.mat").exists() and (features / "SMIC_NIR.mat").exists()
  assert not (features / "CASME2.mat").exists()  # only the databases the experiments need


# --- No silent wrong results (issue 15) -------------------------------------------------------


def _feature_dir(tmp_path, databases=("SMIC_VIS", "SMIC_NIR")):
  from tgsr_jax.synthetic import features as synthetic_features
  paths = synthetic_features.write_benchmark(tmp_path / "files", seed=0, scale=0.6,
                                             databases=databases)
  return tmp_path / "files", paths


def test_feature_dir_is_read_and_named_in_every_output(tmp_path):
  feature_dir, paths = _feature_dir(tmp_path)
  config = _runlocal(experiments="V->N")
  config.data.source = "auto"  # the default of configs/cdmer.py
  config.data.feature_dir = str(feature_dir)
  bests = experiment.run(config, tmp_path / "files_run")
  # The same files generated in-run give the same numbers: the files were read, not ignored.
  generated = experiment.run(_runlocal(experiments="V->N"), tmp_path / "generated")
  assert bests[0]["mf1"] == generated[0]["mf1"] and bests[0]["acc"] == generated[0]["acc"]
  setup = bests[0]["setup"]
  assert setup["data"]["source"] == "files"
  assert setup["data"]["files"] == {db: str(p) for db, p in sorted(paths.items())}
  assert "highest M-F1" in setup["selection_rule"] and "oracle" in setup["selection_rule"]
  summary = (tmp_path / "files_run" / "summary.md").read_text()
  assert f"feature files: SMIC_NIR = {paths['SMIC_NIR']}; SMIC_VIS = {paths['SMIC_VIS']}" in summary
  assert "Grid: 3 kappa (3..85) x 2 xi (0.01..1) = 6 points" in summary
  assert "float32" in summary and "grouping: regions" in summary
  assert "Selection: the first grid point, kappa-major, with the highest M-F1" in summary
  record = json.loads((tmp_path / "files_run" / "summary.json").read_text())
  assert record["setup"] == setup
  synthetic = (tmp_path / "generated" / "summary.md").read_text()
  assert "Data (synthetic_features): synthetic features" in synthetic and "seed 0, scale 0.6" in synthetic


def test_synthetic_source_with_feature_files_is_refused(tmp_path):
  config = _runlocal()  # data.source = 'synthetic_features'
  config.data.feature_dir = str(tmp_path)
  with pytest.raises(ValueError, match=r"config.data.source='synthetic_features'.*"
                                       r"config.data.feature_dir"):
    experiment.run(config, tmp_path / "out")
  config = _runlocal()
  config.data.source = "synthetic_clips"
  config.data.files = "V=v.mat"
  with pytest.raises(ValueError, match=r"config.data.source='synthetic_clips'.*config.data.files"):
    experiment.run(config, tmp_path / "out")
  assert not (tmp_path / "out").exists()
  assert settings.resolve_source(cdmer_config.get_config()) == "synthetic_clips"
  assert settings.resolve_source(cdmer_config.get_config("paper")) == "files"


def test_duplicate_experiments_are_refused(tmp_path):
  with pytest.raises(ValueError, match=r"config.experiments: 'V->N' is listed twice"):
    experiment.run(_runlocal(experiments="V->N,C->H,V->N"), tmp_path)
  with pytest.raises(ValueError, match=r"listed twice"):
    experiment.run(_runlocal(experiments="V->N,smic_vis->n"), tmp_path)
  assert not list(tmp_path.iterdir())


def test_num_groups_must_fit_the_grouping(tmp_path):
  with pytest.raises(ValueError, match=r"config.num_groups=5 disagrees with config.grouping"):
    experiment.run(_runlocal(num_groups=5), tmp_path)
  with pytest.raises(ValueError, match=r"config.num_groups must be a positive integer, got 0"):
    experiment.run(_runlocal(num_groups=0, grouping="contiguous"), tmp_path)
  with pytest.raises(ValueError, match=r"config.kappas must be integers in \[1, config.num_groups=5\]"):
    experiment.run(_runlocal(num_groups=5, grouping="contiguous"), tmp_path)  # kappa 9, 85 > 5


def test_malformed_grids_name_the_field(tmp_path):
  # What ml_collections makes of --config.xis='(nan,)': a tuple holding the string.
  with pytest.raises(ValueError, match=r"config.xis: expected a tuple of numbers"):
    experiment.run(_runlocal(xis=("(nan,)",)), tmp_path)
  with pytest.raises(ValueError, match=r"config.xis must be finite numbers >= 0"):
    experiment.run(_runlocal(xis=(float("nan"), 1.0)), tmp_path)
  with pytest.raises(ValueError, match=r"config.kappas: expected a tuple of integers"):
    experiment.run(_runlocal(kappas=(1.5, 3)), tmp_path)
  assert not list(tmp_path.iterdir())


def test_non_converged_points_are_flagged(tmp_path, caplog):
  config = _runlocal(experiments="V->N")
  config.solver.max_iterations = 0
  with caplog.at_level("WARNING"):
    bests = experiment.run(config, tmp_path)
  assert bests[0]["converged_points"] == 0 and not bests[0]["converged"]
  assert any("V->N: no grid point converged (0 of 6)" in r.getMessage() for r in caplog.records)
  summary = (tmp_path / "summary.md").read_text()
  assert "| V->N |" in summary and "| 0/6 **(selected point not converged)** |" in summary
  assert "## Warning: not converged" in summary
  table = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert (table[0]["converged_points"], table[0]["best_converged"]) == ("0", "0")
  saved = json.loads((tmp_path / "SMIC_VIS_to_SMIC_NIR" / "best.json").read_text())
  assert saved["converged_points"] == 0 and saved["converged"] is False
  caplog.clear()
  fine = experiment.run(_runlocal(experiments="V->N"), tmp_path / "fine")
  assert fine[0]["converged_points"] == 6 and not caplog.records
  assert "| 6/6 |" in (tmp_path / "fine" / "summary.md").read_text()


def test_missing_source_class_is_named_by_its_label(tmp_path):
  rng = np.random.default_rng(0)
  labels = {"SMIC_VIS": np.array([1, 2] * 6), "SMIC_NIR": np.arange(12) % 3 + 1}
  for db, name in (("SMIC_VIS", "vis.mat"), ("SMIC_NIR", "nir.mat")):
    scipy.io.savemat(tmp_path / name, {f"{db}_micro_feature": rng.random((12, 85 * 4)),
                                       f"{db}_micro_label": labels[db]})
  config = _runlocal(experiments="N->V,V->N", kappas=(1, 2), xis=(1.0,), grouping="contiguous")
  config.data.source = "files"
  config.data.files = f"V={tmp_path / 'vis.mat'},N={tmp_path / 'nir.mat'}"
  with pytest.raises(ValueError, match=r"vis.mat: the source database SMIC_VIS has no sample of "
                                       r"class 3 \(Surprise\)"):
    experiment.run(config, tmp_path / "out")
  assert not (tmp_path / "out" / "SMIC_NIR_to_SMIC_VIS").exists()  # refused before any sweep


def test_empty_feature_dir_is_named(tmp_path):
  config = _runlocal()
  config.data.source = "files"
  config.data.feature_dir = str(tmp_path / "empty")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match=r"config.data.feature_dir: .*empty holds no feature file "
                                       r"\(it is empty\)"):
    experiment.run(config, tmp_path / "out")
  (tmp_path / "empty" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match=r"holds no feature file \(it holds \['notes.txt'\]\)"):
    experiment.run(config, tmp_path / "out")


@pytest.mark.parametrize("flag, message", [
    ("--config.data.feature_dir=/nowhere",
     "error: config.data.source='synthetic_features' generates synthetic data, but "
     "config.data.feature_dir='/nowhere' names feature files"),
    ("--config.xis=(nan,)", "error: config.xis: expected a tuple of numbers"),
])
def test_cli_errors_are_one_line_naming_the_field(tmp_path, flag, message):
  cmd = [sys.executable, "-m", "experiments.cdmer", "--config", "configs/cdmer.py:runlocal", flag,
         f"--workdir={tmp_path}"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  lines = done.stderr.strip().splitlines()
  assert lines[0].startswith(message), lines[0]
  assert "Traceback" not in done.stderr
  pathlib.Path(lines[1].split("saved to ")[1].split(";")[0]).unlink()


# --- Settings read once; resumable chunks through subtle_core.runfolder (issue 16) -------------


def test_settings_are_frozen_and_run_takes_them(tmp_path):
  import dataclasses as dc
  config = _runlocal(experiments="V->N")
  frozen = settings.CdmerSettings.from_config(config)
  assert hash(frozen) == hash(settings.CdmerSettings.from_config(config))
  assert frozen.data.source == "synthetic_features" and frozen.solver.tol is None
  assert frozen.experiments[0].name == "V->N" and frozen.kappas == (3, 9, 85)
  with pytest.raises(dc.FrozenInstanceError):
    frozen.precision = "float64"
  from_settings = experiment.run(frozen, tmp_path / "a")
  from_config = experiment.run(config, tmp_path / "b")
  assert from_settings[0]["mf1"] == from_config[0]["mf1"]
  assert ((tmp_path / "a" / "SMIC_VIS_to_SMIC_NIR" / "grid.csv").read_text() ==
          (tmp_path / "b" / "SMIC_VIS_to_SMIC_NIR" / "grid.csv").read_text())


def test_changed_settings_recompute_and_switching_back_reuses(tmp_path, monkeypatch):
  calls = []
  original = sweep.PreparedSweep.solve
  monkeypatch.setattr(sweep.PreparedSweep, "solve",
                      lambda self, k, x: calls.append(len(k)) or original(self, k, x))
  experiment.run(_runlocal(experiments="V->N"), tmp_path)
  assert calls == [4, 2]
  for change in ({"classes": (2, 1, 3)}, {"precision": "float64"}):
    calls.clear()
    experiment.run(_runlocal(experiments="V->N", **change), tmp_path)
    assert calls == [4, 2], change
  config = _runlocal(experiments="V->N")
  config.solver.mu0 = 2e-3
  calls.clear()
  experiment.run(config, tmp_path)
  assert calls == [4, 2]
  calls.clear()
  experiment.run(_runlocal(experiments="V->N"), tmp_path)  # the first setup's chunks are kept
  assert calls == []
  # A chunk of another setup copied over this setup's file is recomputed, not mixed in.
  folders = sorted((tmp_path / "SMIC_VIS_to_SMIC_NIR" / "chunks").iterdir())
  assert len(folders) == 4
  mine = settings.CdmerSettings.from_config(_runlocal(experiments="V->N"))
  data = experiment.load_databases(mine, tmp_path)
  from subtle_core import runfolder
  digest = runfolder.fingerprint(**experiment.setup_fingerprint(
      data.feature_sets["SMIC_VIS"], data.feature_sets["SMIC_NIR"], mine)).digest
  other = next(f for f in folders if f.name != digest)
  (tmp_path / "SMIC_VIS_to_SMIC_NIR" / "chunks" / digest / "chunk_00001.npz").write_bytes(
      (other / "chunk_00001.npz").read_bytes())
  experiment.run(_runlocal(experiments="V->N"), tmp_path)
  assert calls == [2]
