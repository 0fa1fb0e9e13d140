"""Frozen settings of the TGSR entry points, read once from their ml_collections configs.

``experiments.cdmer`` and ``experiments.extract_features`` (and notebooks) hand their config to
:meth:`CdmerSettings.from_config` / :meth:`ExtractionJob.from_config`, which check every field
a user can get wrong (the message names the field and what was expected) and return frozen,
hashable dataclasses. Library functions take these objects, never the raw config; jitted
functions are keyed on the hashable :class:`tgsr_jax.solver.Settings` they hold.
"""
from __future__ import annotations

import dataclasses
import keyword
import numbers
import pathlib
from typing import Any

import numpy as np

from tgsr_jax import cdmer_io
from tgsr_jax import layout
from tgsr_jax import protocol
from tgsr_jax import solver

# config.data.source: one of these, or "auto" (see resolve_source).
DATA_SOURCES = ("synthetic_clips", "synthetic_features", "files")
GROUPINGS = ("contiguous", "regions")
SELECT_BY = ("mf1", "acc")
ORACLE = "oracle"


def _method_names():
  from tgsr_jax import methods  # noqa: PLC0415  (the registry only; modules load on demand)
  return methods


def available_methods() -> tuple[str, ...]:
  """The registered methods (:data:`tgsr_jax.methods.NAMES`) whose module exists, in table order."""
  import importlib.util  # noqa: PLC0415
  methods = _method_names()
  return tuple(n for n in methods.NAMES
               if importlib.util.find_spec(f"{methods.__name__}.{methods._MODULES[n]}") is not None)


def method_key(name: str) -> str:
  """A method's name as a config key: letters and digits only, upper case ('IW-SVM' -> 'IWSVM')."""
  return "".join(ch for ch in str(name) if ch.isalnum()).upper()


def canonical_method(name: str, field: str) -> str:
  """The registry name of ``name`` ('iw_svm', 'IWSVM', 'IW-SVM' -> 'IW-SVM'), or a ValueError."""
  methods = _method_names()
  canonical = {method_key(n): n for n in methods.NAMES}.get(method_key(name))
  if canonical is None:
    raise ValueError(f"config.{field}: unknown method {name!r}; expected one of "
                     f"{', '.join(methods.NAMES)}")
  if canonical not in available_methods():
    raise ValueError(f"config.{field}: method {canonical} is registered but its module "
                     f"{methods.__name__}.{methods._MODULES[canonical]} does not exist (yet); "
                     f"available: {', '.join(available_methods())}")
  return canonical


def config_axis(axis: str) -> str:
  """A grid axis as a config field: a Python keyword gets a trailing '_' ('lambda_')."""
  return axis + "_" if keyword.iskeyword(axis) else axis


def _name_list(value) -> list[str]:
  if isinstance(value, str):
    return [v.strip() for v in value.split(",") if v.strip()]
  return [str(v).strip() for v in value]


def parse_methods(value) -> tuple[str, ...]:
  """``config.methods``: 'all' (every available method) or a comma list, in table order."""
  names = _name_list(value)
  if not names:
    raise ValueError("config.methods is empty; give 'all' or a comma list such as 'SVM,TGSR'")
  if [n.lower() for n in names] == ["all"]:
    return available_methods()
  chosen = [canonical_method(n, "methods") for n in names]
  if len(set(chosen)) != len(chosen):
    raise ValueError(f"config.methods names a method twice: {value!r}")
  order = _method_names().NAMES
  return tuple(sorted(chosen, key=order.index))


def parse_selection(value) -> tuple[str, ...]:
  """``config.selection``: 'all' or a comma list of 'oracle' and the label-free rules.

  The oracle (best target M-F1, the published rule) is always included, first: TGSR's best.json
  and the regrets of the label-free rules need it.
  """
  from tgsr_jax import selection  # noqa: PLC0415
  names = _name_list(value)
  allowed = (ORACLE, *selection.RULES)
  if [n.lower() for n in names] == ["all"]:
    return allowed
  lookup = {a.lower(): a for a in allowed}
  unknown = [n for n in names if n.lower() not in lookup]
  if unknown or not names:
    raise ValueError(f"config.selection: unknown rule(s) {unknown or value!r}; expected 'all' or "
                     f"a comma list of {', '.join(allowed)}")
  chosen = {lookup[n.lower()] for n in names} | {ORACLE}
  return tuple(a for a in allowed if a in chosen)


