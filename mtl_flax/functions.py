"""The model and the jitted functions of a run, cached on its (frozen, hashable) settings."""
from __future__ import annotations

import functools
import logging
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mtl_flax import evaluate as evaluate_lib
from mtl_flax import optim
from mtl_flax import settings as settings_lib
from mtl_flax import sharding as sharding_lib
from mtl_flax import step as step_lib
from mtl_flax import tasks as tasks_lib
from mtl_flax import trace_norm
from mtl_flax.models import multitask


def build_model(compute: settings_lib.ComputeSettings) -> multitask.MultiTaskNet:
  """The `MultiTaskNet` of a run's compute settings (its model, regulariser and ADA)."""
  model = compute.model
  tasks = model.tasks
  if model.adversarial and len(tasks) != 2:
    raise ValueError(f"ada.enabled needs two tasks (two datasets), got tasks={tasks}")
  kind = compute.regulariser.kind
  if kind != "none" and len(tasks) < 2:
    raise ValueError(f"regulariser.kind={kind!r} couples tasks and needs T >= 2, got "
                     f"tasks={tasks}")
  if kind != "none" and model.sharing == "hard":
    logging.info("trace norm on the per-task (not hard-shared) layers only")
  return multitask.build_multitask(
      backbone=model.backbone, num_classes=model.num_classes, num_landmarks=model.num_landmarks,
      sharing=model.sharing, hard_share_convs=model.hard_share_convs, tasks=tasks,
      adversarial=model.adversarial, dtype=jnp.dtype(model.dtype))


def make_trace_norms_fn(model, kind: str, gammas=None):
  """Jitted `params -> {layer: trace norm}` of the stacked shareable kernels, or None.

  The norm is `kind`'s (LAF when the run has no regulariser); None when there is nothing to
  couple (T = 1 or no per-task convolutions).
  """
  if model.num_tasks < 2:
    return None
  if kind == "none":
    kind, gammas = "laf", None
  return jax.jit(lambda params: trace_norm.trace_norm_per_layer(
      model.shareable_kernels(params), kind, gammas))


def trace_norms(model, norms_fn, params) -> dict:
  """Per-layer norms from `make_trace_norms_fn` as floats, in forward layer order."""
  if norms_fn is None:
    return {}
  per_layer = jax.device_get(norms_fn(params))
  order = [n for n in model.conv_names if n in per_layer]
  return {k: float(per_layer[k]) for k in order}  # forward order, for the Fig. 3 plots


class Compiled(NamedTuple):
  """A run's model, optimiser, mesh and jitted functions.

  `train_step(state, host_batch, step_rng)` takes the uint8 host batch (placed with
  `batch_sharding`, e.g. by `device_pipeline.prefetch_to_device`) and augments it on the device.
  """
  model: multitask.MultiTaskNet
  tx: optax.GradientTransformation
  mesh: Mesh
  init_fn: Callable
  train_step: Callable
  eval_step: Callable
  norms_fn: Callable | None
  batch_sharding: dict  # batch key -> its sharding on `mesh`


@functools.lru_cache(maxsize=8)
def _compiled(compute: settings_lib.ComputeSettings, devices: tuple) -> Compiled:
  model = build_model(compute)
  tx = optim.optimizer_for(model, compute)
  mesh = sharding_lib.data_mesh(list(devices))
  replicated = sharding_lib.replicated(mesh)
  image_shape = (compute.image_size, compute.image_size, 3)
  init_fn = jax.jit(functools.partial(step_lib.init_state, model, tx, image_shape=image_shape),
                    out_shardings=replicated)
  keys = ["images"] + [tasks_lib.get(t).batch_key for t in model.tasks]
  batch_sharding = sharding_lib.batch_shardings(mesh, keys)
  step_fn = jax.jit(step_lib.train_step_for(model, tx, compute), donate_argnums=(0,),
                    in_shardings=(replicated, batch_sharding, replicated),
                    out_shardings=(replicated, replicated))
  eval_fn = jax.jit(evaluate_lib.make_eval_step(model))
  norms_fn = make_trace_norms_fn(model, compute.regulariser.kind, compute.regulariser.gammas)
  return Compiled(model, tx, mesh, init_fn, step_fn, eval_fn, norms_fn, batch_sharding)


def compiled(compute: settings_lib.ComputeSettings, devices=None) -> Compiled:
  """The model and jitted functions of `compute` on `devices` (default: every device of every
  process, `sharding.process_devices`; alone, the local devices).

  Cached on the settings object, so repeated runs in one process (notebooks, resume, the
  Table-4 script re-reading rows) do not recompile.
  """
  return _compiled(compute, tuple(sharding_lib.process_devices() if devices is None else devices))


def root_key(compute: settings_lib.ComputeSettings, seed: int) -> jax.Array:
  """The run's root PRNG key (`seed`, `prng_impl`); init and steps derive from it."""
  return jax.random.key(seed, impl=compute.prng_impl)
