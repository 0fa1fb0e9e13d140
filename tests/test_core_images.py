"""Image files and seeded generators shared by both systems (subtle_core.images, .seeding)."""
import zlib

import cv2
import numpy as np
import pytest

from subtle_core import images
from subtle_core import seeding


def test_hidden_files_and_other_suffixes_are_no_images(tmp_path):
  for name in ("img1.jpg", "IMG2.JPEG", "a.png", "b.bmp", "c.tif", "d.TIFF", "e.pgm", "f.ppm",
               "._img1.jpg", ".img3.jpg.x1y2.jpg", "notes.txt", "img4.jpg.part"):
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "folder.jpg").mkdir()
  (tmp_path / ".ipynb_checkpoints").mkdir()
  found = sorted(p.name for p in tmp_path.iterdir() if images.is_image_file(p))
  assert found == ["IMG2.JPEG", "a.png", "b.bmp", "c.tif", "d.TIFF", "e.pgm", "f.ppm",
                   "img1.jpg"]
  assert images.is_hidden(tmp_path / ".ipynb_checkpoints") and images.is_hidden("x/._a.jpg")
  assert not images.is_hidden(".hidden_parent/a.jpg")


@pytest.mark.parametrize("name", ["rgb.png", "rgb.bmp", "grey.png", "rgb.jpg"])
def test_write_image_is_rgb_in_and_the_suffix_format(tmp_path, name):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (12, 10) if name.startswith("grey") else (12, 10, 3), np.uint8)
  images.write_image(tmp_path / name, image)
  back = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
  if image.ndim == 3:
    back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
  if name.endswith(".jpg"):
    assert (tmp_path / name).read_bytes()[:2] == b"\xff\xd8"  # JPEG
    # The reference: OpenCV's own encoder at quality 95.
    ok, ref = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok and (tmp_path / name).read_bytes() == ref.tobytes()
  else:
    np.testing.assert_array_equal(back, image)  # lossless, channels in RGB order
  assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind
  with pytest.raises(OSError, match="unknown.xyz"):
    images.write_image(tmp_path / "unknown.xyz", image)


def test_tagged_rng_matches_its_definition():
  ref = np.random.default_rng([7, zlib.crc32(b"subjects"), zlib.crc32(b"A"), 3])
  np.testing.assert_array_equal(seeding.tagged_rng(7, "subjects", "A", 3).random(5),
                                ref.random(5))
  np.testing.assert_array_equal(seeding.tagged_rng(np.int64(7), "x", np.int32(2)).random(3),
                                np.random.default_rng([7, zlib.crc32(b"x"), 2]).random(3))
  a, b = seeding.tagged_rng(1, "a").random(4), seeding.tagged_rng(1, "b").random(4)
  assert not np.array_equal(a, b)
  with pytest.raises(TypeError, match="tag"):
    seeding.tagged_rng(1, 2.5)
