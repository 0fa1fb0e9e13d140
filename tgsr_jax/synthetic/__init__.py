"""Synthetic data with known ground truth.

* ``faces``: a parametric face renderer with 68 known landmarks and action-unit expressions;
* ``microexpressions``: micro-expression databases (CASME II / SMIC-like) written in the real
  releases' layouts, with the planted moving regions as ground truth;
* ``features``: a feature-level CDMER benchmark with planted salient regions and domain shifts.

Import the submodules directly, e.g. ``from tgsr_jax.synthetic import faces, microexpressions``.
"""
