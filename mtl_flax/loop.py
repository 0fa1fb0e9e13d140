"""The training loop: steps, periodic logging, evaluation and checkpoints.

The input path: `device_pipeline.HostBatches` gathers each step's uint8 images and raw targets
(a pure function of the seed and the step, so a resumed run needs no iterator state), and
`device_pipeline.prefetch_to_device` puts the next batch on the devices while the current step
runs; the augmentation happens inside the jitted step (`step`, `data.device_augment`).

On several processes (hosts) each gathers only its rows of every global batch and the prefetch
assembles the global arrays (`sharding`); the step, keyed by the global sample index, sees the
batch a single process would. Each process evaluates on its own copy of the state; only process
0's writer writes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import jax

from mtl_flax import evaluate as evaluate_lib
from mtl_flax import metric_writer
from mtl_flax import settings as settings_lib
from mtl_flax import sharding as sharding_lib
from mtl_flax.data import device_pipeline

PREFETCH = 2  # batches on their way to the devices ahead of the step


def host_batches(settings: settings_lib.TrainSettings,
                 train_data: dict) -> device_pipeline.HostBatches:
  """The run's un-augmented uint8 batches (`HostBatches` of its tasks, batch size and seed):
  this process's rows of them on several processes.

  Args:
    settings: the run's settings.
    train_data: task -> `pipeline.TaskData` (images may be memory-mapped uint8).
  """
  count = jax.process_count()
  if settings.batch_size % count:
    raise ValueError(f"config.batch_size={settings.batch_size} (per task, the global batch) is "
                     f"not divisible by the {count} processes")
  return device_pipeline.HostBatches(train_data, settings.tasks, settings.batch_size,
                                     seed=settings.seed, process_index=jax.process_index(),
                                     process_count=count)


def device_batches(settings: settings_lib.TrainSettings, compiled, train_data: dict, *,
                   start: int) -> Iterator[dict]:
  """The batches of steps start+1, start+2, ... on the mesh, prefetched (`PREFETCH` ahead).

  Batch number s (0-based) feeds step s + 1, so the step's `state['step']` before the update is
  the batch number that `device_augment` keys its draws with.
  """
  n = compiled.mesh.devices.size
  if settings.batch_size % n:
    raise ValueError(f"batch_size {settings.batch_size} is not divisible by the {n} devices of "
                     "the data mesh")
  return device_pipeline.prefetch_to_device(host_batches(settings, train_data).iterate(start),
                                            PREFETCH, sharding=compiled.batch_sharding)


@dataclasses.dataclass
class LoopResult:
  """Where the loop stopped: the state, its step and the latest periodic evaluation."""
  state: dict
  step: int
  last_eval: dict


def run(settings: settings_lib.TrainSettings, compiled, state, *, start: int, end: int,
        step_rng, train_data: dict, test_data: dict, writer: metric_writer.MetricWriter,
        checkpointer) -> LoopResult:
  """Trains steps start+1..end; logs every `log_every`, evaluates every `eval_every` (and at the
  last step of the run), checkpoints every `checkpoint_every` (and where it stops).

  Args:
    settings: the run's settings.
    compiled: its `functions.Compiled`.
    state: the train state at step `start`.
    start, end: the steps already done and the step to stop after.
    step_rng: the step key (replicated).
    train_data, test_data: task -> `pipeline.TaskData`.
    writer: the metrics writer.
    checkpointer: a `checkpoint.Checkpointer`.
  """
  mesh, model = compiled.mesh, compiled.model
  num_steps = settings.compute.num_steps
  eval_kwargs = dict(batch_size=settings.eval_batch_size, mesh=sharding_lib.local_mesh(mesh),
                     nme_normalisation=settings.compute.losses.nme_normalisation)
  last_eval = {}
  batches = device_batches(settings, compiled, train_data, start=start) if end > start else ()
  t0 = time.time()
  step = start
  for step, batch in zip(range(start + 1, end + 1), batches):
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
