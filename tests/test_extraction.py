"""The extraction library and CLI end to end on a tiny SMIC-layout tree of rendered faces."""
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import scipy.io

from tgsr_jax import cdmer_io
from tgsr_jax import extraction
from tgsr_jax import layout
from tgsr_jax import lbp_top
from tgsr_jax import readers

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write_clip(folder, seed, num_frames=4, size=(120, 110)):
  from subtle_core.faces import render
  rng = np.random.default_rng(seed)
  subject = render.sample_subject(rng)
  box = (15, 20, 80, 80)
  neutral = render.neutral_landmarks(subject, box)
  folder.mkdir(parents=True)
  for i in range(num_frames):
    moved = neutral.copy()
    moved[48:68, 1] -= 0.5 * i  # a small mouth movement
    rgb = render.render_face(subject, moved, image_size=size, face_box=box)
    cv2.imwrite(str(folder / f"image{i + 1:06d}.bmp"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def smic_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("smic")
  base = root / "SMIC" / "VIS"
  _write_clip(base / "s1" / "micro" / "negative" / "s1_ne_01", 0)
  _write_clip(base / "s1" / "micro" / "positive" / "s1_po_01", 1)
  _write_clip(base / "s2" / "micro" / "surprise" / "s2_sur_01", 2)
  one = base / "s2" / "micro" / "negative" / "s2_ne_01"
  one.mkdir(parents=True)
  cv2.imwrite(str(one / "image000001.bmp"), np.zeros((120, 110), np.uint8))
  blank = base / "s2" / "micro" / "positive" / "s2_po_01"
  blank.mkdir(parents=True)
  for i in range(3):
    cv2.imwrite(str(blank / f"image{i + 1:06d}.bmp"), np.full((120, 110), 90, np.uint8))
  return root


def test_extract_database_cache_and_bad_clips(smic_tree, tmp_path):
  records = readers.read_smic(smic_tree, "VIS")
  assert len(records) == 5
  settings = extraction.ExtractionSettings(tim_length=8, size=48)
  out = tmp_path / "SMIC_VIS.mat"
  cache = tmp_path / "cache"
  with pytest.raises(readers.BadClipError) as err:
    extraction.extract_database(records, out, settings=settings, cache_dir=cache,
                                progress=False)
  message = str(err.value)
  assert "SMIC_VIS/2/s2_ne_01" in message and "at least 2" in message
  assert "SMIC_VIS/2/s2_po_01" in message and "no face" in message
  report = tmp_path / "SMIC_VIS_bad_clips.txt"
  assert report.read_text().count("\n") == 2
  assert not out.exists()

  result = extraction.extract_database(records, out, settings=settings, cache_dir=cache,
                                       skip_bad=True, progress=False)
  # The three good clips were cached by the failed run already.
  assert (result.num_extracted, result.num_cached) == (0, 3)
  assert [r.clip for r in result.records] == ["s1_ne_01", "s1_po_01", "s2_sur_01"]
  data = scipy.io.loadmat(out)
  x, y = data["SMIC_VIS_micro_feature"], data["SMIC_VIS_micro_label"]
  assert x.shape == (3, 15045) and x.dtype == np.float64
  np.testing.assert_array_equal(y, [[1], [2], [3]])
  np.testing.assert_allclose(x.sum(1), 255.0)
  # Each row is the documented pipeline, in the benchmark layout.
  clip, box = extraction.preprocess_clip(readers.load_clip(records[1]), settings)
  assert clip.shape == (8, 48, 48) and clip.dtype == np.uint8
  assert result.boxes[1] == box and box.detected
  np.testing.assert_allclose(x[1], lbp_top.lbp_top_features(clip, layout="benchmark"))
  meta = extraction.read_metadata(result.metadata_path)
  assert [m["clip"] for m in meta] == ["s1_ne_01", "s1_po_01", "s2_sur_01"]
  assert meta[1]["num_frames"] == "4" and meta[1]["face_x0"] == str(box.x0)
  read = cdmer_io.read_feature_file(out)
  assert read.database == "SMIC_VIS"
  np.testing.assert_array_equal(read.labels, [1, 2, 3])
  np.testing.assert_array_equal(read.features, x)

  # A touched frame invalidates only its clip.
  frame = pathlib.Path(records[0].frame_paths[0])
  stat = frame.stat()
  os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
  again = extraction.extract_database(records, out, settings=settings, cache_dir=cache,
                                      skip_bad=True, progress=False)
  assert (again.num_extracted, again.num_cached) == (1, 2)
  np.testing.assert_array_equal(again.features, result.features)
  # Other settings are another cache entry; the region-major layout is a column permutation.
  other = extraction.extract_database(
      records[:2], tmp_path / "rm.mat", settings=extraction.ExtractionSettings(
          tim_length=8, size=48, layout="region_major"), cache_dir=cache, progress=False)
  assert other.num_cached == 2
  np.testing.assert_array_equal(other.features[:, layout.region_major_to_benchmark()],
                                result.features[:2])
  fresh = extraction.extract_database(
      records[:1], tmp_path / "m.mat", settings=extraction.ExtractionSettings(
          tim_length=8, size=48, margin=0.3), cache_dir=cache, progress=False)
  assert fresh.num_extracted == 1


def test_whole_frame_fallback(smic_tree, tmp_path):
  records = [r for r in readers.read_smic(smic_tree, "VIS") if r.clip == "s2_po_01"]
  result = extraction.extract_database(
      records, tmp_path / "x.mat", settings=extraction.ExtractionSettings(
          tim_length=8, size=48, whole_frame_fallback=True), progress=False)
  assert not result.boxes[0].detected and result.boxes[0].as_tuple() == (0, 0, 110, 120)


def test_cli(smic_tree, tmp_path):
  command = [sys.executable, "-m", "experiments.extract_features",
             "--config", str(REPO / "configs" / "features.py"), "--workdir", str(tmp_path),
             "--config.database=smic_vis", f"--config.root={smic_tree}",
             "--config.skip_bad=True", "--config.tim_length=8", "--config.size=48"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "3 clips: 3 extracted, 0 from the cache" in run.stdout
  assert "skipped 2 bad clip(s)" in run.stdout
  assert cdmer_io.read_feature_file(tmp_path / "SMIC_VIS.mat").features.shape == (3, 15045)
  assert (tmp_path / "SMIC_VIS_bad_clips.txt").is_file()
  assert (tmp_path / "SMIC_VIS_clips.csv").is_file()
  rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert "3 clips: 0 extracted, 3 from the cache" in rerun.stdout, rerun.stderr[-2000:]


def test_tgsr_keeps_regions_of_the_planted_movements(tmp_path):
  """Generated SMIC-VIS clips -> features -> TGSR (region groups) -> the movements' regions.

  The ground truth is the synthetic generator's: regions (through the detected box, as the
  features see them) holding a landmark that moves between the neutral face and the apex. At the
  finest (8x8) scale about a third of the regions are planted; the regions TGSR keeps are mostly
  planted ones (measured for seed 0: 4 of 5 at kappa 5, 6 of 8 at kappa 8).
  """
  from tgsr_jax import solver
  from tgsr_jax.synthetic import microexpressions

  source_truth = microexpressions.write_database(tmp_path, "SMIC_VIS", seed=0)
  microexpressions.write_database(tmp_path, "SMIC_NIR", seed=0, num_clips=12)
  settings = extraction.ExtractionSettings(layout="region_major")
  src = extraction.extract_database(readers.read_smic(tmp_path, "VIS"), tmp_path / "vis.mat",
                                    settings=settings, progress=False)
  tgt = extraction.extract_database(readers.read_smic(tmp_path, "NIR"), tmp_path / "nir.mat",
                                    settings=settings, progress=False)
  assert len(src.records) == len(source_truth.clips) and all(b.detected for b in src.boxes)
  truth = {c.clip: c for c in source_truth.clips}
  planted = np.zeros(85, bool)
  for record, box in zip(src.records, src.boxes):
    clip = truth[record.clip]
    assert clip.label == record.label
    planted |= microexpressions.moving_regions(clip.neutral_landmarks, clip.apex_landmarks,
                                               (box.x0, box.y0, box.width, box.height))
  finest = np.arange(21, 85)
  chance = planted[finest].mean()
  assert 0.15 < chance < 0.5
  groups = np.repeat(np.arange(85), 177)
  for kappa in (5, 8):
    fit = solver.fit(src.features, src.labels - 1, tgt.features, groups=groups, kappa=kappa,
                     xi=1.0, num_classes=3)
    kept = np.flatnonzero(solver.selected_groups(fit.coef, groups, 85))
    assert fit.converged and len(kept) == kappa
    kept_fine = np.intersect1d(kept, finest)
    assert len(kept_fine) >= kappa // 2
    assert planted[kept_fine].mean() >= max(0.6, 1.7 * chance)


def test_prepare_synthetic_feature_dir(tmp_path, monkeypatch):
  out = extraction.prepare_synthetic_feature_dir(tmp_path, databases=("SMIC_NIR",), num_clips=6,
                                                 progress=False)
  assert out == tmp_path / "features"
  assert cdmer_io.find_feature_files(out) == {"SMIC_NIR": out / "SMIC_NIR.mat"}
  read = cdmer_io.read_feature_file(out / "SMIC_NIR.mat")
  x = read.features
  assert x.shape == (6, 15045) and set(read.labels) == {1, 2, 3}
  np.testing.assert_allclose(x.sum(1), 255.0)
  # A second call neither regenerates the database nor recomputes features.
  from tgsr_jax.synthetic import microexpressions

  def fail(*args, **kwargs):
    raise AssertionError("the database was written again")

  monkeypatch.setattr(microexpressions, "write_database", fail)
  calls = []
  real_extract = extraction.extract_database
  monkeypatch.setattr(extraction, "extract_database",
                      lambda *a, **k: calls.append(real_extract(*a, **k)) or calls[-1])
  extraction.prepare_synthetic_feature_dir(tmp_path, databases=("SMIC_NIR",), num_clips=6,
                                           progress=False)
  assert calls[0].num_extracted == 0 and calls[0].num_cached == 6
  np.testing.assert_array_equal(cdmer_io.read_feature_file(out / "SMIC_NIR.mat").features, x)


def test_regenerating_a_database_leaves_no_stale_clips(tmp_path):
  from tgsr_jax.synthetic import microexpressions
  root = tmp_path / "raw"
  extraction.write_generated_database(root, "SMIC_VIS", seed=0, num_clips=6)
  extraction.write_generated_database(root, "SMIC_NIR", seed=0, num_clips=3)
  assert len(extraction.read_generated_database(root, "SMIC_VIS")) == 6
  extraction.write_generated_database(root, "SMIC_VIS", seed=1, num_clips=3)
  records = extraction.read_generated_database(root, "SMIC_VIS")
  # Exactly what a fresh generation with the new seed writes: no clip or frame of the old one.
  truth = microexpressions.write_database(tmp_path / "fresh", "SMIC_VIS", seed=1, num_clips=3)
  fresh = sorted((os.path.relpath(c.path, tmp_path / "fresh"), c.num_frames) for c in truth.clips)
  assert sorted((os.path.relpath(os.path.dirname(r.frame_paths[0]), root), len(r.frame_paths))
                for r in records) == fresh
  # The other database under the same root is untouched.
  assert len(extraction.read_generated_database(root, "SMIC_NIR")) == 3


def test_damaged_cache_entries_are_recomputed(tmp_path):
  from subtle_core import runfolder
  from tgsr_jax import extraction_outputs
  cache = extraction_outputs.ClipCache(tmp_path)
  box = extraction.face_lib.FaceBox(1, 2, 30, 40, detected=True)
  features = np.arange(6, dtype=np.float32)
  fp = runfolder.fingerprint(clip="k")
  path = cache.save(fp, features, box)
  got, got_box = cache.load(fp)
  np.testing.assert_array_equal(got, features)
  assert got_box.as_tuple() == box.as_tuple() and got_box.detected
  # An entry saved under another fingerprint (e.g. copied over this name) is not used.
  other = runfolder.fingerprint(clip="other")
  other_path = cache.save(other, features + 1, box)
  path.write_bytes(other_path.read_bytes())
  assert cache.load(fp) is None
  cache.save(fp, features, box)
  for damaged in (b"", path.read_bytes()[:40], b"PK\x03\x04 junk"):
    path.write_bytes(damaged)
    assert cache.load(fp) is None


def test_generated_database_marker_is_a_fingerprinted_result(tmp_path, monkeypatch):
  from tgsr_jax.synthetic import microexpressions
  root = tmp_path / "raw"
  extraction.write_generated_database(root, "SMIC_NIR", seed=0, num_clips=3)
  marker = root / ".SMIC_NIR.complete.json"
  assert json.loads(marker.read_text())["fingerprint"]["fields"] == {
      "database": "SMIC_NIR", "num_clips": 3, "seed": 0}
  calls = []
  real = microexpressions.write_database
  monkeypatch.setattr(microexpressions, "write_database",
                      lambda *a, **k: calls.append(k) or real(*a, **k))
  extraction.write_generated_database(root, "SMIC_NIR", seed=0, num_clips=3)
  assert calls == []  # same arguments: reused
  marker.write_text("{not json")  # a damaged marker means an unfinished generation
  extraction.write_generated_database(root, "SMIC_NIR", seed=0, num_clips=3)
  assert calls == [{"seed": 0, "num_clips": 3}]
  extraction.write_generated_database(root, "SMIC_NIR", seed=0, num_clips=4)  # other settings
  assert calls[-1] == {"seed": 0, "num_clips": 4}
  assert len(extraction.read_generated_database(root, "SMIC_NIR")) == 4


def _features_config(**overrides):
  from configs import features as features_config
  config = features_config.get_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def test_extraction_without_root_needs_synthetic_and_says_so(tmp_path):
  with pytest.raises(ValueError, match=r"config.root is empty: .*--config.synthetic=True"):
    extraction.run_extraction(_features_config(database="smic_vis"), tmp_path)
  with pytest.raises(ValueError, match=r"config.synthetic=True .*config.root='/data'"):
    extraction.run_extraction(_features_config(synthetic=True, root="/data"), tmp_path)
  assert not list(tmp_path.iterdir())  # refused before writing anything
  from configs import features as features_config
  config = features_config.get_config("runlocal")  # synthetic=True, 6 SMIC-VIS clips
  result = extraction.run_extraction(config, tmp_path)
  assert result.mat_path == tmp_path / "SYNTHETIC_SMIC_VIS_seed0.mat"
  assert not (tmp_path / "SMIC_VIS.mat").exists()
  assert result.source.startswith("synthetic (tgsr_jax.synthetic.microexpressions, seed 0)")
  assert cdmer_io.read_feature_file(result.mat_path).database == "SMIC_VIS"


def test_csv_of_several_databases_needs_csv_database(tmp_path):
  rng = np.random.default_rng(0)
  rows = ["clip_dir,label,subject,database"]
  for i, db in enumerate(("A", "B", "A")):
    folder = tmp_path / "clips" / f"c{i}"
    folder.mkdir(parents=True)
    for n in range(3):
      cv2.imwrite(str(folder / f"f{n}.png"), rng.integers(0, 255, (24, 24), np.uint8))
    rows.append(f"clips/c{i},{i % 3 + 1},s{i},{db}")
  (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
  config = _features_config(database="csv", root=str(tmp_path / "list.csv"), size=48,
                            whole_frame_fallback=True, num_workers=1)
  with pytest.raises(ValueError, match=r"list.csv lists clips of 2 databases \['A', 'B'\]; set "
                                       r"--config.csv_database"):
    extraction.run_extraction(config, tmp_path / "out")
  config.csv_database = "C"
  with pytest.raises(ValueError, match=r"config.csv_database='C': .*database column holds "
                                       r"\['A', 'B'\]"):
    extraction.run_extraction(config, tmp_path / "out")
  config.csv_database = "A"
  result = extraction.run_extraction(config, tmp_path / "out")
  assert [r.clip for r in result.records] == ["c0", "c2"]
  assert result.mat_path == tmp_path / "out" / "A.mat" and result.source == config.root
  read = cdmer_io.read_feature_file(result.mat_path, "A", classes=(1, 2, 3))
  np.testing.assert_array_equal(read.labels, [1, 3])
