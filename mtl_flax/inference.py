"""A trained multi-task run's model, restored from its work directory, and its predictions.

For notebooks and analysis: ``load_run(workdir)`` rebuilds the model from ``config.json`` and
restores the latest checkpoint; ``predict`` runs the model on one task's images.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import jax
import ml_collections
import numpy as np

from mtl_flax import checkpoint as checkpoint_lib
from mtl_flax import evaluate as evaluate_lib
from mtl_flax import functions
from mtl_flax import optim
from mtl_flax import settings as settings_lib
from mtl_flax import step as step_lib


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A restored run.

  Attributes:
    model: the stacked multi-task model.
    variables: ``{'params', 'batch_stats'}`` host arrays of the newest intact checkpoint.
    config: the run's config (``workdir/config.json``).
    step: the checkpoint's step.
    directory: the checkpoint folder it was restored from.
  """
  model: object
  variables: dict
  config: ml_collections.ConfigDict
  step: int
  directory: pathlib.Path


def load_run(workdir, *, field: str = "") -> TrainedRun:
  """Restores the newest intact checkpoint of the MTL run in ``workdir``.

  A damaged newest checkpoint is skipped with a warning naming its folder (see
  ``checkpoint.Checkpointer.restore_latest``). Fine-tuning restores its pretrained run this way.

  Args:
    workdir: the work directory of an ``experiments.mtl`` run.
    field: the config field that named ``workdir``, for the error messages (e.g.
      ``checkpoint_workdir``).

  Raises:
    FileNotFoundError: naming ``workdir``, its ``config.json`` or its checkpoint folder.
  """
  prefix = f"{field}: " if field else ""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{prefix}{workdir} does not exist (expected the workdir of an "
                            "experiments.mtl run)")
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{prefix}{config_path} not found (expected the work directory of "
                            "an MTL run, as written by mtl_flax.train.train_and_evaluate)")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  compute = settings_lib.compute_settings(config)
  model = functions.build_model(compute)
  tx = optim.optimizer_for(model, compute)
  image_shape = (compute.image_size, compute.image_size, 3)
  abstract = jax.eval_shape(functools.partial(step_lib.init_state, model, tx,
                                              image_shape=image_shape), jax.random.key(0))
  # Host arrays throughout: no device op (and no compilation) per leaf.
  target = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract)
  ckpt = checkpoint_lib.Checkpointer(workdir)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"{prefix}no checkpoint in {ckpt.directory}")
    state = jax.device_get(ckpt.restore_latest(target))
    directory = ckpt.directory
  finally:
    ckpt.close()
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return TrainedRun(model=model, variables=variables, config=config, step=int(state["step"]),
                    directory=pathlib.Path(directory))


def predict(run: TrainedRun, images: np.ndarray, task: str, *, batch_size: int = 64) -> np.ndarray:
  """The outputs of ``task``'s network on uint8 images.

  Args:
    run: from :func:`load_run`.
    images: (N, S, S, 3) uint8, S the run's ``image_size``.
    task: 'expression' (returns (N, C) logits) or 'landmarks' (returns (N, 136) coordinates in
      the layout of the training targets).
    batch_size: images per forward pass.

  Returns:
    float32 outputs, one row per image.
  """
  tasks = tuple(run.model.tasks)
  if task not in tasks:
    raise ValueError(f"task: the run has tasks {tasks}, not {task!r}")
  images = np.asarray(images)
  size = run.config.image_size
  if images.ndim != 4 or images.shape[1:] != (size, size, 3):
    raise ValueError(f"images must have shape (N, {size}, {size}, 3) (the run's image_size), "
                     f"got {images.shape}")
  eval_step = jax.jit(evaluate_lib.make_eval_step(run.model))
  slot = tasks.index(task)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    # Every task slot gets the same images; only `task`'s outputs are kept.
    _, outputs = eval_step(run.variables, np.stack([chunk] * len(tasks)))
    out.append(np.asarray(outputs[slot], np.float32))
  return np.concatenate(out)
