"""Several hosts: one process per host, joined by ``jax.distributed``.

``python -m experiments.mtl`` and ``python -m experiments.cdmer`` take three flags, all or none::

  --coordinator_address=HOST:PORT   process 0's host and a free port every process can reach
  --num_processes=N                 how many processes take part
  --process_id=I                    this process's rank, 0 <= I < N

Run alone, a program needs none of them (and this module never imports JAX). Given, they join
the processes before any other JAX use (:func:`initialize`; CPU collectives go through gloo so
that the processes of a CPU-only test on 127.0.0.1 form one mesh), and the helpers below move
small host results between them: :func:`all_gather_arrays` / :func:`broadcast_arrays` carry
dicts of NumPy arrays bit for bit (every dtype, float64 included, whatever ``jax_enable_x64``
says), serialised as bytes and exchanged through ``jax.experimental.multihost_utils``.

Every function works in a single process too (then it is the identity), so callers need no
special case: ``is_main_process()`` is True and the gathers return the caller's own data.
"""
from __future__ import annotations

import dataclasses
import io
import re
import sys
from typing import Mapping

import numpy as np

FLAG_NAMES = ("coordinator_address", "num_processes", "process_id")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
  """The processes of one run and this process's place in it.

  Attributes:
    coordinator_address: ``host:port`` of process 0's coordination service.
    num_processes: how many processes take part.
    process_id: this process's rank in ``[0, num_processes)``.
  """
  coordinator_address: str
  num_processes: int
  process_id: int


def process_group(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None) -> ProcessGroup | None:
  """Checks the three settings: all given -> a :class:`ProcessGroup`, none -> None (run alone).

  Raises:
    ValueError: some but not all are given (naming the missing flags), or one is malformed.
  """
  values = {"coordinator_address": coordinator_address or None, "num_processes": num_processes,
            "process_id": process_id}
  given = [name for name, value in values.items() if value is not None]
  if not given:
    return None
  missing = [name for name in FLAG_NAMES if values[name] is None]
  if missing:
    raise ValueError(
        f"{', '.join('--' + m for m in missing)} missing: a run on several processes needs all "
        "of --coordinator_address=HOST:PORT, --num_processes=N and --process_id=I (0 <= I < N), "
        f"and a run alone none of them (given: {', '.join('--' + g for g in given)})")
  if not _ADDRESS.match(coordinator_address) or not 0 < int(coordinator_address.rsplit(":", 1)[1]
                                                             ) < 65536:
    raise ValueError(f"--coordinator_address: expected HOST:PORT (e.g. 10.0.0.1:1234), got "
                     f"{coordinator_address!r}")
  if num_processes < 1:
    raise ValueError(f"--num_processes: expected a positive number, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id: expected 0 <= id < --num_processes={num_processes}, got "
                     f"{process_id}")
  return ProcessGroup(coordinator_address, int(num_processes), int(process_id))


def define_flags(flag_values=None) -> dict:
  """Defines ``--coordinator_address``, ``--num_processes`` and ``--process_id`` (absl).

  Returns:
    name -> its ``absl.flags.FlagHolder``; pass it to :func:`initialize_from_flags`.
  """
  from absl import flags  # noqa: PLC0415  (absl only where an entry point defines flags)
  flag_values = flags.FLAGS if flag_values is None else flag_values
  return {
      "coordinator_address": flags.DEFINE_string(
          "coordinator_address", None,
          "Several hosts: HOST:PORT of process 0 (with --num_processes and --process_id).",
          flag_values=flag_values),
      "num_processes": flags.DEFINE_integer(
          "num_processes", None, "Several hosts: the number of processes.",
          flag_values=flag_values),
      "process_id": flags.DEFINE_integer(
          "process_id", None, "Several hosts: this process's rank, 0 <= id < --num_processes.",
          flag_values=flag_values),
  }


