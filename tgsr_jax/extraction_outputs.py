"""What feature extraction writes and keeps: the per-clip metadata CSV, the bad-clip report
and the per-clip feature cache (a :class:`subtle_core.runfolder.ResultStore`).

Pure IO; :mod:`tgsr_jax.extraction` decides what to write.
"""
from __future__ import annotations

import csv
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from subtle_core import atomic
from subtle_core import runfolder
from tgsr_jax import face as face_lib
from tgsr_jax.readers import ClipRecord
from tgsr_jax.settings import ExtractionSettings

# Part of every clip's fingerprint; raise it when the pipeline changes what it computes.
CACHE_VERSION = 2


class ClipCache:
  """Per-clip LBP-TOP features and face boxes, each stored under its fingerprint.

  A clip's fingerprint covers its frame files (path, size, modification time) and the
  extraction settings that change its features (:meth:`fingerprint`); its entry is named by the
  fingerprint's digest. A damaged entry, or one saved under another fingerprint, is recomputed.
  """

  def __init__(self, root: str | os.PathLike):
    self.store = runfolder.ResultStore(root)

  @staticmethod
  def fingerprint(record: ClipRecord, settings: ExtractionSettings) -> runfolder.Fingerprint:
    frames = []
    for path in record.frame_paths:
      try:
        st = os.stat(path)
        stamp = [st.st_size, st.st_mtime_ns]
      except OSError:
        stamp = [-1, -1]
      frames.append([os.path.abspath(path)] + stamp)
    return runfolder.fingerprint(version=CACHE_VERSION, settings=settings.cache_fields(),
                                 frames=frames)

  def load(self, fp: runfolder.Fingerprint) -> tuple[np.ndarray, face_lib.FaceBox] | None:
    """The saved ``(features, box)`` of a clip, or None when it must be computed."""
    arrays = self.store.load_arrays(fp.digest, fp)
    if arrays is None:
      return None
    try:
      box = arrays["box"]
      return arrays["features"], face_lib.FaceBox(*(int(v) for v in box[:4]),
                                                  detected=bool(box[4]))
    except (KeyError, IndexError, TypeError, ValueError):
      return None  # a foreign entry under the right name: recomputed

  def save(self, fp: runfolder.Fingerprint, features: np.ndarray,
           box: face_lib.FaceBox) -> pathlib.Path:
    return self.store.save_arrays(fp.digest, fp, {
        "features": features, "box": np.array(box.as_tuple() + (int(box.detected),))})


def write_bad_clip_report(path: pathlib.Path, bad: Sequence[tuple[str, str]]) -> None:
  """Lists the bad clips (``name<TAB>reason``); with none, removes a stale report."""
  if bad:
    atomic.write_text(path, "\n".join(f"{name}\t{reason}" for name, reason in bad) + "\n")
  elif path.exists():
    path.unlink()  # a stale report of an earlier run would mislead


def write_metadata(path: pathlib.Path, records: Iterable[ClipRecord],
                   boxes: Iterable[face_lib.FaceBox], settings: ExtractionSettings) -> None:
  """One row per extracted clip: subject, clip, label, frames used, face box, TIM settings."""
  header = ["index", "database", "subject", "clip", "label", "emotion", "num_frames",
            "first_frame", "last_frame", "onset", "apex", "offset", "face_x0", "face_y0",
            "face_x1", "face_y1", "face_detected", "tim_length", "size"]
  with atomic.atomic_path(path) as tmp:
    with open(tmp, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(header)
      for i, (r, b) in enumerate(zip(records, boxes)):
        w.writerow([i, r.database, r.subject, r.clip, r.label, r.emotion, len(r.frame_paths),
                    os.path.basename(r.frame_paths[0]), os.path.basename(r.frame_paths[-1]),
                    "" if r.onset is None else r.onset, "" if r.apex is None else r.apex,
                    "" if r.offset is None else r.offset, b.x0, b.y0, b.x1, b.y1,
                    int(b.detected), settings.tim_length, settings.size])


def read_metadata(path: str | os.PathLike) -> list[dict[str, str]]:
  """Reads the per-clip CSV written next to a feature file."""
  with open(path, newline="") as f:
    return list(csv.DictReader(f))
