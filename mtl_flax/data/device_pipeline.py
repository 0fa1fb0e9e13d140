"""Host side of the device-augmented input pipeline: gather uint8 batches, prefetch to the device.

The host only picks the batch's samples (the indices of `pipeline.epoch_batch_indices`, so the
same samples in the same order as `pipeline.train_batch`) and copies their uint8 images and raw
targets; the augmentation runs in the jitted step (`device_augment.augment_batch`). The batch of
step s is a pure function of (seed, s), as before, so a resumed run needs no iterator state.

Each epoch's permutation is drawn once (by `epoch_batch_indices` over the whole epoch) and kept,
instead of once per batch: at 176K images a permutation costs milliseconds, as much as gathering
the batch itself.

A host batch for tasks ('expression', 'landmarks') is the dict
  images:    (T, B, S, S, 3) uint8,
  labels:    (B,) int32            (when 'expression' is a task),
  landmarks: (B, 136) float32      (when 'landmarks' is a task),
i.e. exactly `pipeline.train_batch(step, ..., augmentation=False)`.

On several processes (hosts) B stays the global batch size: process p of P gathers only rows
[p B / P, (p + 1) B / P) of every task's batch (``HostBatches(..., process_index=p,
process_count=P)``), and `prefetch_to_device` assembles the global arrays from the processes'
shares (`jax.make_array_from_process_local_data`). The global batch of a step is therefore the
same whatever the number of processes.
"""
from __future__ import annotations

import collections
import itertools
from typing import Iterable, Iterator, Sequence

import jax
import numpy as np

from mtl_flax import sharding as sharding_lib
from mtl_flax.data import pipeline


class HostBatches:
  """Un-augmented uint8 training batches, a pure function of the step.

  Args:
    datasets: task name -> `pipeline.TaskData` (images may be a memory-mapped array).
    tasks: the task order (slot t of images is tasks[t]).
    batch_size: B per task.
    seed: data seed (as `pipeline.train_batch`'s).
    cached_epochs: how many epoch permutations per task to keep.
    process_index, process_count: this process's share of the global batch (see the module
      docstring); B must divide evenly among the processes.
  """

  def __init__(self, datasets: dict, tasks: Sequence[str], batch_size: int, *, seed: int,
               cached_epochs: int = 2, process_index: int = 0, process_count: int = 1):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"HostBatches: process_index must lie in [0, {process_count}), got "
                       f"{process_index}")
    if batch_size % process_count:
      raise ValueError(f"batch_size {batch_size} (per task, global) is not divisible by the "
                       f"{process_count} processes")
    self.local_batch_size = batch_size // process_count
    self.local_rows = slice(process_index * self.local_batch_size,
                            (process_index + 1) * self.local_batch_size)
    self.datasets = {t: datasets[t] for t in tasks}
    self.tasks = tuple(tasks)
    self.batch_size = batch_size
    self.seed = seed
    self._cached_epochs = max(cached_epochs, 1)
    self._perms = {t: collections.OrderedDict() for t in self.tasks}
    for task in self.tasks:
      if len(self.datasets[task]) == 0:
        raise ValueError(f"HostBatches: the {task} dataset is empty")
      pipeline._task_index(task)  # pylint: disable=protected-access  (validates the name)

  def _permutation(self, task: str, epoch: int) -> np.ndarray:
    cache = self._perms[task]
    if epoch not in cache:
      num = len(self.datasets[task])
      # Batch `epoch` of size num covers exactly the positions of that epoch.
      cache[epoch] = pipeline.epoch_batch_indices(
          num, num, epoch, seed=self.seed, stream=pipeline.TASKS.index(task))
      while len(cache) > self._cached_epochs:
        cache.popitem(last=False)
    return cache[epoch]

  def indices(self, task: str, step: int) -> np.ndarray:
    """The (B,) sample indices of ``task`` in batch ``step`` (= `pipeline.epoch_batch_indices`)."""
    num = len(self.datasets[task])
    positions = step * self.batch_size + np.arange(self.batch_size)
    epochs = positions // num
    out = np.empty(self.batch_size, np.int64)
    for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):
      mask = epochs == epoch
      out[mask] = self._permutation(task, epoch)[positions[mask] % num]
    return out

  def __call__(self, step: int) -> dict:
    """This process's share of the host batch of step ``step`` (see the module docstring)."""
    first = self.datasets[self.tasks[0]].images
    local = self.local_batch_size
    images = np.empty((len(self.tasks), local) + first.shape[1:], np.uint8)
    batch = {}
    for t, task in enumerate(self.tasks):
      data = self.datasets[task]
      if data.images.shape[1:] != first.shape[1:]:
        raise ValueError(f"HostBatches: {task} images are {data.images.shape[1:]}, the "
                         f"{self.tasks[0]} images {first.shape[1:]}; every task needs one size")
      idx = self.indices(task, step)[self.local_rows]
      # mode='clip' (the indices are valid): with the default 'raise', `out` is buffered, a
      # second copy that makes the gather 5 x slower.
      np.take(data.images, idx, axis=0, out=images[t], mode="clip")
      targets = np.take(data.targets, idx, axis=0)
      if task == "expression":
        batch["labels"] = targets.astype(np.int32)
      else:
        batch["landmarks"] = targets.reshape(local, -1).astype(np.float32)
    batch["images"] = images
    return batch

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """The batches of steps start_step, start_step + 1, ... (endless)."""
    for step in itertools.count(start_step):
      yield self(step)


def prefetch_to_device(iterator: Iterable, size: int = 2, sharding=None) -> Iterator:
  """Keeps ``size`` items of ``iterator`` on their way to the device ahead of the consumer.

  `jax.device_put` returns at once and copies in the background, so while the step runs on
  batch s, batches s + 1 .. s + size - 1 are already being transferred (and the host gathers
  the next one when the consumer asks for batch s + 1).

  Args:
    iterator: yields pytrees of host arrays.
    size: number of items in flight (>= 1).
    sharding: a `jax.sharding.Sharding`, or a pytree of them matching each item (e.g.
      `sharding.batch_shardings(mesh, batch)`), or None for the default device. On several
      processes the items are this process's shares, assembled into global arrays
      (`sharding.put_process_local`).

  Yields:
    The items, as device arrays, in order.
  """
  if size < 1:
    raise ValueError(f"prefetch_to_device: size must be >= 1, got {size}")
  queue = collections.deque()
  iterator = iter(iterator)

  # `put_process_local` is `jax.device_put` when this process is alone.
  put = jax.device_put if sharding is None else sharding_lib.put_process_local

  def enqueue(count):
    for item in itertools.islice(iterator, count):
      queue.append(put(item, sharding))

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)
