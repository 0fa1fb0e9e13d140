r"""TGSR cross-database micro-expression recognition (the 12-experiment CDMER protocol).

Default: generated micro-expression clips of four synthetic databases (CASME II / SMIC layouts)
-> face detection, crop, TIM, LBP-TOP -> the TGSR sweep of all 12 experiments on a coarse grid
(no download needed; a few minutes on 2 CPU cores, reruns reuse the clips and features):

  python -m experiments.cdmer --config configs/cdmer.py --workdir runs/cdmer

The paper's full protocol on the benchmark's feature files (271 xi x 85 kappa per experiment,
float64, groups = the authors' consecutive chunks), e.g. with the ssfr files of the benchmark:

  python -m experiments.cdmer --config configs/cdmer.py:paper --workdir runs/paper \
      --config.data.feature_dir=/path/to/cdmer/ssfr --config.experiments='V->N,N->V,C->V,V->C,C->N,N->C'

Variants (``configs/cdmer.py:VARIANT``):
  (none)    generated clips, all 12 experiments, a coarse 13 x 7 grid, float32.
  features  the feature-level synthetic benchmark (planted regions, no clips): about a minute.
  paper     feature files, the paper's grids, float64 (exact reproduction of the authors' grid).
  runlocal  feature-level synthetic, 2 experiments, a 3 x 2 grid: a smoke test in seconds.

Any field can be overridden: ``--config.precision=float32``, ``--config.kappas='(1, 12, 85)'``,
``--config.xis='(0.001, 44.0)'``, ``--config.experiments='V->N,N->V'``, ``--config.grouping=regions``.
"""
import ml_collections

from tgsr_jax import protocol
from tgsr_jax import sweep

QUICK_KAPPAS = (1, 2, 3, 4, 6, 9, 12, 16, 24, 32, 48, 64, 85)
QUICK_XIS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


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

  if variant == "features":
    config.data.source = "synthetic_features"
  elif variant == "paper":
    config.data.source = "files"
    config.kappas = tuple(range(1, 86))
    config.xis = tuple(float(x) for x in sweep.paper_xi_grid())
    config.precision = "float64"
    config.grouping = "contiguous"
  elif variant == "runlocal":
    config.data.source = "synthetic_features"
    config.experiments = "V->N,C->H"
    config.kappas = (3, 9, 85)
    config.xis = (0.01, 1.0)
    config.data.synthetic_scale = 0.6
    config.progress = False
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; use '', 'features', 'paper' or 'runlocal'")
  return config
