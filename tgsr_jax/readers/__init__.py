"""Readers of raw micro-expression databases (CASME II, SMIC, a generic CSV) and clip loading."""
from tgsr_jax.readers.casme2 import CDMER3, Casme2SheetRow, parse_casme2_sheet, read_casme2
from tgsr_jax.readers.frames import (LABEL_NAMES, BadClipError, ClipRecord, list_frames, load_clip,
                                     natural_key, read_frame)
from tgsr_jax.readers.generic import read_clip_csv
from tgsr_jax.readers.smic import read_smic

__all__ = [
    "CDMER3", "Casme2SheetRow", "parse_casme2_sheet", "read_casme2", "LABEL_NAMES", "BadClipError",
    "ClipRecord", "list_frames", "load_clip", "natural_key", "read_frame", "read_clip_csv",
    "read_smic", "read_database",
]


def read_database(kind: str, root: str, **kwargs) -> list[ClipRecord]:
  """Dispatches on a database kind: 'casme2', 'smic_hs', 'smic_vis', 'smic_nir' or 'csv'.

  For 'csv', ``root`` is the CSV file.
  """
  kind = kind.lower()
  if kind == "casme2":
    return read_casme2(root, **kwargs)
  if kind in ("smic_hs", "smic_vis", "smic_nir"):
    return read_smic(root, kind.split("_")[1], **kwargs)
  if kind == "csv":
    return read_clip_csv(root, **kwargs)
  raise ValueError(
      f"database kind must be casme2, smic_hs, smic_vis, smic_nir or csv, got {kind!r}")
