"""A decoded-image cache: decode and crop a dataset once, in parallel; memory-map it afterwards.

`cached_dataset(name, files, decode_fn, settings, cache_dir)` returns the uint8 crops of
``files`` (and the targets ``decode_fn`` derives from each file, e.g. moved landmarks):

* the first call decodes every file with ``decode_fn`` on all cores (a thread pool by default:
  OpenCV's decoding and warping release the GIL; ``executor='process'`` for decoders that do
  not) with a progress bar, and writes the crops to ``cache_dir/NAME-DIGEST.npy`` and an index
  ``cache_dir/NAME.npz`` (files, sizes, modification times, targets, fingerprint), each
  atomically, the index last;
* a later call with the same files (path, size, modification time in ns), the same ``settings``
  and the same decoder memory-maps the crops (`np.load(mmap_mode='r')`): no image is opened;
* when files were added, removed or changed, only the added or changed files are decoded; the
  crops of unchanged files are copied from the old cache (an incremental rebuild). Changed
  ``settings`` or decoder rebuild everything;
* a damaged cache (an unreadable index; a missing, truncated or rewritten crop file, checked by
  its size and 64 sampled blocks, not a full hash) is rebuilt.

The crop file's name carries the fingerprint's digest, so an index always names the crop file
written with it, even when two processes build the same cache at once.

Where the readers' caches live (`cache_dir_setting`, the `data.*.cache_dir` config fields):
'' = the user's cache folder, `$XDG_CACHE_HOME/subtle/datasets` (`~/.cache/subtle/datasets`
when XDG_CACHE_HOME is unset), never a folder inside the (possibly read-only, possibly shared)
dataset root; a path = that folder; 'none' = no cache (every start decodes, nothing written).
Each dataset root has its own entries there (`cache_name`: the reader, the root's folder name
and a digest of its absolute path), so one cache folder serves every dataset.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import pathlib
import re
from typing import Any, Callable, Literal, Sequence

import numpy as np

from subtle_core import atomic
from subtle_core import runfolder

_FORMAT = 1
_CHUNK = 16  # files per task handed to a worker


@dataclasses.dataclass(frozen=True)
class CachedData:
  """A dataset's crops, as cached.

  Attributes:
    images: (N, S, S, C) uint8, memory-mapped from the cache.
    targets: (N, ...) array of the decoder's targets, or None when it returns none.
    files: the N source files, in the order given.
    decoded: how many files this call decoded (0 when everything came from the cache).
    path: the crop file.
  """
  images: np.ndarray
  targets: np.ndarray | None
  files: tuple
  decoded: int
  path: pathlib.Path


def default_cache_dir() -> pathlib.Path:
  """The user's dataset cache: `$XDG_CACHE_HOME/subtle/datasets` or `~/.cache/subtle/datasets`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "subtle" / "datasets"


def cache_dir_setting(value: str, *, field: str = "cache_dir") -> pathlib.Path | None:
  """The cache folder a `cache_dir` config value names: '' -> `default_cache_dir()`,
  'none' -> None (no cache), anything else -> that folder (`~` expanded).

  Raises:
    ValueError: ``value`` names an existing file (``field`` named).
  """
  value = str(value or "").strip()
  if value.lower() == "none":
    return None
  path = default_cache_dir() if not value else pathlib.Path(value).expanduser()
  if path.exists() and not path.is_dir():
    raise ValueError(f"{field}: {path} is a file; expected a folder for the dataset cache "
                     "('' = the default, 'none' = no cache)")
  return path


def cache_name(kind: str, root) -> str:
  """The name of the cache of dataset ``root`` read by reader ``kind`` (see `cached_dataset`).

  The root's folder name keeps the cache folder legible; a digest of its absolute path keeps two
  roots of the same name apart.
  """
  root = pathlib.Path(root).expanduser().absolute()
  slug = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)[:40].lstrip(".") or "root"
  digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
  return f"{kind}-{slug}-{digest}"


