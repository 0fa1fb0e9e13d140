"""From clip records to a benchmark-format feature file: preprocessing, LBP-TOP, cache, bad clips.

Per clip (the TGSR paper's Section III-A): read the frames as grayscale, detect the face on the
first frame (OpenCV Haar cascade) and crop every frame with that box, resize every frame to
``size x size``, interpolate to ``tim_length`` frames with TIM, round to uint8, and compute the
85-region LBP-TOP features. Resizing before TIM instead of after gives the same result up to
rounding (both are linear, one in space, one in time) and is several times cheaper on large
frames. Shrinking uses ``cv2.INTER_AREA`` (anti-aliased), enlarging ``cv2.INTER_LINEAR``.

Outputs (written atomically):

* ``{out}.mat``: MATLAB v5 file like the CDMER benchmark's, written by
  :func:`tgsr_jax.cdmer_io.write_feature_file`: ``{DB}_micro_feature`` (n x 15045 float64) and
  ``{DB}_micro_label`` (n x 1, 1 = Negative, 2 = Positive, 3 = Surprise);
* ``{out}_clips.csv``: one row per extracted clip (subject, clip, label, emotion, frames used,
  face box);
* ``{out}_bad_clips.txt``: the clips that could not be used and why (only when there are any).

Features of every clip are cached under ``cache_dir``
(:class:`tgsr_jax.extraction_outputs.ClipCache`), stored under the fingerprint of the frame
files (path, size, mtime) and the extraction settings, so a rerun only extracts changed clips.
This module orchestrates; :mod:`tgsr_jax.extraction_outputs` writes the metadata, the report
and the cache. Settings come as frozen objects (:mod:`tgsr_jax.settings`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
from typing import Sequence

import cv2
import numpy as np
import tqdm

from subtle_core import runfolder
from tgsr_jax import cdmer_io
from tgsr_jax import extraction_outputs
from tgsr_jax import face as face_lib
from tgsr_jax import layout as layout_lib
from tgsr_jax import lbp_top
from tgsr_jax.readers import BadClipError, ClipRecord, load_clip
from tgsr_jax.extraction_outputs import read_metadata  # noqa: F401  (re-exported)
from tgsr_jax.settings import ExtractionJob, ExtractionSettings
from tgsr_jax.tim import tim_matrix

BENCHMARK_NAMES = ("CASME2", "SMIC_HS", "SMIC_VIS", "SMIC_NIR")


@dataclasses.dataclass
class ExtractionResult:
  """What :func:`extract_database` produced.

  Attributes:
    mat_path: the feature file.
    metadata_path: the per-clip CSV.
    report_path: the bad-clip report, or None when every clip was usable.
    features: ``(n, 15045)`` in the settings' layout, rows in record order of the good clips.
    labels: ``(n,)`` ints 1..3.
    records: the good clips' records.
    boxes: the face boxes used, one per good clip.
    bad: ``(clip name, reason)`` of every unusable clip.
    num_extracted: clips computed in this run.
    num_cached: clips read from the cache.
    source: where the clips came from (the database folder, or 'synthetic ...'); set by
      :func:`run_extraction`.
  """
  mat_path: pathlib.Path
  metadata_path: pathlib.Path
  report_path: pathlib.Path | None
  features: np.ndarray
  labels: np.ndarray
  records: list[ClipRecord]
  boxes: list[face_lib.FaceBox]
  bad: list[tuple[str, str]]
  num_extracted: int
  num_cached: int
  source: str = ""


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """Resizes every frame of ``(T, H, W)`` to ``(T, size, size)`` (area when shrinking)."""
  t_len, h, w = frames.shape
  interp = cv2.INTER_AREA if size <= min(h, w) else cv2.INTER_LINEAR
  out = np.empty((t_len, size, size), dtype=frames.dtype)
  for i in range(t_len):
    out[i] = cv2.resize(frames[i], (size, size), interpolation=interp)
  return out


def preprocess_clip(frames: np.ndarray, settings: ExtractionSettings, *,
                    name: str = "clip") -> tuple[np.ndarray, face_lib.FaceBox]:
  """Face crop, resize and TIM of one grayscale clip.

  Args:
    frames: ``(T, H, W)`` uint8 grayscale, T >= 2.
    settings: the extraction settings.
    name: the clip's name for error messages.

  Returns:
    ``(clip, box)``: ``(tim_length, size, size)`` uint8 and the face box in original pixels.

  Raises:
    tgsr_jax.face.NoFaceError: no face on the first frame and no whole-frame fallback.
  """
  cropped, box = face_lib.detect_and_crop(frames, margin=settings.margin,
                                          whole_frame_fallback=settings.whole_frame_fallback,
                                          name=name)
  return resize_and_tim(cropped, size=settings.size, tim_length=settings.tim_length), box


def resize_and_tim(frames: np.ndarray, *, size: int, tim_length: int) -> np.ndarray:
  """Resizes ``(T, H, W)`` frames to ``size x size``, applies TIM, rounds to uint8.

  Returns:
    ``(tim_length, size, size)`` uint8.
  """
  small = resize_frames(np.ascontiguousarray(frames), size).astype(np.float32)
  # NumPy rather than tgsr_jax.tim: clip lengths vary, and eager JAX would compile per length.
  # einsum (no BLAS) rather than a matmul: this tiny product runs in reader threads, where
  # multi-threaded BLAS oversubscribes the cores (measured 30x slower on 2 busy cores).
  matrix = tim_matrix(small.shape[0], tim_length).astype(np.float32)
  interpolated = np.einsum("kt,thw->khw", matrix, small)
  return np.clip(np.round(interpolated), 0, 255).astype(np.uint8)


def database_variable_name(records: Sequence[ClipRecord], database: str | None = None) -> str:
  """The ``{DB}`` of the .mat variables: ``database`` or the records' common database name."""
  if database is None:
    names = sorted({r.database for r in records})
    if len(names) != 1:
      raise ValueError(f"records come from {len(names)} databases {names}; pass database= "
                       "(the CLI: --config.csv_database)")
    database = names[0]
  name = re.sub(r"\W", "_", database)
  if not name or name[0].isdigit():
    name = "DB_" + name
  return name


