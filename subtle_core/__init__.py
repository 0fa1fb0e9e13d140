"""Code both systems use: atomic writes, resumable run folders, command-line entry points, faces
(iBUG-68 conventions, the Haar detector, the synthetic face renderer), image files and seeded
generators.

Dependencies go one way: ``subtle_core`` <- ``tgsr_jax`` and ``subtle_core`` <- ``mtl_flax``;
neither system imports the other, and importing this package pulls in neither JAX's solvers
nor SciPy or h5py.
"""
