"""A small wrapper around `orbax.checkpoint.CheckpointManager` that resumes from the workdir.

Checkpoints live in `workdir/checkpoints/<step>/` with two items: `state` (the train-state
pytree, saved with `StandardSave`) and `meta` (JSON: the shape and dtype of every leaf and any
caller metadata such as the architecture). `restore_latest(target)` restores the newest step
onto the structure of `target`, after checking the stored shapes against it so that a
checkpoint of another architecture fails with an error naming the leaves that do not match
(instead of an opaque Orbax/TensorStore error).

A checkpoint that cannot be read (a truncated file, a missing item, unreadable metadata) is
*damaged*, which is not the same as one of another architecture (`CheckpointMismatch`, always
refused): `restore_latest` then falls back to the newest intact step and logs a warning naming
the damaged step folders; when no step is intact it raises `DamagedCheckpointError`, one line
naming the checkpoint folder and its steps.

Several processes (hosts) save and restore together through Orbax's multi-process support:
every process calls `save` / `restore_latest` with the same global arrays, each writes the
shards it holds (a replicated leaf once) into the one checkpoint folder, which all of them must
see (a shared file system), and process 0 writes the metadata and commits the step. Damaged
steps are moved aside by process 0 alone.
"""
from __future__ import annotations

import logging
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from subtle_core import distributed


class CheckpointMismatch(ValueError):
  """A checkpoint of another architecture (or other metadata) than the run restoring it."""


class DamagedCheckpointError(ValueError):
  """No checkpoint step in the folder can be read."""


def tree_signature(tree) -> dict:
  """'path/to/leaf' -> 'dtype[d0,d1,...]' for every array leaf of a pytree."""
  signature = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = "/".join(_key_name(k) for k in path)
    shape = getattr(leaf, "shape", np.shape(leaf))
    dtype = getattr(leaf, "dtype", np.asarray(leaf).dtype)
    signature[name] = f"{np.dtype(dtype).name}{list(shape)}"
  return signature


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def compare_signatures(stored: dict, expected: dict, *, where: str) -> None:
  """Raises `CheckpointMismatch` listing the leaves whose presence, shape or dtype differ."""
  missing = sorted(set(expected) - set(stored))
  extra = sorted(set(stored) - set(expected))
  changed = sorted(k for k in set(stored) & set(expected) if stored[k] != expected[k])
  if not (missing or extra or changed):
    return
  lines = [f"checkpoint {where} does not match the model being restored "
           "(a different architecture or config?):"]
  if changed:
    lines.append("  shape/dtype differ: " + "; ".join(
        f"{k}: checkpoint {stored[k]} vs model {expected[k]}" for k in changed[:10]))
  if missing:
    lines.append(f"  missing in checkpoint: {missing[:10]}")
  if extra:
    lines.append(f"  only in checkpoint: {extra[:10]}")
  if len(changed) > 10 or len(missing) > 10 or len(extra) > 10:
    lines.append("  (lists truncated to 10 entries)")
  raise CheckpointMismatch("\n".join(lines))


