"""A feature-level synthetic CDMER benchmark with planted salient regions and domain shifts.

Each generated "database" holds multi-scale LBP-TOP-like features (85 regions x 3 planes x 59-bin
histograms, each histogram summing to 1) in the benchmark's column layout, with labels 1..3
(Negative, Positive, Surprise). The generative model:

* a face "texture": one base histogram per (region, plane), shared by every database;
* per sample, multiplicative log-normal noise on every bin (subject and recording variation);
* the expression: for class k, the histograms of the planted regions of k are tilted along a fixed
  class-specific direction in log-histogram space (the same in every database, so knowledge
  transfers), mostly on the temporal planes XT and YT where micro-movements show;
* the domain: each database tilts *every* histogram along its own direction (sensor contrast,
  frame rate) and has its own noise level and class balance, so source and target differ in
  their marginal distributions - what TGSR's MMD term is for.

Ground truth: :data:`PLANTED_REGIONS` (region ids in :func:`tgsr_jax.layout.region_table` order).
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from tgsr_jax import cdmer_io
from tgsr_jax import layout

# Planted regions per class (region ids of the 85-region grid): for each class two 8x8 blocks of
# the face and the 4x4 block containing them. Row-major blocks; region id = 21 + 8 row + col at
# the 8x8 scale, 5 + 4 row + col at the 4x4 scale.
PLANTED_REGIONS = {
    1: (5 + 4 * 0 + 1, 21 + 8 * 1 + 2, 21 + 8 * 1 + 5),   # Negative: brows (AU4)
    2: (5 + 4 * 3 + 1, 21 + 8 * 6 + 1, 21 + 8 * 6 + 6),   # Positive: lip corners (AU12)
    3: (5 + 4 * 1 + 2, 21 + 8 * 2 + 3, 21 + 8 * 2 + 4),   # Surprise: upper lids / brow centre
}


@dataclasses.dataclass(frozen=True)
class DomainSpec:
  """One synthetic database.

  Attributes:
    name: CASME2, SMIC_HS, SMIC_VIS or SMIC_NIR.
    counts: samples per class (Negative, Positive, Surprise).
    shift: strength of the database's tilt of every histogram.
    noise: standard deviation of the per-bin log-normal noise.
    signal: strength of the expression tilt in the planted regions.
  """
  name: str
  counts: tuple[int, int, int]
  shift: float
  noise: float
  signal: float


# Class balance as in the real databases (CASME II 73/32/25 scaled down; SMIC 23/28/20).
DEFAULT_DOMAINS = {
    "CASME2": DomainSpec("CASME2", (29, 13, 10), shift=1.0, noise=0.35, signal=0.30),
    "SMIC_HS": DomainSpec("SMIC_HS", (17, 20, 14), shift=0.5, noise=0.40, signal=0.28),
    "SMIC_VIS": DomainSpec("SMIC_VIS", (12, 14, 10), shift=0.0, noise=0.40, signal=0.28),
    "SMIC_NIR": DomainSpec("SMIC_NIR", (12, 14, 10), shift=-0.8, noise=0.50, signal=0.25),
}

_PLANE_WEIGHT = np.array([0.3, 1.0, 1.0])  # XY, XT, YT: movement shows in the temporal planes


def _world(seed: int) -> dict[str, np.ndarray]:
  """The parts shared by every database: face texture, class and domain directions."""
  rng = np.random.default_rng([seed, 0])
  regions = layout.num_regions()
  base = rng.dirichlet(np.full(layout.NUM_BINS, 2.0), size=(regions, len(layout.PLANES)))
  class_dirs = rng.standard_normal((3, regions, len(layout.PLANES), layout.NUM_BINS))
  domain_dirs = {name: np.random.default_rng([seed, 1, i]).standard_normal(layout.NUM_BINS)
                 for i, name in enumerate(sorted(DEFAULT_DOMAINS))}
  return {"base": np.log(base), "class_dirs": class_dirs, "domain_dirs": domain_dirs}


def make_database(spec: DomainSpec, *, seed: int = 0, scale: float = 1.0,
                  column_layout: str = "benchmark") -> tuple[np.ndarray, np.ndarray]:
  """Generates one database.

  Args:
    spec: the database's domain.
    seed: the benchmark's seed (every database of one seed shares texture and class directions).
    scale: multiplies the per-class counts (at least one sample per class is kept).
    column_layout: ``'benchmark'`` (like the real files) or ``'region_major'``.

  Returns:
    ``(features (n, 15045) float64, labels (n,) int64 in 1..3)``; each 59-bin histogram sums to 1.
  """
  if column_layout not in ("benchmark", "region_major"):
    raise ValueError(f"column_layout must be 'benchmark' or 'region_major', got {column_layout!r}")
  world = _world(seed)
  rng = np.random.default_rng([seed, 2, sorted(DEFAULT_DOMAINS).index(spec.name)
                               if spec.name in DEFAULT_DOMAINS else 99])
  counts = [max(1, int(round(c * scale))) for c in spec.counts]
  labels = np.repeat(np.arange(1, 4), counts)
  rng.shuffle(labels)
  n = labels.size
  log_h = np.broadcast_to(world["base"], (n,) + world["base"].shape).copy()
  log_h += spec.noise * rng.standard_normal(log_h.shape)
  domain_dir = world["domain_dirs"].get(spec.name, rng.standard_normal(layout.NUM_BINS))
  log_h += spec.shift * domain_dir
  for k, regions in PLANTED_REGIONS.items():
    rows = labels == k
    regions = list(regions)
    # Trial-to-trial intensity of the micro-expression.
    intensity = rng.uniform(0.6, 1.4, size=(int(rows.sum()), 1, 1, 1))
    tilt = spec.signal * world["class_dirs"][k - 1][regions] * _PLANE_WEIGHT[None, :, None]
    log_h[np.ix_(rows, regions)] += intensity * tilt[None]
  hist = np.exp(log_h - log_h.max(axis=-1, keepdims=True))
  hist /= hist.sum(axis=-1, keepdims=True)
  features = hist.reshape(n, -1)  # region-major: region, plane, bin
  if column_layout == "benchmark":
    features = features[:, layout.region_major_to_benchmark()]
  return features, labels


def write_benchmark(out_dir: str | pathlib.Path, *, seed: int = 0, scale: float = 1.0,
                    databases: tuple[str, ...] = tuple(DEFAULT_DOMAINS)) -> dict[str, pathlib.Path]:
  """Writes one benchmark-format .mat file per database (skipping files already there).

  Returns:
    database name -> file path.
  """
  out_dir = pathlib.Path(out_dir)
  paths = {}
  for name in databases:
    if name not in DEFAULT_DOMAINS:
      raise ValueError(f"unknown synthetic database {name!r}; choose from {sorted(DEFAULT_DOMAINS)}")
    path = out_dir / f"synthetic_{name}_seed{seed}_x{scale:g}.mat"
    if not path.exists():
      features, labels = make_database(DEFAULT_DOMAINS[name], seed=seed, scale=scale)
      cdmer_io.write_feature_file(path, name, features, labels)
    paths[name] = path
  return paths
