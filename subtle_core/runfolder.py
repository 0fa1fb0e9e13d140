"""Resumable results: each saved with the fingerprint of what determines it.

Every resumable thing in both systems (a TGSR grid chunk, a clip's features, a generated
database, a fine-tuning fold, a training run or a Table 4 row) is stored the same way:

* :func:`fingerprint` names the inputs that determine a result (settings, data arrays, file
  lists) field by field;
* :class:`ResultStore` writes the result atomically beside that fingerprint, and on a rerun
  hands back only a result made under the same fingerprint. A result made under other settings
  is recomputed, refused with the fields that differ, or reused with a warning, as the caller
  chooses (``on_mismatch``); a damaged file is recomputed.

Example::

  store = ResultStore(workdir / "chunks")
  fp = fingerprint(grid=grid_array, settings=settings, data=features)
  result = store.load_arrays("chunk_00003", fp)
  if result is None:
    result = solve(...)
    store.save_arrays("chunk_00003", fp, result)
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Literal, Mapping

import numpy as np

from subtle_core import atomic

OnMismatch = Literal["recompute", "refuse", "warn"]
_FINGERPRINT_KEY = "__fingerprint__"
# A field whose canonical JSON is at most this long is stored as its value (so a mismatch can say
# "xi: saved 0.1, now 0.2"); a longer one as a digest.
_MAX_VALUE_CHARS = 200


class FingerprintMismatch(ValueError):
  """A finished result exists under ``path`` but was made under other settings."""

  def __init__(self, path: pathlib.Path, differences: list[str], hint: str = ""):
    self.path = pathlib.Path(path)
    self.differences = differences
    text = "; ".join(differences) or "the fingerprint differs"
    super().__init__(f"{path} was made under other settings ({text}){hint}")


@dataclasses.dataclass(frozen=True)
class Fingerprint:
  """What determines a result, field by field.

  Attributes:
    fields: field name -> its value (small JSON values) or a description with a digest.
    digest: a short hash of all the fields.
  """
  fields: Mapping[str, Any]
  digest: str

  def to_json(self) -> dict[str, Any]:
    return {"digest": self.digest, "fields": dict(self.fields)}


def _canonical(value: Any) -> Any:
  """A JSON-able form of ``value``; arrays and bytes become digest descriptions."""
  if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
    return _canonical(value.item())
  if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(
      value, (str, bytes, list, tuple, dict)):
    array = np.ascontiguousarray(np.asarray(value))
    digest = hashlib.sha1(array.tobytes()).hexdigest()[:16]
    return f"array {array.dtype} {list(array.shape)} sha1:{digest}"
  if isinstance(value, (bytes, bytearray, memoryview)):
    return f"bytes sha1:{hashlib.sha1(bytes(value)).hexdigest()[:16]}"
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, enum.Enum):
    return _canonical(value.value)
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if isinstance(value, Mapping):
    return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  if hasattr(value, "to_dict") and callable(value.to_dict):  # ml_collections.ConfigDict
    return _canonical(value.to_dict())
  if isinstance(value, (list, tuple)):
    return [_canonical(v) for v in value]
  if isinstance(value, float) and not np.isfinite(value):
    return repr(value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise TypeError(f"cannot fingerprint a {type(value).__name__}: {value!r}")


def fingerprint(**fields: Any) -> Fingerprint:
  """The fingerprint of ``fields`` (arrays, dataclasses, configs, paths and JSON values).

  Arrays are hashed by dtype, shape and bytes; everything else by its canonical JSON. Fields
  whose JSON is short are kept as values so that mismatch messages can show them.
  """
  stored = {}
  h = hashlib.sha1()
  for name in sorted(fields):
    text = json.dumps(_canonical(fields[name]), sort_keys=True, separators=(",", ":"))
    h.update(name.encode() + b"\0" + text.encode() + b"\0")
    stored[name] = (json.loads(text) if len(text) <= _MAX_VALUE_CHARS else
                    f"sha1:{hashlib.sha1(text.encode()).hexdigest()[:16]}")
  return Fingerprint(fields=stored, digest=h.hexdigest()[:16])


def differences(saved: Mapping[str, Any] | None, current: Fingerprint) -> list[str]:
  """The fields in which a saved fingerprint (its ``to_json()``) differs from ``current``."""
  if not saved or "fields" not in saved:
    return ["no fingerprint saved"]
  old = saved["fields"]
  diffs = []
  for name in sorted(set(old) | set(current.fields)):
    if name not in old:
      diffs.append(f"{name}: not saved, now {_short(current.fields[name])}")
    elif name not in current.fields:
      diffs.append(f"{name}: saved {_short(old[name])}, now absent")
    elif old[name] != current.fields[name]:
      diffs.extend(_field_differences(name, old[name], current.fields[name]))
  if not diffs and saved.get("digest") != current.digest:
    diffs.append("the fingerprint differs")
  return diffs


def _field_differences(name: str, old: Any, new: Any) -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new)):
      if old.get(key, "<absent>") != new.get(key, "<absent>"):
        out.extend(_field_differences(f"{name}.{key}", old.get(key, "<absent>"),
                                      new.get(key, "<absent>")))
    return out
  return [f"{name}: saved {_short(old)}, now {_short(new)}"]


def _short(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  return text if len(text) <= 80 else text[:77] + "..."


class ResultStore:
  """A folder of results, each saved with the fingerprint it was made under.

  JSON results are stored as ``NAME.json`` (``{"fingerprint": ..., "result": ...}``), array
  results as ``NAME.npz`` (the fingerprint in an extra entry). Every write is atomic.
  """

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root)

  def path(self, name: str, suffix: str = ".json") -> pathlib.Path:
    return self.root / f"{name}{suffix}"

  # --- JSON results ---------------------------------------------------------------------------
  def save_json(self, name: str, fp: Fingerprint, result: Any) -> pathlib.Path:
    text = json.dumps({"fingerprint": fp.to_json(), "result": result}, indent=2) + "\n"
    return atomic.write_text(self.path(name), text)

  def load_json(self, name: str, fp: Fingerprint, *, on_mismatch: OnMismatch = "recompute",
                hint: str = "") -> Any | None:
    """The result saved as ``name`` under ``fp``, or None when it must be (re)computed.

    Args:
      name: the result's name in the folder.
      fp: the fingerprint the result must have been made under.
      on_mismatch: for a result made under another fingerprint, ``recompute`` (log and return
        None), ``refuse`` (raise :class:`FingerprintMismatch`) or ``warn`` (log the differing
        fields and return it anyway).
      hint: appended to the refusal's message (what the user can do).
    """
    path = self.path(name)
    if not path.is_file():
      return None
    try:
      record = json.loads(path.read_text())
      saved, result = record["fingerprint"], record["result"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      logging.warning("%s: unreadable saved result (%s: %s); recomputing it", path,
                      type(e).__name__, e)
      return None
    return self._check(path, saved, fp, result, on_mismatch, hint)

  # --- array results --------------------------------------------------------------------------
  def save_arrays(self, name: str, fp: Fingerprint, arrays: Mapping[str, Any]) -> pathlib.Path:
    if _FINGERPRINT_KEY in arrays:
      raise ValueError(f"{_FINGERPRINT_KEY!r} is reserved")
    path = self.path(name, ".npz")
    with atomic.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, **{_FINGERPRINT_KEY: np.asarray(json.dumps(fp.to_json()))},
                 **{k: np.asarray(v) for k, v in arrays.items()})
    return path

  def load_arrays(self, name: str, fp: Fingerprint, *, on_mismatch: OnMismatch = "recompute",
                  hint: str = "") -> dict[str, np.ndarray] | None:
    """Like :meth:`load_json`, for results saved by :meth:`save_arrays`."""
    path = self.path(name, ".npz")
    if not path.is_file():
      return None
    try:
      with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
      saved = json.loads(str(arrays.pop(_FINGERPRINT_KEY)))
    except Exception as e:  # pylint: disable=broad-except  (a truncated or foreign file)
      logging.warning("%s: unreadable saved result (%s: %s); recomputing it", path,
                      type(e).__name__, e)
      return None
    return self._check(path, saved, fp, arrays, on_mismatch, hint)

  # --- fingerprints alone (e.g. a training run whose results are its checkpoints) --------------
  def check(self, name: str, fp: Fingerprint, *, on_mismatch: OnMismatch = "refuse",
            hint: str = "") -> bool:
    """Whether ``name`` was saved under ``fp``; False when nothing is saved yet.

    A mismatch is handled as in :meth:`load_json` (``recompute`` returns False).
    """
    return self.load_json(name, fp, on_mismatch=on_mismatch, hint=hint) is not None

  def saved_fingerprint(self, name: str) -> dict[str, Any] | None:
    """The fingerprint saved with JSON result ``name`` (its ``to_json()``), if readable."""
    try:
      return json.loads(self.path(name).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
      return None

  @staticmethod
  def _check(path, saved, fp, result, on_mismatch, hint):
    if isinstance(saved, Mapping) and saved.get("digest") == fp.digest:
      return result
    diffs = differences(saved if isinstance(saved, Mapping) else None, fp)
    if on_mismatch == "refuse":
      raise FingerprintMismatch(path, diffs, hint)
    if on_mismatch == "warn":
      logging.warning("%s was made under other settings (%s); using it as asked", path,
                      "; ".join(diffs))
      return result
    if on_mismatch != "recompute":
      raise ValueError(f"on_mismatch must be 'recompute', 'refuse' or 'warn', got {on_mismatch!r}")
    logging.info("%s was made under other settings (%s); recomputing it", path, "; ".join(diffs))
    return None