def parse_method_grids(config_grids, method_names: tuple[str, ...]
                       ) -> tuple[tuple[str, tuple[tuple[str, tuple], ...]], ...]:
  """``config.method_grids.<METHOD>.<axis> = values`` as ((method, ((axis, values), ...)), ...).

  Keys are method names as :func:`method_key` writes them ('IWSVM' for IW-SVM). Only the methods
  in ``method_names`` are kept; every key and axis is checked against the method's own grid.
  """
  methods = _method_names()
  out = []
  for key in sorted(config_grids or {}):
    field = f"method_grids.{key}"
    canonical = {method_key(n): n for n in methods.NAMES}.get(method_key(key))
    if canonical is None:
      raise ValueError(f"config.{field}: unknown method {key!r}; expected one of "
                       f"{', '.join(method_key(n) for n in methods.NAMES if n != 'TGSR')}")
    if canonical == "TGSR":
      raise ValueError(f"config.{field}: TGSR's grid is config.kappas x config.xis (and its "
                       "label-free selection grid config.selection_options.kappas/xis)")
    if canonical not in method_names:
      continue
    axes = dict(methods.get(canonical).grid)
    given = {}
    for field_axis in config_grids[key]:
      # A Python keyword cannot be a config path ('lambda'): the config writes it 'lambda_'.
      axis = field_axis[:-1] if field_axis.endswith("_") and keyword.iskeyword(
          field_axis[:-1]) else field_axis
      if axis not in axes:
        raise ValueError(f"config.{field}.{axis}: {canonical} has no grid axis {axis!r}; "
                         f"expected one of {', '.join(config_axis(a) for a in axes)}")
      values = config_grids[key][field_axis]
      values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
      if not values:
        raise ValueError(f"config.{field}.{field_axis}: needs at least one value")
      given[axis] = tuple(v.item() if hasattr(v, "item") else v for v in values)
    # The method's own axis order (the grid order, which breaks ties), its values where not given.
    grid = tuple((axis, given.get(axis, tuple(values))) for axis, values in axes.items())
    out.append((canonical, grid))
  return tuple(out)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _numbers(config, field: str, kind, prefix: str = "") -> tuple:
  """``config.<field>`` as a tuple of ``kind``, or a ValueError naming the field."""
  values = config[field]
  field = prefix + field
  if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
    values = (values,)
  example = "'(1, 12, 85)'" if kind is int else "'(0.001, 44.0)'"
  try:
    if any(isinstance(v, (str, bytes, bool)) for v in values):
      raise TypeError
    out = tuple(kind(v) for v in values)
    if kind is int and any(o != v for o, v in zip(out, values)):
      raise ValueError
  except (TypeError, ValueError, OverflowError):
    what = "integers" if kind is int else "numbers"
    raise ValueError(f"config.{field}: expected a tuple of {what} such as "
                     f"--config.{field}={example}, got {tuple(values)!r}") from None
  return out


def parse_files(spec: str) -> tuple[tuple[str, pathlib.Path], ...]:
  """``'C=casme2.mat,V=smic_vis.mat'`` (``config.data.files``) as ``(database, path)`` pairs."""
  files: dict[str, pathlib.Path] = {}
  for entry in (e.strip() for e in spec.split(",") if e.strip()):
    if "=" not in entry:
      raise ValueError(f"config.data.files: {entry!r} is not of the form CODE=path "
                       "(e.g. 'V=smic_vis.mat')")
    code, path = (p.strip() for p in entry.split("=", 1))
    name = cdmer_io.CODE_DATABASES.get(code.upper(), code.upper())
    if name not in cdmer_io.DATABASE_CODES:
      raise ValueError(f"config.data.files: unknown database {code!r} in {entry!r}; use one of "
                       f"{sorted(cdmer_io.CODE_DATABASES)} or {sorted(cdmer_io.DATABASE_CODES)}")
    if name in files:
      raise ValueError(f"config.data.files: {name} is given twice ({files[name]} and {path})")
    files[name] = pathlib.Path(path)
  return tuple(files.items())