def extract_database(records: Sequence[ClipRecord], out_path: str | os.PathLike, *,
                     settings: ExtractionSettings = ExtractionSettings(),
                     cache_dir: str | os.PathLike | None = None, skip_bad: bool = False,
                     database: str | None = None, batch_size: int = 32,
                     num_workers: int | None = None, progress: bool = True) -> ExtractionResult:
  """Extracts the LBP-TOP features of a database's clips into a benchmark-format .mat file.

  Args:
    records: the clips, e.g. from :func:`tgsr_jax.readers.read_casme2`.
    out_path: the .mat file to write (the metadata CSV and bad-clip report go next to it).
    settings: the extraction settings.
    cache_dir: per-clip feature cache (None: no cache).
    skip_bad: continue past bad clips (listed in the report) instead of raising.
    database: ``{DB}`` of the variable names; default the records' common database name.
    batch_size: clips per LBP-TOP call.
    num_workers: threads reading and preprocessing clips (OpenCV releases the GIL); default
      ``min(4, cpu count)``.
    progress: show a tqdm progress bar.

  Returns:
    an :class:`ExtractionResult`.

  Raises:
    BadClipError: listing every bad clip by name, when there is any and ``skip_bad`` is False
      (the report file and the cache of the good clips are written first).
    ValueError: for an empty record list or unknown layout.
  """
  if not records:
    raise ValueError(f"no clip records to extract into {out_path}; the reader found no clip")
  if settings.layout not in ("benchmark", "region_major"):
    raise ValueError(f"layout must be 'benchmark' or 'region_major', got {settings.layout!r}")
  db = database_variable_name(records, database)
  out_path = pathlib.Path(out_path)
  if out_path.suffix != ".mat":
    out_path = out_path.with_name(out_path.name + ".mat")
  stem = out_path.with_suffix("")
  metadata_path = stem.with_name(stem.name + "_clips.csv")
  report_path = stem.with_name(stem.name + "_bad_clips.txt")
  cache = extraction_outputs.ClipCache(cache_dir) if cache_dir is not None else None
  if num_workers is None:
    num_workers = max(1, min(4, os.cpu_count() or 1))

  n = len(records)
  feats: list[np.ndarray | None] = [None] * n
  boxes: list[face_lib.FaceBox | None] = [None] * n
  errors: dict[int, str] = {}
  keys = [extraction_outputs.ClipCache.fingerprint(r, settings) for r in records]
  todo = []
  for i, key in enumerate(keys):
    hit = cache.load(key) if cache is not None else None
    if hit is not None:
      feats[i], boxes[i] = hit
    else:
      todo.append(i)
  num_cached = n - len(todo)

  def prepare(i):
    record = records[i]
    try:
      frames = load_clip(record)
      return i, preprocess_clip(frames, settings, name=record.name), None
    except (BadClipError, face_lib.NoFaceError) as e:
      return i, None, str(e)

  bar = tqdm.tqdm(total=n, initial=num_cached, desc=f"LBP-TOP {db}", unit="clip",
                  disable=not progress)
  pending: list[tuple[int, np.ndarray, face_lib.FaceBox]] = []

  def flush():
    if not pending:
      return
    clips = np.stack([c for _, c, _ in pending])
    out = lbp_top.lbp_top_features_batch(
        clips, layout="region_major", interpolation=settings.interpolation,
        radius=settings.radius, points=settings.points)
    for (i, _, box), row in zip(pending, out):
      feats[i], boxes[i] = row, box
      if cache is not None:
        cache.save(keys[i], row, box)
    bar.update(len(pending))
    pending.clear()

  with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool:
    for i, prepared, error in pool.map(prepare, todo):
      if error is not None:
        errors[i] = error
        bar.update(1)
        continue
      clip, box = prepared
      pending.append((i, clip, box))
      if len(pending) >= batch_size:
        flush()
    flush()
  bar.close()

  bad = [(records[i].name, errors[i]) for i in sorted(errors)]
  extraction_outputs.write_bad_clip_report(report_path, bad)
  if bad and not skip_bad:
    listing = "\n  ".join(f"{name}: {reason}" for name, reason in bad)
    raise BadClipError(f"{len(bad)} of {n} clips could not be used (report: {report_path}; "
                       f"set skip_bad=True to continue past them):\n  {listing}")

  good = [i for i in range(n) if i not in errors]
  if not good:
    raise BadClipError(f"none of the {n} clips could be used (report: {report_path})")
  features = np.stack([feats[i] for i in good]).astype(np.float64)
  if settings.layout == "benchmark":
    features = features[:, layout_lib.region_major_to_benchmark(
        num_bins=lbp_top.num_bins(settings.points))]
  labels = np.array([records[i].label for i in good], dtype=np.uint8)

  cdmer_io.write_feature_file(out_path, db, features, labels)
  extraction_outputs.write_metadata(metadata_path, [records[i] for i in good], [boxes[i] for i in good], settings)
  return ExtractionResult(
      mat_path=out_path, metadata_path=metadata_path, report_path=report_path if bad else None,
      features=features, labels=labels.astype(np.int64), records=[records[i] for i in good],
      boxes=[boxes[i] for i in good], bad=bad, num_extracted=len(todo) - len(bad),
      num_cached=num_cached)


