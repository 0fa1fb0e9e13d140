r"""TGSR cross-database micro-expression recognition (the 12-experiment CDMER protocol).

Default: generated micro-expression clips of four synthetic databases (CASME II / SMIC layouts)
-> face detection, crop, TIM, LBP-TOP -> the TGSR sweep of all 12 experiments on a coarse grid
(no download needed; a few minutes on 2 CPU cores, reruns reuse the clips and features):

  python -m experiments.cdmer --config configs/cdmer.py --workdir runs/cdmer

The paper's full protocol on the benchmark's feature files (271 xi x 85 kappa per experiment,
float64, groups = the authors' consecutive chunks), e.g. with the ssfr files of the benchmark:

  python -m experiments.cdmer --config configs/cdmer.py:paper --workdir runs/paper \
      --config.data.feature_dir=/path/to/cdmer/ssfr --config.experiments='V->N,N->V,C->V,V->C,C->N,N->C'

Every run compares all methods of Tables II/III (``config.methods``) under every selection rule
(``config.selection``: the oracle of the published rows and four label-free rules); TGSR alone:
``--config.methods=TGSR --config.selection=oracle``.

Variants (``configs/cdmer.py:VARIANT``):
  (none)    generated clips, all 12 experiments, a coarse 13 x 7 TGSR grid and coarse method
            grids (QUICK_METHOD_GRIDS), float32.
  features  the feature-level synthetic benchmark (planted regions, no clips), coarse grids.
  paper     feature files, the paper's grids (each method's own), float64 (exact reproduction
            of the authors' grid); TGSR's label-free rules on an 11 x 7 subgrid.
  runlocal  feature-level synthetic, 2 experiments, a 3 x 2 grid, TGSR alone: seconds.

Any field can be overridden: ``--config.precision=float32``, ``--config.kappas='(1, 12, 85)'``,
``--config.xis='(0.001, 44.0)'``, ``--config.experiments='V->N,N->V'``,
``--config.grouping=regions``, ``--config.methods=SVM,DRLS,TGSR``, ``--config.selection=oracle,IWCV``,
``--config.method_grids.DRLS.lambda_='(10.0,)'``, ``--config.selection_options.num_folds=3``.
"""
import importlib

import ml_collections

from tgsr_jax import protocol
from tgsr_jax import settings
from tgsr_jax import sweep

QUICK_KAPPAS = (1, 2, 3, 4, 6, 9, 12, 16, 24, 32, 48, 64, 85)
QUICK_XIS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)

# Coarse grids of the comparison methods for the quick default job (the ':paper' variant uses
# each method's own grid: the benchmark's for TSRG/DRLS, the ones chosen from each method's
# paper for the others; see tgsr_jax/methods/<name>.py).
QUICK_METHOD_GRIDS = {
    "IW-SVM": {"width": (0.5, 2.0), "C": (1.0,)},
    "TCA": {"kernel": ("linear",), "mu": (0.1, 1.0), "dim": (10, 30)},
    "GFK": {"classifier": ("svm",), "dim": (10, 30)},
    "SA": {"dim": (10, 30)},
    "STM": None,                        # its own 3 x 7 (C x lambda) grid: cheap enough
    "TKL": {"kernel": ("linear",), "eta": (1.1, 2.0)},
    "TSRG": {"lambda": (0.1, 10.0), "mu": (0.01, 0.6)},
    "DRLS": {"lambda": (0.1, 10.0), "mu": (0.01, 0.6)},
}
# TGSR's label-free rules cost ~10 sweeps (5 source folds x a forward and a backward fit) per
# experiment: on the paper's 23035-point grid they score this 11 x 7 subgrid.
PAPER_SELECTION_KAPPAS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 85)
PAPER_SELECTION_XIS = QUICK_XIS


