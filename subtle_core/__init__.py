"""Code both systems use: atomic writes, resumable run folders, command-line entry points.

Dependencies go one way: ``subtle_core`` <- ``tgsr_jax`` and ``subtle_core`` <- ``mtl_flax``;
neither system imports the other, and importing this package pulls in neither JAX's solvers
nor SciPy or h5py.
"""
