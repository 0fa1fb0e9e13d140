"""The decoded-image cache: built once, memory-mapped later, rebuilt for changed files or damage."""
import functools
import json
import os
import threading

import cv2
import numpy as np
import pytest

from mtl_flax.data import cache
from mtl_flax.data import readers

CALLS = []
_LOCK = threading.Lock()


def _decode(path, image_size=16):
  with _LOCK:
    CALLS.append(str(path))
  return cache.decode_face(path, image_size=image_size)


def _decode_with_target(path):
  image = _decode(path)
  return image, np.array([image.mean(), image[..., 0].mean()], np.float32)


def _write_images(folder, names, seed=0):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for name in names:
    image = cv2.GaussianBlur(rng.integers(0, 256, (24, 30, 3)).astype(np.uint8), (3, 3), 1)
    cv2.imwrite(str(folder / name), image)
    paths.append(folder / name)
  return paths


def _reference(paths, size=16):
  return np.stack([readers.crop_face(readers.read_image(p), image_size=size) for p in paths])


def _build(paths, cache_dir, decode=_decode, settings=None, **kwargs):
  CALLS.clear()
  kwargs.setdefault("num_workers", 2)
  return cache.cached_dataset("faces", paths, decode, settings or {"image_size": 16},
                              cache_dir, progress=False, **kwargs)


def test_second_start_memory_maps_without_decoding(tmp_path):
  paths = _write_images(tmp_path / "data", [f"{i}.png" for i in range(7)])
  first = _build(paths, tmp_path / "cache")
  assert first.decoded == 7 and sorted(CALLS) == sorted(map(str, paths))
  np.testing.assert_array_equal(first.images, _reference(paths))
  assert first.targets is None and first.files == tuple(map(str, paths))
  second = _build(paths, tmp_path / "cache")
  assert second.decoded == 0 and CALLS == []
  assert isinstance(second.images, np.memmap) and second.path == first.path
  np.testing.assert_array_equal(second.images, _reference(paths))
  # Other settings (or another decoder) are another cache: everything is decoded again.
  other = _build(paths, tmp_path / "cache", settings={"image_size": 16, "margin": 1.1})
  assert other.decoded == 7
  again = _build(paths, tmp_path / "cache", decode=functools.partial(_decode, image_size=12))
  assert again.decoded == 7 and again.images.shape == (7, 12, 12, 3)


def test_changed_added_and_removed_files_are_detected(tmp_path):
  paths = _write_images(tmp_path / "data", [f"{i}.png" for i in range(5)])
  _build(paths, tmp_path / "cache")
  # Same bytes, new modification time: decoded again (only that file).
  st = os.stat(paths[2])
  os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  touched = _build(paths, tmp_path / "cache")
  assert touched.decoded == 1 and CALLS == [str(paths[2])]
  # New content in a file.
  _write_images(tmp_path / "data", ["3.png"], seed=5)
  changed = _build(paths, tmp_path / "cache")
  assert changed.decoded == 1 and CALLS == [str(paths[3])]
  np.testing.assert_array_equal(changed.images, _reference(paths))
  # An added file, in the middle of the order.
  added = _write_images(tmp_path / "data", ["new.png"], seed=9)
  order = paths[:2] + added + paths[2:]
  grown = _build(order, tmp_path / "cache")
  assert grown.decoded == 1 and CALLS == [str(added[0])]
  np.testing.assert_array_equal(grown.images, _reference(order))
  # A removed file: nothing to decode, the cache shrinks.
  shrunk = _build(order[1:], tmp_path / "cache")
  assert shrunk.decoded == 0 and len(shrunk.images) == 5
  np.testing.assert_array_equal(shrunk.images, _reference(order[1:]))
  assert len(list((tmp_path / "cache").glob("faces-*.npy"))) == 1  # stale crops removed
  assert _build(order[1:], tmp_path / "cache").decoded == 0