def resolve_source(config) -> str:
  """The data source a config asks for: ``config.data.source``, with ``auto`` resolved.

  ``auto`` (the default) reads feature files when ``data.feature_dir`` or ``data.files`` names
  some, and generates synthetic clips otherwise.

  Raises:
    ValueError: for an unknown source, or a synthetic source together with feature files (the
      files would be ignored).
  """
  return _resolve_source(config.data)


def _resolve_source(data) -> str:
  source = str(data.source)
  given = [f"data.{name}={data[name]!r}" for name in ("feature_dir", "files") if data[name]]
  if source == "auto":
    return "files" if given else "synthetic_clips"
  if source not in DATA_SOURCES:
    raise ValueError(f"config.data.source must be one of {('auto',) + DATA_SOURCES}, "
                     f"got {source!r}")
  if source != "files" and given:
    raise ValueError(f"config.data.source={source!r} generates synthetic data, but "
                     f"{' and '.join('config.' + g for g in given)} names feature files, which "
                     "would be ignored; set config.data.source='files' (or 'auto') to read them, "
                     "or leave data.feature_dir and data.files empty")
  return source


def solver_settings(config) -> solver.Settings:
  """The ALM settings of ``config.solver``; ``tol <= 0`` means the precision's default."""
  s = config.solver
  for name in ("mu0", "rho", "mu_max", "tol"):
    if isinstance(s[name], (str, bool)) or not np.isfinite(float(s[name])):
      raise ValueError(f"config.solver.{name} must be a finite number, got {s[name]!r}")
  if not _is_int(s.max_iterations) or s.max_iterations < 0:
    raise ValueError(f"config.solver.max_iterations must be an integer >= 0, "
                     f"got {s.max_iterations!r}")
  return solver.Settings(mu0=float(s.mu0), rho=float(s.rho), mu_max=float(s.mu_max),
                         tol=float(s.tol) if float(s.tol) > 0 else None,
                         max_iterations=int(s.max_iterations))


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """Where a CDMER run's features come from (``config.data``).

  Attributes:
    source: the resolved source: 'synthetic_clips', 'synthetic_features' or 'files'.
    feature_dir: a folder of feature files ('' for none).
    files: explicit ``(database, path)`` pairs (they override ``feature_dir``'s).
    synthetic_seed: seed of the synthetic generators.
    synthetic_scale: synthetic_features: multiplies the databases' sizes.
    num_clips: synthetic_clips: clips per database (0: the generator's default).
  """
  source: str
  feature_dir: str = ""
  files: tuple[tuple[str, pathlib.Path], ...] = ()
  synthetic_seed: int = 0
  synthetic_scale: float = 1.0
  num_clips: int = 0

  @classmethod
  def from_config(cls, data) -> "DataSettings":
    """Reads ``config.data`` (the parent config's ``data`` field)."""
    source = _resolve_source(data)
    for name in ("synthetic_seed", "num_clips"):
      if not _is_int(data[name]) or data[name] < 0:
        raise ValueError(f"config.data.{name} must be an integer >= 0, got {data[name]!r}")
    scale = data.synthetic_scale
    if isinstance(scale, (str, bool)) or not np.isfinite(float(scale)) or float(scale) <= 0:
      raise ValueError(f"config.data.synthetic_scale must be a number > 0, got {scale!r}")
    return cls(source=source, feature_dir=str(data.feature_dir or ""),
               files=parse_files(str(data.files or "")), synthetic_seed=int(data.synthetic_seed),
               synthetic_scale=float(scale), num_clips=int(data.num_clips))


