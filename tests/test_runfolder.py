"""subtle_core.runfolder: fingerprints and the result store every resumable thing uses."""
import dataclasses
import json

import numpy as np
import pytest

from subtle_core import runfolder


@dataclasses.dataclass(frozen=True)
class _Settings:
  tol: float
  rho: float


def test_fingerprint_is_stable_and_sensitive():
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  a = runfolder.fingerprint(data=x, settings=_Settings(1e-8, 1.1), grid=(1, 2))
  b = runfolder.fingerprint(grid=(1, 2), settings=_Settings(1e-8, 1.1), data=x.copy())
  assert a.digest == b.digest
  assert a.fields["settings"] == {"tol": 1e-8, "rho": 1.1}
  assert a.fields["data"].startswith("array float32 [3, 4] sha1:")
  y = x.copy()
  y[0, 0] = 99
  assert runfolder.fingerprint(data=y, settings=_Settings(1e-8, 1.1), grid=(1, 2)).digest != a.digest
  # Same bytes, other dtype or shape: different.
  assert runfolder.fingerprint(data=x.reshape(4, 3), settings=_Settings(1e-8, 1.1),
                               grid=(1, 2)).digest != a.digest
  assert runfolder.fingerprint(data=x, settings=_Settings(1e-8, 1.2), grid=(1, 2)).digest != a.digest


def test_differences_name_the_fields():
  old = runfolder.fingerprint(settings=_Settings(1e-8, 1.1), seed=0, big=list(range(100)))
  new = runfolder.fingerprint(settings=_Settings(1e-8, 1.2), seed=0, big=list(range(101)))
  diffs = runfolder.differences(old.to_json(), new)
  assert any(d.startswith("settings.rho: saved 1.1, now 1.2") for d in diffs), diffs
  assert any(d.startswith("big: saved sha1:") for d in diffs), diffs
  assert not any(d.startswith("seed") for d in diffs)


def test_json_store_recompute_refuse_warn(tmp_path, caplog):
  store = runfolder.ResultStore(tmp_path / "folds")
  fp = runfolder.fingerprint(seed=0, folds=5)
  assert store.load_json("fold_00", fp) is None
  store.save_json("fold_00", fp, {"accuracy": 0.75})
  assert store.load_json("fold_00", fp) == {"accuracy": 0.75}
  other = runfolder.fingerprint(seed=1, folds=5)
  assert store.load_json("fold_00", other) is None          # recompute
  with pytest.raises(runfolder.FingerprintMismatch, match=r"seed: saved 0, now 1.*use a new"):
    store.load_json("fold_00", other, on_mismatch="refuse", hint="; use a new --workdir")
  with caplog.at_level("WARNING"):
    assert store.load_json("fold_00", other, on_mismatch="warn") == {"accuracy": 0.75}
  assert "seed: saved 0, now 1" in caplog.text
  assert store.check("fold_00", fp) and not store.check("fold_01", fp)
  # No temporary files are left behind.
  assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == ["fold_00.json"]


def test_damaged_files_are_recomputed(tmp_path):
  store = runfolder.ResultStore(tmp_path)
  fp = runfolder.fingerprint(k=1)
  store.save_json("a", fp, [1, 2])
  store.save_arrays("b", fp, {"x": np.ones(3)})
  (tmp_path / "a.json").write_text("{not json")
  raw = (tmp_path / "b.npz").read_bytes()
  (tmp_path / "b.npz").write_bytes(raw[: len(raw) // 2])
  assert store.load_json("a", fp) is None
  assert store.load_arrays("b", fp) is None
  # A JSON file without a fingerprint (an older format) is not trusted.
  (tmp_path / "c.json").write_text(json.dumps({"accuracy": 1.0}))
  assert store.load_json("c", fp) is None
  with pytest.raises(runfolder.FingerprintMismatch):
    (tmp_path / "d.json").write_text(json.dumps({"fingerprint": {}, "result": 1}))
    store.load_json("d", fp, on_mismatch="refuse")


def test_array_store_round_trip(tmp_path):
  store = runfolder.ResultStore(tmp_path)
  fp = runfolder.fingerprint(grid=np.arange(4))
  arrays = {"acc": np.linspace(0, 1, 4), "converged": np.array([True, False, True, True])}
  store.save_arrays("chunk_00000", fp, arrays)
  loaded = store.load_arrays("chunk_00000", fp)
  assert sorted(loaded) == ["acc", "converged"]
  np.testing.assert_array_equal(loaded["converged"], arrays["converged"])
  assert store.load_arrays("chunk_00000", runfolder.fingerprint(grid=np.arange(5))) is None
  with pytest.raises(ValueError, match="reserved"):
    store.save_arrays("x", fp, {"__fingerprint__": np.zeros(1)})