class Checkpointer:
  """Saves every `save_every` steps, keeps the last `keep`, restores the latest.

  Usage:
    ckpt = Checkpointer(workdir, save_every=100, keep=3)
    state = ckpt.restore_latest(state)   # unchanged when there is no checkpoint
    ...
    ckpt.save(step, state)               # no-op unless step is a multiple of save_every
    ckpt.close()
  """

  def __init__(self, workdir, *, save_every: int = 1000, keep: int = 3,
               metadata: dict | None = None, subdir: str = "checkpoints"):
    self.directory = pathlib.Path(workdir).absolute() / subdir
    self.metadata = dict(metadata or {})
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))
    self.damaged_steps: list[int] = []

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list:
    return list(self._manager.all_steps())

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves `state` at `step` if it is a save step (or `force`); returns whether it saved."""
    meta = {"signature": tree_signature(state), "step": int(step), **self.metadata}
    return self._manager.save(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)), force=force)

  def read_metadata(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore(self, step: int, target):
    """Restores step `step` onto the structure (and shardings) of `target`.

    Raises:
      CheckpointMismatch: the step was saved by another architecture (caller metadata such as
        the backbone, or the leaves' shapes, differ).
      Exception: whatever Orbax raises for a damaged step (see `restore_latest`).
    """
    meta = self.read_metadata(step)
    where = self.directory / str(step)
    for key, value in self.metadata.items():
      if key in meta and meta[key] != value:
        raise CheckpointMismatch(
            f"checkpoint {where} was saved by another {key} "
            f"({_describe_difference(meta[key], value)}); use another workdir, or delete "
            f"{self.directory} to start afresh")
    compare_signatures(meta.get("signature", {}), tree_signature(target), where=str(where))
    abstract = jax.tree_util.tree_map(_restore_struct, target)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"]

  def restore_latest(self, target, *, set_aside: pathlib.Path | None = None) -> Any:
    """The newest intact checkpoint restored onto `target`; `target` itself when there is none.

    A step that cannot be read is skipped with a warning naming its folder, and the next older
    one is tried; a step of another architecture is refused (`CheckpointMismatch`), not skipped.
    The damaged steps skipped are in `self.damaged_steps` afterwards.

    Args:
      target: the state whose structure (and shardings) the checkpoint is restored onto.
      set_aside: if given, damaged step folders newer than the restored one are moved into this
        folder (so that a resumed run can save those steps again); otherwise they stay, and the
        warning says which folder to delete.

    Raises:
      DamagedCheckpointError: there are checkpoints, but none of them can be read.
      CheckpointMismatch: the newest readable step belongs to another architecture.
    """
    self.damaged_steps = []
    errors = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state = self.restore(step, target)
      except CheckpointMismatch:
        raise
      except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore: damaged files)
        self.damaged_steps.append(step)
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        continue
      if self.damaged_steps:
        self._report_damaged(step, errors, set_aside)
      return state
    if self.damaged_steps:
      raise DamagedCheckpointError(
          f"{self.directory}: no checkpoint can be restored; step(s) "
          f"{', '.join(map(str, self.damaged_steps))} are damaged ({errors[0]}); delete "
          f"{self.directory} to start the run afresh")
    return target

  def _report_damaged(self, restored: int, errors: list, set_aside):
    folders = [self.directory / str(s) for s in self.damaged_steps]
    if set_aside is None:
      action = "delete " + ", ".join(map(str, folders))
    else:
      set_aside = pathlib.Path(set_aside)
      moved = [str(set_aside)]  # what the other processes report: process 0 moves them
      if jax.process_index() == 0:
        set_aside.mkdir(parents=True, exist_ok=True)
        moved = []
        for folder in folders:
          dest = set_aside / folder.name
          n = 1
          while dest.exists():
            dest, n = set_aside / f"{folder.name}.{n}", n + 1
          shutil.move(str(folder), str(dest))
          moved.append(str(dest))
      distributed.barrier("checkpoint_set_aside")
      self._manager.reload()
      action = f"moved them to {', '.join(moved)} (delete them when no longer needed)"
    logging.warning("checkpoint step(s) %s in %s cannot be restored (%s); using step %d, the "
                    "newest intact one; %s", ", ".join(map(str, self.damaged_steps)),
                    self.directory, "; ".join(errors), restored, action)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _restore_struct(leaf) -> jax.ShapeDtypeStruct:
  """What a target leaf is restored as: its shape, dtype and sharding.

  A leaf without a sharding (a host array) is restored onto this process's first device, not
  onto the devices it was saved from: a checkpoint written by several processes is then readable
  by one (fine-tuning, `inference.load_run`).
  """
  struct = ocp.utils.to_shape_dtype_struct(leaf)
  if getattr(struct, "sharding", None) is None:
    first = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=first)
  return struct


def _describe_difference(saved, now) -> str:
  """'key: saved X, now Y' for each differing entry of two (metadata) dicts."""
  if isinstance(saved, dict) and isinstance(now, dict):
    keys = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in keys)
  return f"saved {saved!r}, now {now!r}"
