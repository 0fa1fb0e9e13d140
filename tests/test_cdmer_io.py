"""Feature-file readers, the benchmark column layout and the protocol's experiment names."""
import h5py
import numpy as np
import pytest
import scipy.io

from tgsr_jax import cdmer_io
from tgsr_jax import layout
from tgsr_jax import protocol


def _features(n=6, kd=85 * 2, seed=0):
  rng = np.random.default_rng(seed)
  return rng.random((n, kd)), np.array([1, 2, 3, 1, 2, 3][:n])


def test_reads_v5_in_both_orientations_and_npz(tmp_path):
  x, y = _features()
  scipy.io.savemat(tmp_path / "a.mat", {"SMIC_VIS_micro_feature": x, "SMIC_VIS_micro_label": y[:, None]})
  scipy.io.savemat(tmp_path / "b.mat", {"CASME2_micro_feature": x.T, "CASME2_micro_label": y[None]})
  np.savez(tmp_path / "c.npz", features=x, labels=y, database="SMIC_NIR")
  a = cdmer_io.read_feature_file(tmp_path / "a.mat")
  b = cdmer_io.read_feature_file(tmp_path / "b.mat")
  c = cdmer_io.read_feature_file(tmp_path / "c.npz")
  assert (a.database, b.database, c.database) == ("SMIC_VIS", "CASME2", "SMIC_NIR")
  for fs in (a, b, c):
    np.testing.assert_array_equal(fs.features, x)
    np.testing.assert_array_equal(fs.labels, y)
  assert a.code == "V" and b.code == "C"


def test_reads_v73_hdf5_stored_features_by_samples(tmp_path):
  x, y = _features()
  with h5py.File(tmp_path / "h.mat", "w") as f:  # what MATLAB -v7.3 writes: column-major
    f["SMIC_NIR_micro_feature"] = x.T
    f["SMIC_NIR_micro_label"] = y[None].astype(float)
  fs = cdmer_io.read_feature_file(tmp_path / "h.mat")
  assert fs.database == "SMIC_NIR"
  np.testing.assert_array_equal(fs.features, x)


def test_write_then_read_round_trip(tmp_path):
  x, y = _features()
  for name in ("w.mat", "w.npz"):
    cdmer_io.write_feature_file(tmp_path / name, "SMIC_HS", x, y)
    fs = cdmer_io.read_feature_file(tmp_path / name)
    assert fs.database == "SMIC_HS"
    np.testing.assert_array_equal(fs.features, x)
    np.testing.assert_array_equal(fs.labels, y)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["w.mat", "w.npz"]  # no temp files left