def settings_from_config(config) -> ExtractionSettings:
  """The :class:`ExtractionSettings` of an extraction config (configs/features.py)."""
  return ExtractionJob.from_config(config).settings


_KIND_TO_DB = {"casme2": "CASME2", "smic_hs": "SMIC_HS", "smic_vis": "SMIC_VIS",
               "smic_nir": "SMIC_NIR"}


def read_generated_database(root: str | os.PathLike, name: str) -> list[ClipRecord]:
  """Reads a database that :func:`write_generated_database` laid out under ``root``."""
  from tgsr_jax import readers
  if name == "CASME2":
    return readers.read_casme2(root)
  if name.startswith("SMIC_"):
    return readers.read_smic(root, name[len("SMIC_"):])
  raise ValueError(f"unknown generated database {name!r}; expected one of {BENCHMARK_NAMES}")


def write_generated_database(root: str | os.PathLike, name: str, *, seed: int = 0,
                             num_clips: int | None = None) -> pathlib.Path:
  """Writes a synthetic database in its release layout under ``root``, once.

  A marker ``{root}/.{name}.complete.json`` (a :class:`subtle_core.runfolder.ResultStore`
  entry under the fingerprint of the database, seed and size), written after the generator
  returns, makes later calls with the same arguments skip the work. Otherwise (no marker: a
  first or interrupted run; or a different seed or size) the database's folders are deleted
  first and written anew, so no clip or frame of an earlier generation can mix into the new one.
  """
  from tgsr_jax.synthetic import microexpressions  # written by the synthetic-data module

  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  store = runfolder.ResultStore(root)
  marker = f".{name}.complete"
  fp = runfolder.fingerprint(database=name, seed=int(seed), num_clips=num_clips)
  if store.load_json(marker, fp) is not None:
    return root
  for path in (store.path(marker), root / marker):  # the marker (and an older plain one) first
    if path.exists():
      path.unlink()
  for path in microexpressions.database_paths(root, name):
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  kwargs = {"seed": int(seed)}
  if num_clips:
    kwargs["num_clips"] = int(num_clips)
  truth = microexpressions.write_database(root, name, **kwargs)
  store.save_json(marker, fp, {"clips": len(truth.clips)})
  return root


