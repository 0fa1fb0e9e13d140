"""TGSR (Transfer Group Sparse Regression) for cross-database micro-expression recognition, in JAX."""
from tgsr_jax import layout

# -- features pipeline exports (TIM, LBP-TOP, readers) are added below this line --
