"""Random generators named by a seed and tags, so each stream of generated data is independent.

``tagged_rng(seed, "subjects", "expression")`` is ``np.random.default_rng`` seeded with the
sequence ``[seed, crc32("subjects"), crc32("expression")]``: a string tag enters as the CRC-32 of
its UTF-8 bytes, an integer tag (a clip's index) as itself. Adding a stream never shifts the
numbers another stream draws, unlike drawing all streams from one generator in turn.
"""
from __future__ import annotations

import zlib

import numpy as np


def tagged_rng(seed: int, *tags: str | int) -> np.random.Generator:
  """A generator for ``seed`` and ``tags`` (strings or non-negative integers).

  Raises:
    TypeError: a tag is neither a string nor an integer.
  """
  words = [int(seed)]
  for tag in tags:
    if isinstance(tag, str):
      words.append(zlib.crc32(tag.encode()))
    elif isinstance(tag, (int, np.integer)) and not isinstance(tag, bool):
      words.append(int(tag))
    else:
      raise TypeError(f"a seed tag must be a string or an integer, got {tag!r}")
  return np.random.default_rng(words)
