"""A small wrapper around `orbax.checkpoint.CheckpointManager` that resumes from the workdir.

Checkpoints live in `workdir/checkpoints/<step>/` with two items: `state` (the train-state
pytree, saved with `StandardSave`) and `meta` (JSON: the shape and dtype of every leaf and any
caller metadata such as the architecture). `restore_latest(target)` restores the newest step
onto the structure of `target`, after checking the stored shapes against it so that a
checkpoint of another architecture fails with an error naming the leaves that do not match
(instead of an opaque Orbax/TensorStore error).
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


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
  """Raises ValueError listing the leaves whose presence, shape or dtype differ."""
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
  raise ValueError("\n".join(lines))


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
    """Restores step `step` onto the structure (and shardings) of `target`."""
    meta = self.read_metadata(step)
    compare_signatures(meta.get("signature", {}), tree_signature(target),
                       where=str(self.directory / str(step)))
    for key, value in self.metadata.items():
      if key in meta and meta[key] != value:
        raise ValueError(f"checkpoint {self.directory / str(step)}: {key} is {meta[key]!r}, "
                         f"the run being restored has {value!r}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"]

  def restore_latest(self, target) -> Any:
    """The latest checkpoint restored onto `target`, or `target` itself when there is none."""
    step = self.latest_step()
    if step is None:
      return target
    return self.restore(step, target)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