def test_targets_are_cached_and_related_files_count(tmp_path):
  paths = _write_images(tmp_path / "data", [f"{i}.png" for i in range(4)])
  for p in paths:
    p.with_suffix(".txt").write_text("x")
  related = lambda p: [os.path.splitext(p)[0] + ".txt"]  # noqa: E731
  first = _build(paths, tmp_path / "cache", decode=_decode_with_target, related_files=related)
  want = np.array([[im.mean(), im[..., 0].mean()] for im in _reference(paths)], np.float32)
  np.testing.assert_allclose(first.targets, want)
  second = _build(paths, tmp_path / "cache", decode=_decode_with_target, related_files=related)
  assert second.decoded == 0
  np.testing.assert_allclose(second.targets, want)
  paths[1].with_suffix(".txt").write_text("changed")
  third = _build(paths, tmp_path / "cache", decode=_decode_with_target, related_files=related)
  assert third.decoded == 1 and CALLS == [str(paths[1])]
  np.testing.assert_allclose(third.targets, want)
  os.remove(paths[0].with_suffix(".txt"))
  with pytest.raises(FileNotFoundError, match=r"0\.txt \(needed for .*0\.png\)"):
    _build(paths, tmp_path / "cache", decode=_decode_with_target, related_files=related)


@pytest.mark.parametrize("damage", ["truncate_crops", "rewrite_crops", "garbage_index",
                                    "delete_crops"])
def test_a_damaged_cache_is_rebuilt(tmp_path, damage):
  paths = _write_images(tmp_path / "data", [f"{i}.png" for i in range(4)])
  first = _build(paths, tmp_path / "cache")
  crops = first.path
  del first
  if damage == "truncate_crops":
    with open(crops, "r+b") as f:
      f.truncate(os.path.getsize(crops) - 100)
  elif damage == "rewrite_crops":
    data = bytearray(crops.read_bytes())
    data[-200:] = bytes(200)
    crops.write_bytes(bytes(data))
  elif damage == "garbage_index":
    (tmp_path / "cache" / "faces.npz").write_bytes(b"not a zip file")
  else:
    crops.unlink()
  rebuilt = _build(paths, tmp_path / "cache")
  assert rebuilt.decoded == 4
  np.testing.assert_array_equal(rebuilt.images, _reference(paths))
  assert _build(paths, tmp_path / "cache").decoded == 0


def test_errors_name_the_file(tmp_path):
  paths = _write_images(tmp_path / "data", ["a.png", "b.png"])
  with pytest.raises(FileNotFoundError, match="missing.png"):
    _build(paths + [tmp_path / "data" / "missing.png"], tmp_path / "cache")
  (tmp_path / "data" / "bad.png").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="bad.png"):
    _build(paths + [tmp_path / "data" / "bad.png"], tmp_path / "cache")
  sizes = iter([16, 16, 12])
  with pytest.raises(ValueError, match=r"c\.png: crop of shape \(12, 12, 3\)"):
    more = paths + _write_images(tmp_path / "data", ["c.png"])
    _build(more, tmp_path / "cache2", decode=lambda p: _decode(p, next(sizes)), num_workers=1)
  with pytest.raises(ValueError, match="no files"):
    _build([], tmp_path / "cache")
  with pytest.raises(ValueError, match="name"):
    cache.cached_dataset("../x", paths, _decode, {}, tmp_path / "cache")
  assert not list((tmp_path / "cache2").glob("*"))  # nothing half-written


def test_process_workers_decode_the_same_crops(tmp_path):
  paths = _write_images(tmp_path / "data", [f"{i}.png" for i in range(3)])
  out = cache.cached_dataset("faces", paths, functools.partial(cache.decode_face, image_size=16),
                             {}, tmp_path / "cache", num_workers=1, executor="process",
                             progress=False)
  assert out.decoded == 3
  np.testing.assert_array_equal(out.images, _reference(paths))


def test_input_benchmark_runs_its_host_and_cache_sections(tmp_path, capsys):
  from benchmarks import mtl_input  # pylint: disable=import-outside-toplevel
  out = tmp_path / "input.json"
  record = mtl_input.main(["--sections", "host,cache", "--num_images", "12", "--file_size", "48",
                           "--host_images", "20", "--host_batch", "4", "--host_steps", "1",
                           "--image_size", "16", "--serial_sample", "3", "--workers", "2",
                           "--tmp_dir", str(tmp_path), "--json", str(out)])
  assert record == json.loads(out.read_text())
  assert record["host"]["speedup"] == pytest.approx(
      record["host"]["gather_images_per_s"] / record["host"]["today_images_per_s"])
  assert record["cache"]["cached_percent"] == pytest.approx(
      100 * record["cache"]["cached_start_seconds"] / record["cache"]["first_read_seconds"][
          "thread"])
  assert "cached start" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="unknown"):
    mtl_input.main(["--sections", "gpu"])
