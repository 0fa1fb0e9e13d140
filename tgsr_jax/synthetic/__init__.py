"""Synthetic data: a parametric face renderer with 68 known landmarks (`faces`) and synthetic
micro-expression databases written in the real releases' layouts (`microexpressions`).

Import the submodules directly, e.g. ``from tgsr_jax.synthetic import faces, microexpressions``.
"""
