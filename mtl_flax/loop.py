"""The training loop: steps, periodic logging, evaluation and checkpoints."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax

from mtl_flax import evaluate as evaluate_lib
from mtl_flax import metric_writer
from mtl_flax import settings as settings_lib
from mtl_flax import sharding as sharding_lib
from mtl_flax.data import augment
from mtl_flax.data import pipeline


def batch_function(settings: settings_lib.TrainSettings, train_data: dict) -> Callable:
  """`step -> batch`: the batch of a step is a pure function of the step number (see pipeline).

  On several processes it returns this process's rows of the global batch (process p of P:
  rows [p B / P, (p + 1) B / P) of every task).
  """
  aug = settings.augment
  landmark_augment = augment.LandmarkAugment(
      flip_probability=aug.landmark_flip, max_rotation_deg=aug.max_rotation_deg,
      scale_range=tuple(aug.scale_range), max_shift=aug.max_shift, noise_std=aug.noise_std)
  batch_fn = functools.partial(
      pipeline.train_batch, datasets=train_data, tasks=settings.tasks,
      batch_size=settings.batch_size, seed=settings.seed, augmentation=aug.enabled,
      landmark_augment=landmark_augment, expression_flip=aug.expression_flip)
  count, index = jax.process_count(), jax.process_index()
  if count == 1:
    return batch_fn
  if settings.batch_size % count:
    raise ValueError(f"config.batch_size={settings.batch_size} (per task, global) is not "
                     f"divisible by the {count} processes")
  rows = slice(index * settings.batch_size // count, (index + 1) * settings.batch_size // count)
  return lambda step: {k: v[:, rows] if k == "images" else v[rows]
                       for k, v in batch_fn(step).items()}


@dataclasses.dataclass
class LoopResult:
  """Where the loop stopped: the state, its step and the latest periodic evaluation."""
  state: dict
  step: int
  last_eval: dict


def run(settings: settings_lib.TrainSettings, compiled, state, *, start: int, end: int,
        step_rng, batch_fn: Callable, test_data: dict, writer: metric_writer.MetricWriter,
        checkpointer) -> LoopResult:
  """Trains steps start+1..end; logs every `log_every`, evaluates every `eval_every` (and at the
  last step of the run), checkpoints every `checkpoint_every` (and where it stops)."""
  mesh, model = compiled.mesh, compiled.model
  num_steps = settings.compute.num_steps
  eval_kwargs = dict(batch_size=settings.eval_batch_size, mesh=sharding_lib.local_mesh(mesh),
                     nme_normalisation=settings.compute.losses.nme_normalisation)
  last_eval = {}
  t0 = time.time()
  step = start
  for step in range(start + 1, end + 1):
    # The batch of step s is a pure function of s, so a resumed run sees the same data as an
    # uninterrupted one.
    batch = sharding_lib.shard_batch(mesh, batch_fn(step - 1))
    state, step_metrics = compiled.train_step(state, batch, step_rng)
    if step % settings.log_every == 0 or step == end:
      scalars = jax.device_get(step_metrics)
      metric_writer.check_finite(step, scalars)
      scalars["steps_per_second"] = (step - start) / max(time.time() - t0, 1e-9)
      writer.write(step, scalars, prefix="train/")
    if step % settings.eval_every == 0 or step == num_steps:
      # Every process evaluates the whole test sets on its own copy of the state.
      last_eval, _ = evaluate_lib.evaluate(compiled.eval_step,
                                           sharding_lib.host_local_copy(state, mesh), test_data,
                                           model.tasks, **eval_kwargs)
      metric_writer.check_finite(step, last_eval)
      writer.write(step, last_eval, prefix="eval/")
    if step % settings.checkpoint_every == 0 or step == end:
      checkpointer.save(step, state, force=True)
  checkpointer.wait()
  return LoopResult(state, step, last_eval)
