"""CASME II as released: ``CASME2_RAW_selected/sub{NN}/{Filename}/img{N}.jpg`` + the coding sheet.

The 3-class mapping of the CDMER benchmark / TGSR paper ('cdmer3'): happiness -> Positive (2),
disgust and repression -> Negative (1), surprise -> Surprise (3); the other emotions (others,
sadness, fear) are dropped. A clip's frames are ``onset..offset`` inclusive (frame files are named
by their absolute frame number).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Mapping

from tgsr_jax.readers.frames import ClipRecord, frame_number, list_frames

SHEET_NAME = "CASME2-coding-20140508.xlsx"
FRAMES_DIR = "CASME2_RAW_selected"

CDMER3 = {"happiness": 2, "disgust": 1, "repression": 1, "surprise": 3}

# Header names (lower-cased) of the columns the reader needs, found by name so that both the
# 20140508 sheet and the 20190701 revision (which adds 'Objective Classes') parse.
_COLUMNS = {"subject": "subject", "filename": "filename", "onset": "onsetframe",
            "apex": "apexframe", "offset": "offsetframe", "action_units": "action units",
            "emotion": "estimated emotion"}


@dataclasses.dataclass(frozen=True)
class Casme2SheetRow:
  """One coded sample of the CASME II sheet.

  ``apex`` is None where the sheet has no number (one 2014 row has '/').
  """
  subject: str  # two digits, '01'
  filename: str
  onset: int
  apex: int | None
  offset: int
  action_units: str
  emotion: str  # lower case, stripped


def _as_int(value, *, sheet, row: int, column: str, optional: bool = False) -> int | None:
  if isinstance(value, bool):
    value = None
  if isinstance(value, (int, float)) and float(value).is_integer():
    return int(value)
  if isinstance(value, str) and value.strip().isdigit():
    return int(value.strip())
  if optional:
    return None
  raise ValueError(f"{sheet}: row {row} has {column} = {value!r}; expected a frame number")


def parse_casme2_sheet(path: str | os.PathLike) -> list[Casme2SheetRow]:
  """Parses the CASME II coding sheet (.xlsx) into rows.

  Args:
    path: the sheet, e.g. ``CASME2-coding-20140508.xlsx`` or the 20190701 revision.

  Returns:
    one :class:`Casme2SheetRow` per coded sample, in sheet order.

  Raises:
    FileNotFoundError: if the file is missing.
    ValueError: naming the file, if it is not an .xlsx workbook, a needed column is missing or
      onset/offset is not a number.
  """
  import openpyxl  # only the CASME II reader needs it

  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"CASME II coding sheet {path} does not exist")
  try:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
  except Exception as e:  # pylint: disable=broad-except  (BadZipFile, InvalidFileException, ...)
    raise ValueError(f"CASME II coding sheet {path} cannot be read as an .xlsx workbook "
                     f"({type(e).__name__}: {e}); expected the sheet as released "
                     f"({SHEET_NAME})") from e
  try:
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
  finally:
    workbook.close()
  if not rows:
    raise ValueError(f"{path}: the first worksheet is empty")
  header = [str(v).strip().lower() if v is not None else "" for v in rows[0]]
  index = {}
  for key, name in _COLUMNS.items():
    if name not in header:
      raise ValueError(f"{path}: header {rows[0]!r} has no column {name!r}; expected the CASME II "
                       f"coding sheet layout (Subject, Filename, OnsetFrame, ApexFrame, "
                       f"OffsetFrame, Action Units, Estimated Emotion)")
    index[key] = header.index(name)
  out = []
  for number, row in enumerate(rows[1:], start=2):
    row = tuple(row) + (None,) * (len(header) - len(row))
    subject, filename = row[index["subject"]], row[index["filename"]]
    if subject is None and filename is None:
      continue  # trailing blank rows
    subject_num = _as_int(subject, sheet=path, row=number, column="Subject")
    onset = _as_int(row[index["onset"]], sheet=path, row=number, column="OnsetFrame")
    offset = _as_int(row[index["offset"]], sheet=path, row=number, column="OffsetFrame")
    apex = _as_int(row[index["apex"]], sheet=path, row=number, column="ApexFrame", optional=True)
    if offset < onset:
      raise ValueError(f"{path}: row {number} has OffsetFrame {offset} < OnsetFrame {onset}")
    units = row[index["action_units"]]
    out.append(Casme2SheetRow(
        subject=f"{subject_num:02d}", filename=str(filename).strip(), onset=onset, apex=apex,
        offset=offset, action_units="" if units is None else str(units).strip(),
        emotion=str(row[index["emotion"]]).strip().lower()))
  return out


def class_mapping(classes: str | Mapping[str, int]) -> Mapping[str, int]:
  """Emotion -> label mapping: ``'cdmer3'`` or an explicit dict."""
  if isinstance(classes, str):
    if classes != "cdmer3":
      raise ValueError(f"classes must be 'cdmer3' or a dict emotion -> label, got {classes!r}")
    return CDMER3
  return {str(k).lower(): int(v) for k, v in classes.items()}


def read_casme2(root: str | os.PathLike, *, sheet: str | os.PathLike | None = None,
                classes: str | Mapping[str, int] = "cdmer3") -> list[ClipRecord]:
  """Reads the CASME II clips of the kept classes.

  Args:
    root: folder holding ``CASME2_RAW_selected/`` (and the sheet, unless ``sheet`` is given).
    sheet: the coding sheet; default ``{root}/CASME2-coding-20140508.xlsx``.
    classes: ``'cdmer3'`` (see the module docstring) or a dict emotion -> label.

  Returns:
    records in sheet order, frames ``onset..offset``. Frame numbers missing from the clip folder
    (or a missing folder) keep their expected path ``img{N}.jpg``, so loading that clip fails with
    an error naming the file, which the extraction reports as a bad clip.

  Raises:
    FileNotFoundError: if ``{root}/CASME2_RAW_selected`` or the sheet is missing.
    ValueError: naming the sheet, when none of its emotions maps to a class.
  """
  root = pathlib.Path(root)
  frames_root = root / FRAMES_DIR
  if not frames_root.is_dir():
    raise FileNotFoundError(f"{frames_root} does not exist; root must hold {FRAMES_DIR}/")
  sheet_path = pathlib.Path(sheet) if sheet is not None else root / SHEET_NAME
  rows = parse_casme2_sheet(sheet_path)
  mapping = class_mapping(classes)
  if not any(row.emotion in mapping for row in rows):
    emotions = sorted({row.emotion for row in rows})
    raise ValueError(f"{sheet_path}: none of its {len(rows)} rows has an emotion the class "
                     f"mapping keeps; its Estimated Emotion values are {emotions}, the mapping "
                     f"keeps {sorted(mapping)}")
  records = []
  for row in rows:
    if row.emotion not in mapping:
      continue
    folder = frames_root / f"sub{row.subject}" / row.filename
    available = {}
    if folder.is_dir():
      for path in list_frames(folder):
        available.setdefault(frame_number(path), path)
    paths = tuple(available.get(n, str(folder / f"img{n}.jpg"))
                  for n in range(row.onset, row.offset + 1))
    records.append(ClipRecord(
        database="CASME2", subject=row.subject, clip=row.filename, label=mapping[row.emotion],
        emotion=row.emotion, frame_paths=paths, onset=row.onset, apex=row.apex,
        offset=row.offset))
  return records