@pytest.mark.parametrize("case,message", [
    ("missing", "missing variable 'SMIC_VIS_micro_label'"),
    ("width", "not K x d"),
    ("nan", "NaN or inf"),
    ("labels", r"labels \[4\] are outside the class set"),
    ("count", "one row \\(or column\\) per label"),
    ("none", "no variable named"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, case, message):
  x, y = _features()
  variables = {"SMIC_VIS_micro_feature": x, "SMIC_VIS_micro_label": y[:, None]}
  if case == "missing":
    del variables["SMIC_VIS_micro_label"]
  elif case == "width":
    variables["SMIC_VIS_micro_feature"] = x[:, :-1]
  elif case == "nan":
    variables["SMIC_VIS_micro_feature"] = np.where(x > 0.99, np.nan, x)
    variables["SMIC_VIS_micro_feature"][0, 0] = np.inf
  elif case == "labels":
    variables["SMIC_VIS_micro_label"] = np.array([1, 2, 3, 4, 1, 2])[:, None]
  elif case == "count":
    variables["SMIC_VIS_micro_label"] = y[:4, None]
  elif case == "none":
    variables = {"something": x}
  path = tmp_path / "bad.mat"
  scipy.io.savemat(path, variables)
  with pytest.raises(cdmer_io.FeatureFileError, match=message) as info:
    cdmer_io.read_feature_file(path, num_groups=85)
  assert str(path) in str(info.value)


def test_unreadable_and_missing_files(tmp_path):
  (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
  with pytest.raises(cdmer_io.FeatureFileError, match="junk.mat"):
    cdmer_io.read_feature_file(tmp_path / "junk.mat")
  with pytest.raises(cdmer_io.FeatureFileError, match="no such feature file"):
    cdmer_io.read_feature_file(tmp_path / "absent.mat")


def test_find_feature_files_by_variable_names(tmp_path):
  x, y = _features()
  cdmer_io.write_feature_file(tmp_path / "one.mat", "SMIC_VIS", x, y)
  cdmer_io.write_feature_file(tmp_path / "two.npz", "CASME2", x, y)
  (tmp_path / "notes.txt").write_text("ignored")
  found = cdmer_io.find_feature_files(tmp_path)
  assert found == {"SMIC_VIS": tmp_path / "one.mat", "CASME2": tmp_path / "two.npz"}
  # The hidden temporary of a killed atomic write is no second copy of the database.
  cdmer_io.write_feature_file(tmp_path / ".one.mat.k3j2_x.mat", "SMIC_VIS", x, y)
  assert cdmer_io.find_feature_files(tmp_path) == found
  cdmer_io.write_feature_file(tmp_path / "three.mat", "SMIC_VIS", x, y)
  with pytest.raises(cdmer_io.FeatureFileError, match="both one.mat and three.mat"):
    cdmer_io.find_feature_files(tmp_path)


def test_layout_permutation_matches_documented_example():
  perm = layout.benchmark_to_region_major()
  assert np.array_equal(np.sort(perm), np.arange(15045))
  inverse = layout.region_major_to_benchmark()
  assert np.array_equal(perm[inverse], np.arange(15045))
  # README example, 2x2 scale: columns 177..412 = XY of blocks 1..4, 413..648 XT, 649..884 YT.
  # Region-major region 1 (2x2 block 1) = XY, XT, YT of that block.
  region1 = perm[177:354]
  assert np.array_equal(region1[:59], np.arange(177, 236))
  assert np.array_equal(region1[59:118], np.arange(413, 472))
  assert np.array_equal(region1[118:], np.arange(649, 708))
  groups = layout.benchmark_region_groups()
  assert np.array_equal(np.bincount(groups), np.full(85, 177))
  assert np.all(groups[:177] == 0) and np.all(groups[177:413:59] == np.arange(1, 5))


def test_real_benchmark_files(shared):
  counts = {"CASME2": (73, 32, 25), "SMIC_VIS": (23, 28, 20), "SMIC_NIR": (23, 28, 20)}
  for db, expected in counts.items():
    fs = cdmer_io.read_feature_file(shared("cdmer", "ssfr", f"CrossCorpus_LBPTOP_R3P8_{db}_112by112.mat"))
    assert fs.database == db and fs.features.shape == (sum(expected), 15045)
    assert tuple(np.bincount(fs.labels)[1:]) == expected
    np.testing.assert_allclose(fs.features.sum(1), 255.0, atol=1e-6)
    # Every 59-bin histogram sums to 1 in the region-major order too.
    hist = fs.features[:, layout.benchmark_to_region_major()].reshape(-1, 85 * 3, 59)
    np.testing.assert_allclose(hist.sum(-1), 1.0, atol=1e-6)
  corpus = cdmer_io.read_feature_file(shared("cdmer", "SMIC_VIS_Corpus_LBPTOP.mat"))
  assert corpus.features.shape == (71, 15045)
  found = cdmer_io.find_feature_files(shared("cdmer", "ssfr"))
  assert set(found) == {"CASME2", "SMIC_VIS", "SMIC_NIR"}


def test_parse_experiments():
  exps = protocol.parse_experiments("V->N, c->smic_hs")
  assert [e.name for e in exps] == ["V->N", "C->H"]
  assert exps[0].folder == "SMIC_VIS_to_SMIC_NIR" and exps[0].kind == "TYPE-I"
  assert exps[1].kind == "TYPE-II"
  assert len(protocol.parse_experiments(",".join(protocol.ALL_EXPERIMENTS))) == 12
  for bad, message in [("V-N", "SRC->TGT"), ("V->X", "unknown database"), ("V->V", "same source"),
                       ("", "no experiment"), ("V->N,C->H,v->n", "'v->n' is listed twice")]:
    with pytest.raises(ValueError, match=message):
      protocol.parse_experiments(bad)


def test_atomic_writes_get_the_umask_permissions(tmp_path):
  import os
  from subtle_core import atomic
  path = atomic.write_text(tmp_path / "result.csv", "a,b\n")
  assert path.stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK  # not mkstemp's private 0600
  assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]
  with pytest.raises(RuntimeError):
    with atomic.atomic_path(tmp_path / "other.csv") as tmp:
      tmp.write_text("half")
      raise RuntimeError("killed")
  assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]
  assert os.umask(atomic._UMASK) == atomic._UMASK  # the module left the umask as it found it
