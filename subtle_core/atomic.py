"""Atomic file writes: write a temporary file in the destination folder, then rename it."""
from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Iterator

# The process umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path next to ``path``; renames it onto ``path`` if the block succeeds.

  An interrupted or failing write leaves ``path`` as it was (and no temporary file behind). The
  file gets the permissions a plain ``open`` would give it (0666 less the umask), not the private
  0600 of ``mkstemp``. Readers of result folders skip the hidden temporary names (``.NAME.*``)
  that a killed process can leave behind.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes ``text`` to ``path`` atomically."""
  with atomic_path(path) as tmp:
    tmp.write_text(text)
  return pathlib.Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes ``data`` to ``path`` atomically."""
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)
  return pathlib.Path(path)
