"""Readers and writers of CDMER benchmark feature files.

Supported files:

* MATLAB v5 ``.mat`` (scipy) and MATLAB v7.3 ``.mat`` (HDF5, h5py) holding ``{DB}_micro_feature``
  and ``{DB}_micro_label`` with DB in CASME2, SMIC_HS, SMIC_VIS, SMIC_NIR; features stored either
  samples x features (v5 files of the benchmark) or features x samples (the v7.3 files, as MATLAB
  writes them column-major);
* ``.npz`` with the same two variables, or with ``features`` and ``labels`` (then the database
  comes from a ``database`` entry or must be named by the caller).

Labels are kept as stored (1 = Negative, 2 = Positive, 3 = Surprise in the benchmark).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import numpy as np

from subtle_core import atomic

# Database name -> the one-letter code used in the protocol (H->V, C->N, ...).
DATABASE_CODES = {"CASME2": "C", "SMIC_HS": "H", "SMIC_VIS": "V", "SMIC_NIR": "N"}
CODE_DATABASES = {v: k for k, v in DATABASE_CODES.items()}
CLASS_NAMES = {1: "Negative", 2: "Positive", 3: "Surprise"}
FEATURE_SUFFIXES = (".mat", ".npz")

_VARIABLE = re.compile(r"^(CASME2|SMIC_HS|SMIC_VIS|SMIC_NIR)_micro_(feature|label)$")


class FeatureFileError(ValueError):
  """A feature file that cannot be used; the message names the file and what was expected."""


@dataclasses.dataclass(frozen=True)
class FeatureSet:
  """One database's features.

  Attributes:
    database: CASME2, SMIC_HS, SMIC_VIS or SMIC_NIR (or another name given by the caller).
    features: (n, Kd) float64, rows are samples.
    labels: (n,) int64 as stored (1..C).
    path: the file read.
  """
  database: str
  features: np.ndarray
  labels: np.ndarray
  path: pathlib.Path

  @property
  def code(self) -> str:
    return DATABASE_CODES.get(self.database, self.database)


def _mat_modules():
  """h5py and scipy.io, imported when a .mat file is read or written (``import tgsr_jax`` stays
  light)."""
  import h5py  # noqa: PLC0415
  import scipy.io  # noqa: PLC0415
  return h5py, scipy.io


def _load_variables(path: pathlib.Path) -> dict[str, np.ndarray]:
  if not path.is_file():
    raise FeatureFileError(f"{path}: no such feature file")
  h5py, scipy_io = _mat_modules()
  try:
    if path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}
    if h5py.is_hdf5(path):
      with h5py.File(path, "r") as f:
        return {k: np.asarray(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    return {k: np.asarray(v) for k, v in scipy_io.loadmat(path).items() if not k.startswith("__")}
  except FeatureFileError:
    raise
  except Exception as e:  # scipy/h5py raise many types for corrupt files
    raise FeatureFileError(f"{path}: cannot be read as a .mat (v5 or v7.3) or .npz file: {e}") from e


def _database_in(variables: dict[str, np.ndarray]) -> list[str]:
  names = set()
  for key in variables:
    m = _VARIABLE.match(key)
    if m:
      names.add(m.group(1))
  return sorted(names)


def read_feature_file(path: str | os.PathLike, database: str | None = None, *,
                      num_groups: int | None = 85, classes: tuple[int, ...] = (1, 2, 3)) -> FeatureSet:
  """Reads and validates one benchmark feature file.

  Args:
    path: a .mat (v5 or v7.3) or .npz file.
    database: the database to read (CASME2, SMIC_HS, SMIC_VIS, SMIC_NIR or a one-letter code);
      None recognises it from the variable names.
    num_groups: K; the feature width must be a multiple of it (K x d). None skips the check.
    classes: the allowed label values.

  Returns:
    A :class:`FeatureSet`.

  Raises:
    FeatureFileError: naming the file and what is wrong (missing variable, width not K x d,
      NaN or inf, labels outside the class set, inconsistent sample counts).
  """
  path = pathlib.Path(path)
  variables = _load_variables(path)
  if database is not None:
    database = CODE_DATABASES.get(database, database)
  found = _database_in(variables)
  if database is None:
    if len(found) == 1:
      database = found[0]
    elif not found and "features" in variables:
      stored = variables.get("database")
      if stored is None:
        raise FeatureFileError(f"{path}: has generic 'features'/'labels' variables but no "
                               "'database' entry; name its database with "
                               "config.data.files='CODE=path' (or database= in read_feature_file)")
      database = str(np.asarray(stored).reshape(-1)[0])
    elif not found:
      raise FeatureFileError(
          f"{path}: no variable named {{DB}}_micro_feature (DB in {sorted(DATABASE_CODES)}) and "
          f"no 'features'; found {sorted(variables)}")
    else:
      raise FeatureFileError(f"{path}: holds several databases {found}; name the one to read")
  feature_key, label_key = f"{database}_micro_feature", f"{database}_micro_label"
  if feature_key not in variables and "features" in variables:
    feature_key, label_key = "features", "labels"
  for key in (feature_key, label_key):
    if key not in variables:
      raise FeatureFileError(f"{path}: missing variable {key!r}; found {sorted(variables)}")
  features = np.asarray(variables[feature_key], dtype=np.float64)
  labels = np.asarray(variables[label_key]).reshape(-1)
  if features.ndim != 2:
    raise FeatureFileError(f"{path}: {feature_key} must be 2-D, got shape {features.shape}")
  n = labels.size
  if features.shape[0] != n and features.shape[1] == n:
    features = features.T  # stored features x samples (MATLAB v7.3 column-major)
  if features.shape[0] != n:
    raise FeatureFileError(f"{path}: {feature_key} has shape {features.shape} but {label_key} "
                           f"has {n} labels; expected one row (or column) per label")
  if n == 0:
    raise FeatureFileError(f"{path}: no samples")
  if num_groups is not None and features.shape[1] % num_groups:
    raise FeatureFileError(f"{path}: feature width {features.shape[1]} is not K x d for "
                           f"K = {num_groups} groups")
  if not np.all(np.isfinite(features)):
    bad = np.argwhere(~np.isfinite(features))[0]
    raise FeatureFileError(f"{path}: {feature_key} contains NaN or inf (first at sample "
                           f"{bad[0]}, column {bad[1]})")
  if not np.all(np.isfinite(labels.astype(np.float64))) or np.any(labels != np.round(labels)):
    raise FeatureFileError(f"{path}: {label_key} must hold integer class labels")
  labels = labels.astype(np.int64)
  outside = np.setdiff1d(np.unique(labels), classes)
  if outside.size:
    raise FeatureFileError(f"{path}: labels {outside.tolist()} are outside the class set "
                           f"{list(classes)} (config field: classes)")
  return FeatureSet(database=database, features=features, labels=labels, path=path)


def find_feature_files(feature_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
  """Maps database names to the feature files of a folder, recognised by their variable names.

  Raises:
    FeatureFileError: if the folder is missing or two files hold the same database.
  """
  feature_dir = pathlib.Path(feature_dir)
  if not feature_dir.is_dir():
    raise FeatureFileError(f"{feature_dir}: the feature folder does not exist")
  found: dict[str, pathlib.Path] = {}
  for path in sorted(feature_dir.iterdir()):
    # Hidden files are skipped: among them, the temporary files of an interrupted atomic write.
    if path.suffix not in FEATURE_SUFFIXES or path.name.startswith(".") or not path.is_file():
      continue
    names = _variable_names(path)
    for db in _database_in(dict.fromkeys(names)):
      if db in found:
        raise FeatureFileError(f"{feature_dir}: both {found[db].name} and {path.name} hold {db}; "
                               "keep one or name the files in the config (data.files)")
      found[db] = path
  return found


def _variable_names(path: pathlib.Path) -> list[str]:
  h5py, scipy_io = _mat_modules()
  try:
    if path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as data:
        return list(data.files)
    if h5py.is_hdf5(path):
      with h5py.File(path, "r") as f:
        return list(f.keys())
    return [name for name, _, _ in scipy_io.whosmat(path)]
  except Exception as e:
    raise FeatureFileError(f"{path}: cannot be read as a .mat (v5 or v7.3) or .npz file: {e}") from e


def write_feature_file(path: str | os.PathLike, database: str, features: np.ndarray,
                       labels: np.ndarray) -> pathlib.Path:
  """Writes ``{DB}_micro_feature`` (n x Kd) and ``{DB}_micro_label`` (n x 1) atomically.

  The format (MATLAB v5 ``.mat`` or ``.npz``) follows the suffix of ``path``.
  """
  path = pathlib.Path(path)
  variables = {f"{database}_micro_feature": np.asarray(features, np.float64),
               f"{database}_micro_label": np.asarray(labels).reshape(-1, 1).astype(np.float64)}
  with atomic.atomic_path(path) as tmp:
    if path.suffix == ".npz":
      with open(tmp, "wb") as f:
        np.savez(f, **variables)
    else:
      _, scipy_io = _mat_modules()
      scipy_io.savemat(tmp, variables, do_compression=True)
  return path
