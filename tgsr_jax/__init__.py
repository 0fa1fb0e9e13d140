"""TGSR (Transfer Group Sparse Regression) for cross-database micro-expression recognition, in JAX.

Modules: ``solver`` (one fit), ``sweep`` (the vmapped, sharded (kappa, xi) grid), ``gram_engine``
(the fast exact sweep engine), ``reference`` (NumPy port of the published algorithm), ``metrics``,
``cdmer_io`` (feature files), ``layout`` (85-region grid), ``protocol`` (the 12 experiments),
``experiment`` (the whole protocol, as run by ``python -m experiments.cdmer``), ``synthetic``.

The names below (``tgsr_jax.fit``, ``tgsr_jax.read_feature_file``, ...) are loaded on first use,
so ``import tgsr_jax`` (or a reader or writer of its data) does not load JAX, the solver, SciPy
or h5py.
"""
from __future__ import annotations

import importlib

# public name -> (module, attribute); attribute None for the module itself.
_LAZY = {
    **{module: (f"tgsr_jax.{module}", None) for module in
       ("cdmer_io", "gram_engine", "layout", "lbp_top", "metrics", "solver", "sweep", "tim")},
    "FeatureSet": ("tgsr_jax.cdmer_io", "FeatureSet"),
    "read_feature_file": ("tgsr_jax.cdmer_io", "read_feature_file"),
    "write_feature_file": ("tgsr_jax.cdmer_io", "write_feature_file"),
    "FitResult": ("tgsr_jax.solver", "FitResult"),
    "Settings": ("tgsr_jax.solver", "Settings"),
    "fit": ("tgsr_jax.solver", "fit"),
    "predict": ("tgsr_jax.solver", "predict"),
    "predict_label_vectors": ("tgsr_jax.solver", "predict_label_vectors"),
    "project_simplex": ("tgsr_jax.solver", "project_simplex"),
    "SweepResult": ("tgsr_jax.sweep", "SweepResult"),
    "paper_xi_grid": ("tgsr_jax.sweep", "paper_xi_grid"),
    # features pipeline (TIM, LBP-TOP); `tgsr_jax.tim` is the module, TIM the function below.
    "temporal_interpolate": ("tgsr_jax.tim", "temporal_interpolate"),
    "tim_matrix": ("tgsr_jax.tim", "tim_matrix"),
    "lbp_top_codes": ("tgsr_jax.lbp_top", "lbp_top_codes"),
    "lbp_top_features": ("tgsr_jax.lbp_top", "lbp_top_features"),
    "lbp_top_features_batch": ("tgsr_jax.lbp_top", "lbp_top_features_batch"),
    "uniform_mapping": ("tgsr_jax.lbp_top", "uniform_mapping"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'tgsr_jax' has no attribute {name!r}")
  module_name, attribute = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attribute is None else getattr(module, attribute)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
