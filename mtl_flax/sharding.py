"""Data parallelism: a one-axis mesh over every device, batches sharded on their batch axis.

On several processes (hosts; :mod:`subtle_core.distributed`) the mesh spans every process's
devices, ordered process by process, so process p's devices hold the p-th contiguous slice of
each global batch: process p loads only that slice (`device_pipeline.HostBatches` with
``process_index=p``) and :func:`shard_batch` / :func:`put_process_local` assemble the global
arrays with `jax.make_array_from_process_local_data`. Alone, a process holds the whole batch and
they are `jax.device_put`.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def process_devices() -> list:
  """Every device of every process, process by process (by id within a process)."""
  return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def data_mesh(devices=None) -> Mesh:
  """A one-axis ('data') mesh over `devices` (default: :func:`process_devices`)."""
  devices = process_devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def local_mesh(mesh: Mesh) -> Mesh:
  """The mesh of this process's devices of `mesh` (`mesh` itself when it has no others)."""
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return mesh if len(local) == mesh.devices.size else Mesh(np.asarray(local), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of the train state and the keys: a full copy on every device."""
  return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
  """``tree`` (the same value on every process) replicated on every device of ``mesh``.

  Alone, `jax.device_put`; on several processes an identity `jax.jit` with replicated outputs
  (`device_put` cannot place values on other processes' devices).
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)


def batch_shardings(mesh: Mesh, keys) -> dict:
  """Images (T, B, ...) sharded on B, per-sample targets on their first axis."""
  return {k: NamedSharding(mesh, P(None, "data") if k == "images" else P("data"))
          for k in keys}


def put_process_local(tree, sharding):
  """This process's share of a global pytree -> global arrays of ``sharding``.

  Args:
    tree: host arrays, this process's slice of every sharded axis (the whole array alone).
    sharding: a `jax.sharding.Sharding`, or a pytree of them matching ``tree``.

  Returns:
    ``jax.device_put(tree, sharding)`` alone; on several processes the global arrays built by
    `jax.make_array_from_process_local_data` (every process must call it, in the same order).
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        tree)
  return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
                      tree, sharding)


def shard_batch(mesh: Mesh, batch: dict) -> dict:
  """Puts a batch (this process's share of it) on the mesh.

  The share's batch size must divide evenly among this process's devices of the mesh.
  """
  n = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  for key, value in batch.items():
    size = value.shape[1] if key == "images" else value.shape[0]
    if size % n:
      raise ValueError(f"batch size {size} is not divisible by the {n} devices of the data mesh"
                       + (" in this process" if n != mesh.devices.size else ""))
  return put_process_local(batch, batch_shardings(mesh, batch))


def host_local_copy(tree, mesh: Mesh):
  """A replicated global pytree as a copy replicated on this process's devices of ``mesh``.

  Alone, the tree itself. On several processes every process can then run the same
  computation on its own (evaluation on the whole test set) without the others.
  """
  local = local_mesh(mesh)
  if local is mesh:
    return tree
  return jax.device_put(jax.tree.map(lambda x: x.addressable_data(0), tree), replicated(local))