def _method_grids(quick: bool) -> ml_collections.ConfigDict:
  """``config.method_grids.<KEY>.<axis>``: every available method's grid (overridable)."""
  grids = ml_collections.ConfigDict()
  for name in settings.available_methods():
    if name == "TGSR":
      continue
    module = importlib.import_module(f"tgsr_jax.methods.{settings._method_names()._MODULES[name]}")
    grid = dict(module.METHOD.grid)
    if quick and QUICK_METHOD_GRIDS.get(name):
      grid.update(QUICK_METHOD_GRIDS[name])
    grids[settings.method_key(name)] = ml_collections.ConfigDict(
        {settings.config_axis(axis): tuple(values) for axis, values in grid.items()})
  return grids


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the experiment config; ``arg`` picks a variant (see the module docstring)."""
  variant = (arg or "").strip()
  config = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict()
  # auto: 'files' when data.feature_dir or data.files is given, else 'synthetic_clips';
  # synthetic_clips: generated raw clips, extracted here; synthetic_features: a generated
  # feature-level benchmark; files: real feature files. A synthetic source together with
  # feature_dir/files is refused (the files would be ignored).
  config.data.source = "auto"
  config.data.feature_dir = ""          # folder of .mat/.npz files, databases found by variable name
  config.data.files = ""                # or explicit 'C=casme2.mat,V=smic_vis.mat'
  config.data.synthetic_seed = 0
  config.data.synthetic_scale = 1.0     # synthetic_features: multiplies the databases' sizes
  config.data.num_clips = 0             # synthetic_clips: clips per database (0: generator default)

  config.experiments = ",".join(protocol.ALL_EXPERIMENTS)
  config.kappas = QUICK_KAPPAS
  config.xis = QUICK_XIS
  config.precision = "float32"          # or float64 (the reference precision)
  config.grouping = "regions"           # contiguous (authors' chunks) or regions (facial regions)
  config.num_groups = 85
  config.classes = (1, 2, 3)            # label values: 1 Negative, 2 Positive, 3 Surprise
                                        # (the files' labels; any other value is refused)
  config.select_by = "mf1"              # best grid point by M-F1 (the paper) or acc
  config.chunk_size = 64                # grid points solved together (memory ~ 4 Kd C chunk_size)
  config.progress = True

  config.solver = ml_collections.ConfigDict()
  config.solver.mu0 = 1e-3
  config.solver.rho = 1.1
  config.solver.mu_max = 1e15
  config.solver.tol = 0.0               # <= 0: 1e-8 in float64 (authors), 1e-5 in float32
  config.solver.max_iterations = 1_000_000

  # The comparison of Tables II/III (tgsr_jax.comparison): methods 'all' or e.g. 'SVM,DRLS,TGSR';
  # selection 'all' = oracle (best target M-F1, the published rule) + the label-free rules
  # IWCV, RV, DEV, SrcCV (tgsr_jax.selection); the oracle is always included.
  config.methods = "all"
  config.selection = "all"
  # Per method (key = name without '-': IWSVM), its grid axes, e.g.
  # --config.method_grids.DRLS.mu='(0.6,)'
  # (an axis named by a Python keyword takes a trailing '_': --config.method_grids.DRLS.lambda_)
  config.method_grids = _method_grids(quick=variant != "paper")
  config.selection_options = ml_collections.ConfigDict()
  config.selection_options.num_folds = 5   # stratified source folds of the label-free rules
  config.selection_options.seed = 0
  # TGSR's label-free rules score this subgrid of kappas x xis (empty: the whole grid).
  # Default: a 4 x 3 subgrid of the quick 13 x 7 grid (ten sweeps of 91 points per experiment
  # would dominate the quick job).
  config.selection_options.kappas = (3, 12, 48, 85)
  config.selection_options.xis = (0.01, 1.0, 100.0)

  if variant == "features":
    config.data.source = "synthetic_features"
  elif variant == "paper":
    config.data.source = "files"
    config.kappas = tuple(range(1, 86))
    config.xis = tuple(float(x) for x in sweep.paper_xi_grid())
    config.precision = "float64"
    config.grouping = "contiguous"
    config.selection_options.kappas = PAPER_SELECTION_KAPPAS
    config.selection_options.xis = PAPER_SELECTION_XIS
  elif variant == "runlocal":
    config.data.source = "synthetic_features"
    config.experiments = "V->N,C->H"
    config.kappas = (3, 9, 85)
    config.xis = (0.01, 1.0)
    config.data.synthetic_scale = 0.6
    config.progress = False
    config.methods = "TGSR"               # the TGSR path alone (tests run the comparison)
    config.selection = "oracle"
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; use '', 'features', 'paper' or 'runlocal'")
  return config
