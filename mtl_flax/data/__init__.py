"""Datasets for mtl_flax: readers of the real releases, synthetic data, augmentation and pipelines."""