def file_entries(files: Sequence, related_files: Callable | None = None):
  """(sizes, modification times in ns) of ``files`` and their related files, each (N, K) int64.

  Column 0 describes the file itself, columns 1.. the files ``related_files(file)`` names
  (e.g. its `.pts` landmarks), which the decoder reads too.

  Raises:
    FileNotFoundError: a file does not exist (named).
  """
  groups = [[path] + ([] if related_files is None else [str(r) for r in related_files(path)])
            for path in files]
  width = max((len(g) for g in groups), default=1)
  sizes = np.full((len(files), width), -1, np.int64)
  mtimes = np.full((len(files), width), -1, np.int64)
  for i, group in enumerate(groups):
    for k, path in enumerate(group):
      try:
        st = os.stat(path)
      except FileNotFoundError:
        raise FileNotFoundError(f"dataset file not found: {path}" if k == 0 else
                                f"file not found: {path} (needed for {group[0]})") from None
      sizes[i, k], mtimes[i, k] = st.st_size, st.st_mtime_ns
  return sizes, mtimes


def decoder_name(fn: Callable) -> Any:
  """What names a decoder in the fingerprint: its qualified name (and a partial's arguments)."""
  if isinstance(fn, functools.partial):
    return {"function": decoder_name(fn.func), "args": list(fn.args),
            "keywords": dict(fn.keywords)}
  return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _sample_digest(path: pathlib.Path, blocks: int = 64, block: int = 4096) -> str:
  """A cheap check of a large file: its size and 64 blocks spread over it."""
  size = path.stat().st_size
  h = hashlib.sha1(str(size).encode())
  with open(path, "rb") as f:
    for offset in np.linspace(0, max(size - block, 0), blocks).astype(np.int64):
      f.seek(int(offset))
      h.update(f.read(block))
  return h.hexdigest()[:16]


def _decode_chunk(decode_fn, paths):
  return [decode_fn(p) for p in paths]


def _split_result(result, path):
  image, target = (result if isinstance(result, tuple) else (result, None))
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"{path}: the decoder returned a {image.dtype} array of shape "
                     f"{image.shape}; expected an (S, S, C) uint8 crop")
  return image, None if target is None else np.asarray(target)