def prepare_synthetic_feature_dir(workdir: str | os.PathLike, *, seed: int = 0,
                                  databases: Sequence[str] = BENCHMARK_NAMES,
                                  num_clips: int | None = None,
                                  settings: ExtractionSettings = ExtractionSettings(),
                                  progress: bool = True) -> pathlib.Path:
  """Generates synthetic databases, extracts them, and returns the folder of their .mat files.

  Layout under ``workdir``: ``synthetic_raw/`` (the generated releases, written once),
  ``feature_cache/`` (per-clip cache) and ``features/{DB}.mat`` (+ ``{DB}_clips.csv``), readable
  like the CDMER benchmark's files.

  Args:
    workdir: the run's folder.
    seed: generator seed (database i uses the generator's own per-database derivation).
    databases: names among 'CASME2', 'SMIC_HS', 'SMIC_VIS', 'SMIC_NIR'.
    num_clips: clips per database (None: the generator's default).
    settings: extraction settings (the default is the TGSR paper's).
    progress: show progress bars.

  Returns:
    the ``features`` folder.
  """
  workdir = pathlib.Path(workdir)
  raw = workdir / "synthetic_raw"
  out_dir = workdir / "features"
  for name in databases:
    if name not in BENCHMARK_NAMES:
      raise ValueError(f"unknown database {name!r}; expected one of {BENCHMARK_NAMES}")
    write_generated_database(raw, name, seed=seed, num_clips=num_clips)
    records = read_generated_database(raw, name)
    extract_database(records, out_dir / f"{name}.mat", settings=settings,
                     cache_dir=workdir / "feature_cache", skip_bad=False, database=name,
                     progress=progress)
  return out_dir


def run_extraction(config, workdir: str | os.PathLike) -> ExtractionResult:
  """The extraction entry point (experiments/extract_features.py) as a library function.

  A real database needs ``config.root``. A generated synthetic database needs
  ``config.synthetic=True`` (and no root); its feature file is named
  ``SYNTHETIC_{DB}_seed{seed}.mat`` unless ``config.out_name`` says otherwise, and
  :attr:`ExtractionResult.source` says it is synthetic.

  Args:
    config: a configs/features.py config (read and checked once) or a
      :class:`tgsr_jax.settings.ExtractionJob`.
    workdir: output folder.

  Returns:
    the :class:`ExtractionResult`.

  Raises:
    ValueError: naming the config field that is missing or contradicts another.
  """
  from tgsr_jax import readers

  job = config if isinstance(config, ExtractionJob) else ExtractionJob.from_config(config)
  workdir = pathlib.Path(workdir)
  kind = job.database
  database = _KIND_TO_DB.get(kind)
  if job.root:
    kwargs = {"sheet": job.sheet} if kind == "casme2" and job.sheet else {}
    records = readers.read_database(kind, job.root, **kwargs)
    source = job.root
    if kind == "csv":
      records, database = _csv_database(records, job.csv_database, job.root)
    out_name = job.out_name or database_variable_name(records, database)
  else:
    raw = write_generated_database(workdir / "synthetic_raw", database, seed=job.seed,
                                   num_clips=job.num_clips or None)
    records = read_generated_database(raw, database)
    source = f"synthetic (tgsr_jax.synthetic.microexpressions, seed {job.seed}) under {raw}"
    out_name = job.out_name or f"SYNTHETIC_{database}_seed{job.seed}"
  result = extract_database(records, workdir / f"{out_name}.mat", settings=job.settings,
                            cache_dir=workdir / "cache", skip_bad=job.skip_bad,
                            database=database, num_workers=job.num_workers or None)
  return dataclasses.replace(result, source=source)


def _csv_database(records: list[ClipRecord], name: str, csv_path) -> tuple[list[ClipRecord], str]:
  """The records of one database of a clip CSV: ``name``, or the only one the CSV lists."""
  names = sorted({r.database for r in records})
  if name:
    kept = [r for r in records if r.database == name]
    if not kept:
      raise ValueError(f"config.csv_database={name!r}: {csv_path} lists no clip of that "
                       f"database; its database column holds {names}")
    return kept, name
  if len(names) > 1:
    raise ValueError(f"{csv_path} lists clips of {len(names)} databases {names}; set "
                     "--config.csv_database to the one to extract")
  if not names:
    raise ValueError(f"{csv_path} lists no clip; expected one row per clip")
  return records, names[0]
