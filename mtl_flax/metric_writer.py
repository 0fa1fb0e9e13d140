"""Metric writing: JSON lines (and TensorBoard events when a writer is installed), NaN checks.

On several processes (hosts) only process 0 writes: the others' `MetricWriter` writes nothing,
and :func:`write_json` is a no-op there.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from subtle_core import atomic
from subtle_core import distributed


class MetricWriter:
  """Appends JSON lines to workdir/metrics.jsonl (and TensorBoard events when available).

  On a process other than 0 of several it writes nothing.
  """

  def __init__(self, workdir: pathlib.Path, *, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    self.active = distributed.is_main_process()
    self._tb = None
    if not self.active:
      return
    if self.path.exists():
      # Drop records past the checkpoint we resume from: those steps are recomputed.
      kept = []
      for line in self.path.read_text().splitlines():
        try:
          if json.loads(line).get("step", 0) <= resume_step:
            kept.append(line)
        except json.JSONDecodeError:
          continue
      atomic.write_text(self.path, "".join(k + "\n" for k in kept))
    self._tb = _tensorboard_writer(workdir / "tensorboard")

  def write(self, step: int, scalars: dict, prefix: str = ""):
    if not self.active:
      return
    record = {"step": int(step), **{prefix + k: _to_float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for key, value in record.items():
        if key != "step" and isinstance(value, float):
          self._tb.add_scalar(key, value, int(step))
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def _to_float(value):
  value = np.asarray(value)
  return float(value) if value.size == 1 else value.tolist()


class _FlaxSummaryAdapter:
  """flax.metrics.tensorboard.SummaryWriter behind the add_scalar API of the others."""

  def __init__(self, writer):
    self._writer = writer

  def add_scalar(self, tag, value, step):
    self._writer.scalar(tag, value, step)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def _tensorboard_writer(logdir):
  """A TensorBoard event writer if tensorboardX, torch or flax+TensorFlow is importable."""
  for module in ("tensorboardX", "torch.utils.tensorboard"):
    try:
      return __import__(module, fromlist=["SummaryWriter"]).SummaryWriter(str(logdir))
    except Exception:  # pylint: disable=broad-except
      continue
  try:
    from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
    return _FlaxSummaryAdapter(tensorboard.SummaryWriter(str(logdir)))
  except Exception:  # pylint: disable=broad-except
    return None  # optional: JSON lines are always written


def write_json(path, obj):
  """Writes `obj` as indented JSON, atomically (on process 0 only, when there are several)."""
  if not distributed.is_main_process():
    return
  atomic.write_text(pathlib.Path(path), json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_finite(step: int, scalars: dict):
  """Raises FloatingPointError naming the first non-finite metric."""
  for key, value in scalars.items():
    if not np.all(np.isfinite(np.asarray(value))):
      raise FloatingPointError(
          f"step {step}: {key} is {value} (non-finite); lower optimizer.learning_rate or the "
          "regulariser strength, or check the data")