@dataclasses.dataclass(frozen=True)
class CdmerSettings:
  """Everything a CDMER run (``tgsr_jax.experiment.run``) reads, checked once.

  Attributes:
    data: where the features come from.
    experiments: the transfers, in config order.
    kappas, xis: the grid axes.
    precision: 'float32' or 'float64'.
    grouping: 'contiguous' (the authors' chunks) or 'regions' (facial regions).
    num_groups: K.
    classes: the label values of the files, in class order.
    select_by: 'mf1' (the paper) or 'acc'.
    chunk_size: grid points solved together.
    progress: show progress bars.
    solver: the ALM settings.
    methods: the comparison's methods (registry names, table order); TGSR included or not.
    selection: the selection rules: 'oracle' first, then label-free rules of
      :data:`tgsr_jax.selection.RULES`.
    method_grids: per method, grid axes overriding the method's own grid.
    selection_folds, selection_seed: the source folds of the label-free rules.
    selection_kappas, selection_xis: TGSR's label-free rules score the subgrid of these values
      (config.kappas / config.xis values also listed in config.selection_options.kappas / xis;
      all of them when those are empty).
  """
  data: DataSettings
  experiments: tuple[protocol.Experiment, ...]
  kappas: tuple[int, ...]
  xis: tuple[float, ...]
  precision: str = "float32"
  grouping: str = "regions"
  num_groups: int = 85
  classes: tuple[int, ...] = (1, 2, 3)
  select_by: str = "mf1"
  chunk_size: int = 64
  progress: bool = True
  solver: solver.Settings = solver.Settings()
  methods: tuple[str, ...] = ("TGSR",)
  selection: tuple[str, ...] = (ORACLE,)
  method_grids: tuple[tuple[str, tuple[tuple[str, tuple], ...]], ...] = ()
  selection_folds: int = 5
  selection_seed: int = 0
  selection_kappas: tuple[int, ...] | None = None
  selection_xis: tuple[float, ...] | None = None

  @property
  def label_free_rules(self) -> tuple[str, ...]:
    return tuple(r for r in self.selection if r != ORACLE)

  @property
  def runs_comparison(self) -> bool:
    """Whether other methods than TGSR or label-free rules are asked (then the tables compare)."""
    return self.methods != ("TGSR",) or bool(self.label_free_rules)

  def method_grid(self, name: str) -> dict[str, tuple] | None:
    """The grid override of method ``name`` (None: the method's own grid)."""
    return next((dict(g) for m, g in self.method_grids if m == name), None)

  @property
  def tolerance(self) -> float:
    return self.solver.resolved_tol(self.precision)

  @property
  def needed_databases(self) -> set[str]:
    return {db for e in self.experiments for db in (e.source, e.target)}

  @classmethod
  def from_config(cls, config) -> "CdmerSettings":
    """Checks ``config`` (``configs/cdmer.py``) and returns its settings.

    Raises:
      ValueError: naming the config field that is wrong and what was expected.
    """
    if config.precision not in solver.PRECISIONS:
      raise ValueError(f"config.precision must be one of {solver.PRECISIONS}, "
                       f"got {config.precision!r}")
    if config.grouping not in GROUPINGS:
      raise ValueError(f"config.grouping must be one of {GROUPINGS}, got {config.grouping!r}")
    num_groups = config.num_groups
    if not _is_int(num_groups) or num_groups < 1:
      raise ValueError(f"config.num_groups must be a positive integer, got {num_groups!r}")
    regions = layout.num_regions()
    if config.grouping == "regions" and num_groups != regions:
      raise ValueError(f"config.num_groups={num_groups} disagrees with config.grouping='regions', "
                       f"which has the {regions} facial regions; set num_groups={regions} or use "
                       "grouping='contiguous'")
    kappas, xis = _numbers(config, "kappas", int), _numbers(config, "xis", float)
    if not kappas or not xis:
      raise ValueError("config.kappas and config.xis need at least one value each")
    if any(not np.isfinite(x) or x < 0 for x in xis):
      raise ValueError(f"config.xis must be finite numbers >= 0, got {xis}")
    if any(k < 1 or k > num_groups for k in kappas):
      raise ValueError(f"config.kappas must be integers in [1, config.num_groups={num_groups}], "
                       f"got {kappas}")
    if not _is_int(config.chunk_size) or config.chunk_size <= 0:
      raise ValueError(f"config.chunk_size must be a positive integer, got {config.chunk_size!r}")
    if config.select_by not in SELECT_BY:
      raise ValueError(f"config.select_by must be 'mf1' or 'acc', got {config.select_by!r}")
    classes = _numbers(config, "classes", int)
    if len(classes) < 2 or len(set(classes)) != len(classes):
      raise ValueError(f"config.classes must be at least two distinct integer label values, "
                       f"got {tuple(config.classes)}")
    solver_ = solver_settings(config)
    data = DataSettings.from_config(config.data)
    experiments = tuple(protocol.parse_experiments(config.experiments))
    method_names = parse_methods(config.get("methods", "TGSR"))
    rules = parse_selection(config.get("selection", ORACLE))
    grids = parse_method_grids(config.get("method_grids", None), method_names)
    options = config.get("selection_options", None) or {}
    folds, seed = options.get("num_folds", 5), options.get("seed", 0)
    if not _is_int(folds) or folds < 2:
      raise ValueError(f"config.selection_options.num_folds must be an integer >= 2, "
                       f"got {folds!r}")
    if not _is_int(seed) or seed < 0:
      raise ValueError(f"config.selection_options.seed must be an integer >= 0, got {seed!r}")
    prefix = "selection_options."
    sub_kappas = _numbers(options, "kappas", int, prefix) if options.get("kappas") else ()
    sub_xis = _numbers(options, "xis", float, prefix) if options.get("xis") else ()
    # The subgrid is the config grid's points whose kappa / xi are listed (all when empty).
    sub_kappas = tuple(k for k in kappas if not sub_kappas or k in sub_kappas)
    sub_xis = tuple(x for x in xis if not sub_xis or np.isclose(x, sub_xis).any())
    # The subgrid matters only where TGSR's label-free rules run.
    tgsr_rules = "TGSR" in method_names and any(r != ORACLE for r in rules)
    if not tgsr_rules:
      sub_kappas, sub_xis = kappas, xis
    elif not sub_kappas or not sub_xis:
      raise ValueError(f"config.selection_options.kappas/xis share no value with config.kappas / "
                       f"config.xis ({options.get('kappas')} vs {kappas}, {options.get('xis')} "
                       f"vs {xis}); leave them empty to score the whole grid")
    if config.select_by != "mf1" and (method_names != ("TGSR",) or len(rules) > 1):
      raise ValueError("config.select_by='acc' applies to TGSR alone; the comparison picks by "
                       "M-F1 (set config.methods=TGSR and config.selection=oracle)")
    return cls(data=data, experiments=experiments, kappas=kappas, xis=xis,
               precision=str(config.precision), grouping=str(config.grouping),
               num_groups=int(num_groups), classes=classes, select_by=str(config.select_by),
               chunk_size=int(config.chunk_size), progress=bool(config.progress),
               solver=solver_, methods=method_names, selection=rules, method_grids=grids,
               selection_folds=int(folds), selection_seed=int(seed),
               selection_kappas=sub_kappas, selection_xis=sub_xis)


