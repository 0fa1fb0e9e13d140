"""Data parallelism: a one-axis mesh over the local devices, batches sharded on their batch axis."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
  """A one-axis ('data') mesh over `devices` (default: every local device)."""
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of the train state and the keys: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_shardings(mesh: Mesh, keys) -> dict:
  """Images (T, B, ...) sharded on B, per-sample targets on their first axis."""
  return {k: NamedSharding(mesh, P(None, "data") if k == "images" else P("data"))
          for k in keys}


def shard_batch(mesh: Mesh, batch: dict) -> dict:
  """Puts a batch on the mesh; its batch size must divide evenly among the devices."""
  n = mesh.devices.size
  for key, value in batch.items():
    size = value.shape[1] if key == "images" else value.shape[0]
    if size % n:
      raise ValueError(f"batch size {size} is not divisible by the {n} devices of the data mesh")
  return jax.device_put(batch, batch_shardings(mesh, batch))