def initialize(group: ProcessGroup | None) -> None:
  """Joins the processes of ``group`` (``jax.distributed.initialize``); nothing when None.

  Call it before any other JAX use (the first computation fixes the backend). On CPU the
  collectives go through gloo; the setting does nothing on accelerators.
  """
  if group is None:
    return
  import jax  # noqa: PLC0415  (JAX only when several processes are asked for)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=group.coordinator_address,
                             num_processes=group.num_processes, process_id=group.process_id)


def initialize_from_flags(holders: Mapping) -> ProcessGroup | None:
  """:func:`initialize` with the flags of :func:`define_flags`; returns the group (or None)."""
  group = process_group(**{name: holders[name].value for name in FLAG_NAMES})
  initialize(group)
  return group


def _joined_jax():
  """JAX if this process joined others (:func:`initialize`), else None.

  A process that never imported JAX, or never joined, runs alone; asking it does not start a
  JAX backend (an error handler may ask before JAX was ever used).
  """
  jax = sys.modules.get("jax")
  return jax if jax is not None and jax.distributed.is_initialized() else None


def process_count() -> int:
  """The number of processes of this run (1 when running alone)."""
  jax = _joined_jax()
  return 1 if jax is None else int(jax.process_count())


def process_index() -> int:
  """This process's rank (0 when running alone)."""
  jax = _joined_jax()
  return 0 if jax is None else int(jax.process_index())


def is_main_process() -> bool:
  """Whether this process writes the run's outputs (process 0)."""
  return process_index() == 0


def all_gather_bytes(payload: bytes) -> list[bytes]:
  """Every process's ``payload``, in process order, on every process (all must call it)."""
  if process_count() == 1:
    return [bytes(payload)]
  from jax.experimental import multihost_utils  # noqa: PLC0415
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(payload)], np.int32)))
  sizes = sizes.reshape(-1)
  padded = np.zeros(max(int(sizes.max()), 1), np.uint8)
  padded[:len(payload)] = np.frombuffer(payload, np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return [gathered[p, :int(n)].tobytes() for p, n in enumerate(sizes)]


def arrays_to_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  """A dict of arrays as ``.npz`` bytes (exact dtypes and values)."""
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  return buffer.getvalue()


def arrays_from_bytes(payload: bytes) -> dict[str, np.ndarray]:
  """The inverse of :func:`arrays_to_bytes`."""
  with np.load(io.BytesIO(payload), allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def all_gather_arrays(arrays: Mapping[str, np.ndarray] | None
                      ) -> list[dict[str, np.ndarray] | None]:
  """Every process's dict of arrays (None where a process had nothing), on every process."""
  if process_count() == 1:
    return [None if arrays is None else {k: np.asarray(v) for k, v in arrays.items()}]
  payloads = all_gather_bytes(b"" if arrays is None else arrays_to_bytes(arrays))
  return [arrays_from_bytes(p) if p else None for p in payloads]


def broadcast_arrays(arrays: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
  """Process 0's dict of arrays on every process (the others' argument is ignored)."""
  if process_count() == 1:
    return {k: np.asarray(v) for k, v in (arrays or {}).items()}
  mine = arrays_to_bytes(arrays or {}) if is_main_process() else b""
  return arrays_from_bytes(all_gather_bytes(mine)[0])


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier ``name`` (nothing when alone)."""
  if process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    multihost_utils.sync_global_devices(name)


def wait_for_all(name: str, timeout_s: float = 7 * 24 * 3600) -> None:
  """Returns when every process has called it with ``name`` (nothing when alone).

  An entry point of several processes calls it last: a process that leaves while another still
  works (process 0 writing outputs, or running what it alone runs) would reach
  ``jax.distributed``'s shutdown barrier and, after its five minutes, end the run of them all.
  Unlike :func:`barrier` it uses no device collective, only the coordination service (its
  client is not public API: ``jax._src.distributed.global_state``), so it can wait for days.
  """
  if process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # noqa: PLC0415
  jax_distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))