def cdmer_settings(config_or_settings: Any) -> CdmerSettings:
  """``config_or_settings`` as :class:`CdmerSettings` (a ConfigDict is read and checked)."""
  if isinstance(config_or_settings, CdmerSettings):
    return config_or_settings
  return CdmerSettings.from_config(config_or_settings)


# --- feature extraction ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExtractionSettings:
  """Everything that changes the features of a clip (part of the cache fingerprint).

  Attributes:
    margin: relative margin around the detected face (see :func:`tgsr_jax.face.face_box`).
    tim_length: frames after TIM.
    size: frames are resized to ``size x size``.
    interpolation: bilinear LBP neighbours instead of rounded positions.
    whole_frame_fallback: use the whole frame when no face is found (else the clip is bad).
    radius: LBP-TOP radius in X, Y and T.
    points: LBP-TOP neighbours per plane.
    layout: column order of the written file, 'benchmark' or 'region_major' (not part of the
      cache fingerprint: the cache holds region-major features).
  """
  margin: float = 0.1
  tim_length: int = 16
  size: int = 112
  interpolation: bool = False
  whole_frame_fallback: bool = False
  radius: int = 3
  points: int = 8
  layout: str = "benchmark"

  def cache_fields(self) -> dict[str, Any]:
    fields = dataclasses.asdict(self)
    fields.pop("layout")
    return fields


