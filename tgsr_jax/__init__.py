"""TGSR (Transfer Group Sparse Regression) for cross-database micro-expression recognition, in JAX.

Modules: ``solver`` (one fit), ``sweep`` (the vmapped, sharded (kappa, xi) grid), ``gram_engine``
(the fast exact sweep engine), ``reference`` (NumPy port of the published algorithm), ``metrics``,
``cdmer_io`` (feature files), ``layout`` (85-region grid), ``protocol`` (the 12 experiments),
``experiment`` (the whole protocol, as run by ``python -m experiments.cdmer``), ``synthetic``.
"""
from tgsr_jax import layout
from tgsr_jax import metrics
from tgsr_jax import solver
from tgsr_jax import sweep
from tgsr_jax.cdmer_io import FeatureSet, read_feature_file, write_feature_file
from tgsr_jax.solver import FitResult, Settings, fit, predict, predict_label_vectors, project_simplex
from tgsr_jax.sweep import SweepResult, paper_xi_grid

# -- features pipeline exports (TIM, LBP-TOP, readers) are added below this line --
from tgsr_jax.tim import temporal_interpolate, tim_matrix  # noqa: E402  (tgsr_jax.tim: the module)
from tgsr_jax.lbp_top import (lbp_top_codes, lbp_top_features,  # noqa: E402
                              lbp_top_features_batch, uniform_mapping)
