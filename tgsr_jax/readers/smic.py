"""SMIC (HS, VIS, NIR) as released: ``SMIC/{HS|VIS|NIR}/s{subject}/micro/{emotion}/{clip}/``.

Every image file of a clip folder is a frame of the clip (numerically sorted); the emotion
folders negative / positive / surprise give the labels 1 / 2 / 3. Their names are matched
case-insensitively (``Negative`` is ``negative``); any other folder under ``micro/`` is an error
(hidden ones, such as ``.DS_Store``, are skipped), so no clip is dropped unnoticed.
"""
from __future__ import annotations

import os
import pathlib

from tgsr_jax.readers.frames import ClipRecord, list_frames, natural_key

VARIANTS = ("HS", "VIS", "NIR")
EMOTIONS = {"negative": 1, "positive": 2, "surprise": 3}


def read_smic(root: str | os.PathLike, variant: str) -> list[ClipRecord]:
  """Reads the micro-expression clips of one SMIC variant.

  Args:
    root: folder holding ``SMIC/`` (a folder holding ``HS/``, ``VIS/``, ``NIR/`` directly is
      accepted too).
    variant: 'HS', 'VIS' or 'NIR' (case-insensitive; 'SMIC_HS' also works).

  Returns:
    records sorted by subject, emotion and clip; subject ids without the 's' ('3').

  Raises:
    ValueError: for an unknown variant.
    FileNotFoundError: if the variant's folder is missing or holds no clip.
    ValueError: naming the folder, for a folder under ``micro/`` that is not an emotion, or two
      folders of one emotion (``negative`` and ``Negative``).
  """
  name = str(variant).upper().removeprefix("SMIC_")
  if name not in VARIANTS:
    raise ValueError(f"SMIC variant must be one of {VARIANTS}, got {variant!r}")
  root = pathlib.Path(root)
  base = root / "SMIC" / name
  if not base.is_dir() and (root / name).is_dir():
    base = root / name
  if not base.is_dir():
    raise FileNotFoundError(f"{root / 'SMIC' / name} does not exist; root must hold SMIC/{name}/")
  records = []
  subjects = sorted((p for p in base.iterdir() if p.is_dir() and p.name.lower().startswith("s")),
                    key=lambda p: natural_key(p.name))
  for subject_dir in subjects:
    micro = subject_dir / "micro"
    if not micro.is_dir():
      continue
    emotion_dirs: dict[str, pathlib.Path] = {}
    for folder in sorted(micro.iterdir()):
      if folder.name.startswith(".") or not folder.is_dir():
        continue
      emotion = folder.name.lower()
      if emotion not in EMOTIONS:
        raise ValueError(f"{folder}: not an emotion folder; expected one of "
                         f"{sorted(EMOTIONS)} (any case) under {micro}")
      if emotion in emotion_dirs:
        raise ValueError(f"{micro} holds both {emotion_dirs[emotion].name}/ and {folder.name}/; "
                         "keep one folder per emotion")
      emotion_dirs[emotion] = folder
    for emotion, label in EMOTIONS.items():
      emotion_dir = emotion_dirs.get(emotion)
      if emotion_dir is None:
        continue
      clips = sorted((p for p in emotion_dir.iterdir() if p.is_dir()),
                     key=lambda p: natural_key(p.name))
      for clip_dir in clips:
        records.append(ClipRecord(
            database=f"SMIC_{name}", subject=subject_dir.name[1:], clip=clip_dir.name,
            label=label, emotion=emotion, frame_paths=tuple(list_frames(clip_dir)),
            folder=str(clip_dir)))
  if not records:
    raise FileNotFoundError(f"no clip folders found under {base}/s*/micro/"
                            f"{{negative,positive,surprise}}/")
  return records