DATABASE_KINDS = ("casme2", "smic_hs", "smic_vis", "smic_nir", "csv")


@dataclasses.dataclass(frozen=True)
class ExtractionJob:
  """One run of ``experiments.extract_features`` (``configs/features.py``), checked once.

  Attributes:
    database: 'casme2', 'smic_hs', 'smic_vis', 'smic_nir' or 'csv'.
    root: the database folder (for 'csv' the CSV file); '' for a synthetic database.
    synthetic: extract a generated synthetic database instead of a real one.
    sheet: the CASME II coding sheet ('' for the default under root).
    csv_database: 'csv' only: the database of the CSV to extract ('' when it lists one).
    settings: the extraction settings.
    skip_bad: continue past bad clips.
    num_clips, seed: the synthetic database's size (0: the generator's default) and seed.
    num_workers: reader threads (0: ``min(4, cpu count)``).
    out_name: the feature file's stem ('' for the default).
  """
  database: str
  root: str = ""
  synthetic: bool = False
  sheet: str = ""
  csv_database: str = ""
  settings: ExtractionSettings = ExtractionSettings()
  skip_bad: bool = False
  num_clips: int = 0
  seed: int = 0
  num_workers: int = 0
  out_name: str = ""

  @classmethod
  def from_config(cls, config) -> "ExtractionJob":
    """Checks ``config`` (``configs/features.py``) and returns the job.

    Raises:
      ValueError: naming the config field that is missing, wrong or contradicts another.
    """
    kind = str(config.database).lower()
    if kind not in DATABASE_KINDS:
      raise ValueError(f"config.database must be one of {DATABASE_KINDS}, "
                       f"got {config.database!r}")
    synthetic, root = bool(config.synthetic), str(config.root or "")
    if synthetic and root:
      raise ValueError(f"config.synthetic=True extracts a generated database, but config.root="
                       f"{root!r} names a real one; drop one of the two")
    if not synthetic and not root:
      raise ValueError("config.root is empty: give the database folder (for database='csv' the "
                       "CSV file), or set --config.synthetic=True to extract a generated "
                       "synthetic database")
    if synthetic and kind == "csv":
      raise ValueError(f"config.synthetic=True needs config.database in "
                       f"{DATABASE_KINDS[:-1]}, got 'csv'")
    if config.csv_database and kind != "csv":
      raise ValueError(f"config.csv_database={config.csv_database!r} applies to database='csv' "
                       f"only, got database={config.database!r}")
    if config.layout not in ("benchmark", "region_major"):
      raise ValueError(f"config.layout must be 'benchmark' or 'region_major', "
                       f"got {config.layout!r}")
    for name in ("tim_length", "size", "num_clips", "seed", "num_workers"):
      low = 1 if name in ("tim_length", "size") else 0
      if not _is_int(config[name]) or config[name] < low:
        raise ValueError(f"config.{name} must be an integer >= {low}, got {config[name]!r}")
    if isinstance(config.margin, (str, bool)) or not np.isfinite(float(config.margin)) or (
        float(config.margin) < 0):
      raise ValueError(f"config.margin must be a number >= 0, got {config.margin!r}")
    settings = ExtractionSettings(
        margin=float(config.margin), tim_length=int(config.tim_length), size=int(config.size),
        interpolation=bool(config.interpolation),
        whole_frame_fallback=bool(config.whole_frame_fallback), layout=str(config.layout))
    return cls(database=kind, root=root, synthetic=synthetic, sheet=str(config.sheet or ""),
               csv_database=str(config.csv_database or ""), settings=settings,
               skip_bad=bool(config.skip_bad), num_clips=int(config.num_clips),
               seed=int(config.seed), num_workers=int(config.num_workers),
               out_name=str(config.out_name or ""))