def _decode_all(paths, decode_fn, *, num_workers, executor, progress, name):
  """Yields (position, image, target) for ``paths`` in order, decoded in parallel."""
  if not paths:
    return
  from tqdm import auto as tqdm  # pylint: disable=import-outside-toplevel
  pool_cls = {"thread": concurrent.futures.ThreadPoolExecutor,
              "process": concurrent.futures.ProcessPoolExecutor}.get(executor)
  if pool_cls is None:
    raise ValueError(f"executor: expected 'thread' or 'process', got {executor!r}")
  chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
  bar = tqdm.tqdm(total=len(paths), desc=f"{name}: decoding", unit="img", disable=not progress,
                  mininterval=1.0)
  if executor == "process":
    # Spawned workers: forking a process whose JAX runtime holds threads can deadlock.
    pool = pool_cls(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"))
  else:
    pool = pool_cls(max_workers=num_workers)
  pending = collections.deque()
  position = 0
  try:
    next_chunk = 0
    while next_chunk < len(chunks) or pending:
      # A bounded window of chunks in flight keeps memory flat on a large dataset.
      while next_chunk < len(chunks) and len(pending) < 4 * num_workers:
        pending.append(pool.submit(_decode_chunk, decode_fn, chunks[next_chunk]))
        next_chunk += 1
      for result in pending.popleft().result():
        image, target = _split_result(result, paths[position])
        yield position, image, target
        position += 1
        bar.update(1)
  except BaseException:
    pool.shutdown(wait=False, cancel_futures=True)
    raise
  finally:
    bar.close()
  pool.shutdown()


def decode_parallel(files: Sequence, decode_fn: Callable, *, num_workers: int | None = None,
                    executor: Literal["thread", "process"] = "thread", progress: bool = False,
                    name: str = "images"):
  """Decodes ``files`` in parallel without caching; returns (crops (N, ...) uint8, targets or None).

  Args:
    files: the source files.
    decode_fn, num_workers, executor, progress: as in `cached_dataset`.
    name: the progress bar's label.
  """
  files = [str(f) for f in files]
  images, targets = [], []
  for _, image, target in _decode_all(files, decode_fn, name=name, progress=progress,
                                      num_workers=num_workers or len(os.sched_getaffinity(0)),
                                      executor=executor):
    if images and (image.shape != images[0].shape or (target is None) != (targets[0] is None)):
      raise ValueError(f"{files[len(images)]}: crop of shape {image.shape} or its target differs "
                       f"from the others' ({images[0].shape})")
    images.append(image)
    targets.append(target)
  if not images:
    raise ValueError(f"decode_parallel {name!r}: no files given")
  return np.stack(images), None if targets[0] is None else np.stack(targets)


class _Old:
  """The previous cache's crops, for an incremental rebuild."""

  def __init__(self, arrays, images):
    self.images = images
    self.targets = arrays.get("targets")
    self.index = {key: i for i, key in enumerate(_keys(arrays["files"].tolist(), arrays["sizes"],
                                                         arrays["mtimes"]))}


def _keys(files, sizes, mtimes):
  return [(f, tuple(s), tuple(m)) for f, s, m in zip(files, sizes.tolist(), mtimes.tolist())]


def _open_images(cache_dir: pathlib.Path, arrays) -> np.ndarray | None:
  """The crop file named by an index, memory-mapped, or None if it is missing or damaged."""
  try:
    path = cache_dir / str(arrays["images_file"])
    if _sample_digest(path) != str(arrays["images_check"]):
      raise ValueError("its contents changed since the index was written")
    images = np.load(path, mmap_mode="r", allow_pickle=False)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(arrays["files"]):
      raise ValueError(f"it holds {images.dtype} {images.shape}, the index {len(arrays['files'])} "
                       "uint8 crops")
    return images
  except (OSError, ValueError, KeyError) as e:
    logging.warning("%s: the cached crops are unusable (%s); rebuilding them", cache_dir, e)
    return None


def _read_old(store: runfolder.ResultStore, name: str, settings_digest: str):
  path = store.path(name, ".npz")
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
    if str(arrays["settings_digest"]) != settings_digest:
      return None
  except Exception:  # pylint: disable=broad-except  (a damaged index: rebuild everything)
    return None
  images = _open_images(store.root, arrays)
  return None if images is None else _Old(arrays, images)


def cached_dataset(name: str, files: Sequence, decode_fn: Callable, settings: Any,
                   cache_dir, *, related_files: Callable | None = None,
                   num_workers: int | None = None,
                   executor: Literal["thread", "process"] = "thread",
                   progress: bool = True) -> CachedData:
  """The crops of ``files``, decoded once and memory-mapped afterwards (see the module docstring).

  Args:
    name: the cache's name in ``cache_dir`` (e.g. '300w-train'); letters, digits, '-', '_', '.'.
    files: the source files, in the order the dataset wants them.
    decode_fn: ``decode_fn(path) -> crop`` or ``-> (crop, target)``, crop an (S, S, C) uint8
      array; a module-level function or a `functools.partial` of one (``executor='process'``
      pickles it).
    settings: everything that determines the crops besides the files and the decoder's
      partial arguments (crop size, margins, face detection), JSON-able; part of the fingerprint.
    cache_dir: folder of the cache files.
    related_files: ``related_files(file) -> paths`` of other files the decoder reads for
      ``file`` (e.g. its `.pts`); their sizes and modification times count as the file's.
    num_workers: parallel decoders (default: the CPUs this process may use).
    executor: 'thread' or 'process'.
    progress: show a progress bar while decoding.

  Returns:
    `CachedData`.

  Raises:
    FileNotFoundError: a file in ``files`` does not exist.
    ValueError: ``files`` is empty, ``name`` is unusable, or the decoder returns crops of
      different shapes (the first differing file named).
  """
  if not name or any(not (c.isalnum() or c in "-_.") for c in name) or name.startswith("."):
    raise ValueError(f"cached_dataset: name {name!r} must be letters, digits, '-', '_' or '.'")
  files = tuple(str(f) for f in files)
  if not files:
    raise ValueError(f"cached_dataset {name!r}: no files given")
  cache_dir = pathlib.Path(cache_dir)
  num_workers = num_workers or len(os.sched_getaffinity(0))
  sizes, mtimes = file_entries(files, related_files)
  settings_fp = runfolder.fingerprint(format=_FORMAT, name=name, settings=settings,
                                      decoder=decoder_name(decode_fn))
  # The file list as one array: hashed at once, not string by string (a cached start of a
  # large dataset is mostly this bookkeeping).
  fp = runfolder.fingerprint(settings=settings_fp.digest, files=np.asarray(files), sizes=sizes,
                             mtimes=mtimes)
  store = runfolder.ResultStore(cache_dir)
  arrays = store.load_arrays(name, fp)
  if arrays is not None:
    images = _open_images(cache_dir, arrays)
    if images is not None:
      targets = arrays["targets"] if "targets" in arrays else None
      return CachedData(images, targets, files, 0, cache_dir / str(arrays["images_file"]))

  old = _read_old(store, name, settings_fp.digest)
  keys = _keys(files, sizes, mtimes)
  reuse = {} if old is None else {i: old.index[k] for i, k in enumerate(keys) if k in old.index}
  todo = [i for i in range(len(files)) if i not in reuse]
  images_path = cache_dir / f"{name}-{fp.digest}.npy"
  cache_dir.mkdir(parents=True, exist_ok=True)
  targets = None
  out = None
  with atomic.atomic_path(images_path) as tmp:

    def allocate(shape, target):
      nonlocal out, targets
      out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                      shape=(len(files),) + tuple(shape))
      if target is not None:
        targets = np.zeros((len(files),) + target.shape, target.dtype)

    if reuse:
      first = next(iter(reuse.values()))
      allocate(old.images.shape[1:], None if old.targets is None else old.targets[first])
      for i, j in reuse.items():
        out[i] = old.images[j]
        if targets is not None:
          targets[i] = old.targets[j]
    todo_paths = [files[i] for i in todo]
    for position, image, target in _decode_all(todo_paths, decode_fn, num_workers=num_workers,
                                               executor=executor, progress=progress, name=name):
      i = todo[position]
      if out is None:
        allocate(image.shape, target)
      if image.shape != out.shape[1:]:
        raise ValueError(f"{files[i]}: crop of shape {image.shape}, the others' {out.shape[1:]}; "
                         "the decoder must return one size")
      if (target is None) != (targets is None) or (
          target is not None and target.shape != targets.shape[1:]):
        raise ValueError(f"{files[i]}: the decoder's target does not match the other files'")
      out[i] = image
      if target is not None:
        targets[i] = target
    out.flush()
    del out
  if reuse:
    logging.info("%s: %d of %d crops reused from the cache, %d decoded", name, len(reuse),
                 len(files), len(todo))
  record = {"files": np.asarray(files), "sizes": sizes, "mtimes": mtimes,
            "settings_digest": np.asarray(settings_fp.digest),
            "settings": np.asarray(json.dumps(settings_fp.to_json())),
            "images_file": np.asarray(images_path.name),
            "images_check": np.asarray(_sample_digest(images_path))}
  if targets is not None:
    record["targets"] = targets
  store.save_arrays(name, fp, record)
  for stale in cache_dir.glob(f"{name}-*.npy"):
    if stale != images_path and stale.name[len(name) + 1:-4].isalnum():
      stale.unlink(missing_ok=True)
  images = np.load(images_path, mmap_mode="r", allow_pickle=False)
  return CachedData(images, targets, files, len(todo), images_path)


def decode_face(path, *, image_size: int = 96, face_detection: bool = False,
                margin: float = 1.2) -> np.ndarray:
  """Decoder of the expression readers' faces (`readers.crop_face` of `readers.read_image`)."""
  from mtl_flax.data import readers  # pylint: disable=import-outside-toplevel
  return readers.crop_face(readers.read_image(path), image_size=image_size,
                           face_detection=face_detection, margin=margin)


def decode_landmark_face(path, *, image_size: int = 96, margin: float = 1.3):
  """Decoder of 300-W-style faces: the image and the `.pts` of the same stem, cropped together.

  Returns:
    (crop (S, S, 3) uint8, (68, 2) float32 normalised landmarks).
  """
  from mtl_flax.data import readers  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  return readers.crop_with_landmarks(readers.read_image(path), readers.read_pts(
      path.with_suffix(".pts")), image_size=image_size, margin=margin)
