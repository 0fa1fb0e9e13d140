"""Synthetic data with known ground truth.

* ``microexpressions``: micro-expression databases (CASME II / SMIC-like) written in the real
  releases' layouts, with the planted moving regions as ground truth, drawn with the face
  renderer :mod:`subtle_core.faces.render` (68 known landmarks, action-unit expressions);
* ``features``: a feature-level CDMER benchmark with planted salient regions and domain shifts.

Import the submodules directly, e.g. ``from tgsr_jax.synthetic import microexpressions``.
"""
