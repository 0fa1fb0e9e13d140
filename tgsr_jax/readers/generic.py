"""A generic clip list: a CSV with columns clip_dir, label, subject, database (emotion optional).

``clip_dir`` is a folder of frame images, relative to the CSV's folder or absolute; ``label`` is
1, 2, 3 or a class name (negative, positive, surprise).
"""
from __future__ import annotations

import csv
import os
import pathlib

from tgsr_jax.readers.frames import LABEL_NAMES, ClipRecord, list_frames

REQUIRED = ("clip_dir", "label", "subject", "database")
_LABELS_BY_NAME = {v.lower(): k for k, v in LABEL_NAMES.items()}


def read_clip_csv(csv_path: str | os.PathLike) -> list[ClipRecord]:
  """Reads the clips listed in a CSV file.

  Args:
    csv_path: the CSV; its header must name at least clip_dir, label, subject, database.

  Returns:
    one record per row, in file order; ``clip`` is the clip folder's name.

  Raises:
    FileNotFoundError: if the CSV is missing.
    ValueError: naming the file and line for a missing column or a bad label.
  """
  csv_path = pathlib.Path(csv_path)
  if not csv_path.is_file():
    raise FileNotFoundError(f"clip list {csv_path} does not exist")
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    fields = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in fields]
    if missing:
      raise ValueError(f"{csv_path}: missing column(s) {missing}; expected {list(REQUIRED)}")
    records = []
    for line, row in enumerate(reader, start=2):
      row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
      raw = row["label"]
      if raw.isdigit() and int(raw) in LABEL_NAMES:
        label = int(raw)
      elif raw.lower() in _LABELS_BY_NAME:
        label = _LABELS_BY_NAME[raw.lower()]
      else:
        raise ValueError(f"{csv_path}:{line}: label {raw!r} is not 1, 2, 3 or one of "
                         f"{sorted(_LABELS_BY_NAME)}")
      clip_dir = pathlib.Path(row["clip_dir"])
      if not clip_dir.is_absolute():
        clip_dir = csv_path.parent / clip_dir
      # A missing folder stays a record: extraction reports it as a bad clip naming the folder.
      frames = tuple(list_frames(clip_dir)) if clip_dir.is_dir() else ()
      records.append(ClipRecord(
          database=row["database"], subject=row["subject"], clip=clip_dir.name, label=label,
          emotion=row.get("emotion") or LABEL_NAMES[label].lower(), frame_paths=frames,
          folder=str(clip_dir)))
  return records
