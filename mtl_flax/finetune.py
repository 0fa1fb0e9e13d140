"""Fine-tuning the expression network on a traditional-expression dataset with k-fold CV.

`finetune(config, workdir)` takes the expression task's trunk from a trained MTL run
(`config.checkpoint_workdir`, whose `config.json` gives the architecture and whose latest
checkpoint gives the weights; cross-stitch runs give the task's own column without the
mixing), puts a new classifier on it and, for every fold of a subject-independent k-fold split
(10 folds for Oulu-CASIA, 5 for CK+ in the paper), trains on the other folds and tests on this
one. An empty `checkpoint_workdir` trains from a random initialisation (the baseline).

The config is read once, at the entry, into `FinetuneSettings`; the network is built by
`mtl_flax.functions` from the MTL run's own settings, and the shared pieces (mesh, NaN check,
JSON writing) come from `sharding` and `metric_writer`.

Results: `workdir/fold_XX.json` per fold, each a `subtle_core.runfolder.ResultStore` entry saved
with the fingerprint of what determines it (the config less the fields that change no result,
the data, the pretrained weights and the fold's test samples). Finished folds of the same
fingerprint are not rerun, so an interrupted run resumes at the first missing fold; a fold saved
under another config, dataset, checkpoint or fold split is rerun. `workdir/finetune_summary.json`
holds the per-fold and mean accuracy.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from mtl_flax import evaluate as evaluate_lib
from mtl_flax import inference
from mtl_flax import metric_writer
from mtl_flax import metrics as metrics_lib
from mtl_flax import runs
from mtl_flax import sharding
from mtl_flax.data import augment
from mtl_flax.data import pipeline
from mtl_flax.models import multitask
from subtle_core import runfolder


SOURCES = ("synthetic", "ckplus", "oulu_casia")


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  """The fields of configs/mtl_finetune.py that the folds use (read once, at the entry)."""
  seed: int
  prng_impl: str
  num_folds: int
  steps: int
  batch_size: int
  eval_batch_size: int
  optimizer: str
  learning_rate: float
  momentum: float
  freeze_trunk: bool
  flip_probability: float
  log_every: int


def finetune_settings(config) -> FinetuneSettings:
  """Reads the fold settings of a config from configs/mtl_finetune.py."""
  return FinetuneSettings(
      seed=int(config.seed), prng_impl=config.prng_impl, num_folds=int(config.num_folds),
      steps=int(config.steps), batch_size=int(config.batch_size),
      eval_batch_size=int(config.eval_batch_size), optimizer=config.optimizer,
      learning_rate=float(config.learning_rate), momentum=float(config.momentum),
      freeze_trunk=bool(config.freeze_trunk), flip_probability=float(config.flip_probability),
      log_every=int(config.log_every))


def check_data_config(data_config) -> None:
  """Raises ValueError naming the `data.*` field that cannot be what the user meant."""
  source = data_config.source
  if source not in SOURCES:
    raise ValueError(f"data.source: unknown source {source!r}; expected one of "
                     f"{', '.join(map(repr, SOURCES))}")
  if source == "synthetic":
    if data_config.path:
      raise ValueError(f"data.path is set ({data_config.path}) but data.source is 'synthetic', "
                       "which reads no files; set data.source to the reader of that dataset "
                       "('ckplus' or 'oulu_casia') or clear data.path")
    return
  if not data_config.path:
    raise ValueError(f"data.path: a dataset root is needed for source {source!r}")
  if not pathlib.Path(data_config.path).exists():
    raise ValueError(f"data.path: {data_config.path} does not exist (expected the root of a "
                     f"{source!r} dataset)")
  from mtl_flax.data import cache  # pylint: disable=g-import-not-at-top
  cache.cache_dir_setting(data_config.get("cache_dir", ""), field="data.cache_dir")


def describe_data(config) -> str:
  """Where the fine-tuning data comes from: the reader and its path, or 'synthetic, seed N'."""
  d = config.data
  if d.source == "synthetic":
    return f"synthetic, seed {config.seed}, {d.num_subjects} subjects"
  return f"{d.source} {d.path} (last {d.peak_frames} frames of each sequence)"


def load_finetune_data(data_config, *, image_size: int, seed: int):
  """(images, labels 0..C-1, subjects, class names) of the fine-tuning dataset.

  Labels are re-indexed to the classes present (e.g. CK+ codes 1-7 -> 0-6). CK+ and
  Oulu-CASIA are read through the dataset cache of `data.cache_dir` ('' = the user's cache
  folder, 'none' = none): their images are then memory-mapped uint8 crops.
  """
  from mtl_flax.data import readers  # pylint: disable=g-import-not-at-top
  check_data_config(data_config)
  source = data_config.source
  if source == "synthetic":
    from mtl_flax.data import synthetic  # pylint: disable=g-import-not-at-top
    images, codes, subjects = synthetic.make_basic_expression_dataset(
        data_config.num_subjects, image_size=image_size, seed=seed)
    names = readers.CKPLUS_CLASSES
  else:
    from mtl_flax.data import cache  # pylint: disable=g-import-not-at-top
    load = readers.load_ckplus if source == "ckplus" else readers.load_oulu_casia
    # Decoded on every core; with a cache, later runs memory-map the crops.
    out = load(data_config.path, peak_frames=data_config.peak_frames, image_size=image_size,
               face_detection=data_config.face_detection, progress=True,
               cache_dir=cache.cache_dir_setting(data_config.get("cache_dir", ""),
                                                 field="data.cache_dir"))
    images, codes, subjects, names = out.images, out.labels, out.subjects, out.class_names
  present, labels = np.unique(np.asarray(codes), return_inverse=True)
  class_names = tuple(names[c] if 0 <= c < len(names) else str(c) for c in present)
  return (np.asarray(images, np.uint8), labels.astype(np.int32),
          np.asarray(subjects, np.int32), class_names)


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """One task's trunk taken from a trained MTL run.

  Attributes:
    trunk: the single-task ResNet module.
    variables: its {'params', 'batch_stats'} (host arrays).
    mtl_config: the MTL run's config (from its config.json).
    step: the checkpoint step the weights come from (the newest intact one).
    directory: the run's checkpoint folder.
  """
  trunk: nn.Module
  variables: dict
  mtl_config: ml_collections.ConfigDict
  step: int
  directory: pathlib.Path


def load_pretrained(checkpoint_workdir, *, task: str = "expression") -> Pretrained:
  """The trunk of `task` from the newest intact checkpoint of the MTL run in `checkpoint_workdir`.

  A damaged newest checkpoint is skipped with a warning naming its folder (see
  `checkpoint.Checkpointer.restore_latest`).
  """
  run = inference.load_run(checkpoint_workdir, field="checkpoint_workdir")
  model = run.model
  if task not in model.tasks:
    raise ValueError(f"{checkpoint_workdir}: the MTL run has tasks {model.tasks}, not {task!r}")
  variables = model.task_variables(run.variables, model.tasks.index(task))
  # Host copies: every fold puts (and donates) its own device buffers.
  return Pretrained(model.trunk, jax.tree_util.tree_map(np.asarray, variables), run.config,
                    run.step, run.directory)


def load_pretrained_trunk(checkpoint_workdir, *, task: str = "expression"):
  """(ResNet module, single-task trunk variables, MTL config) of a trained MTL run."""
  pretrained = load_pretrained(checkpoint_workdir, task=task)
  return pretrained.trunk, pretrained.variables, pretrained.mtl_config


class Classifier(nn.Module):
  """A trunk followed by a new linear classifier."""
  trunk: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    return nn.Dense(self.num_classes, name="head")(self.trunk(x, train=train))


def make_finetune_step(module: Classifier, tx):
  """`step(state, images, labels) -> (state, metrics)` for the single-task classifier."""
  def loss_fn(params, batch_stats, images, labels):
    logits, updates = module.apply({"params": params, "batch_stats": batch_stats},
                                   evaluate_lib.preprocess(images), train=True,
                                   mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (updates["batch_stats"], metrics_lib.accuracy(logits, labels))

  def step(state, images, labels):
    (loss, (stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"], images, labels)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return ({"params": optax.apply_updates(state["params"], updates), "batch_stats": stats,
             "opt_state": opt_state},
            {"loss": loss, "accuracy": acc})
  return step


def make_fold_functions(config, module: Classifier):
  """(tx, mesh, train step, predict, init), jitted once and shared by every fold.

  `config` is the run's `FinetuneSettings` (a fine-tuning config has the same fields).
  """
  if config.optimizer == "sgd":
    opt = optax.sgd(config.learning_rate, momentum=config.momentum)
  elif config.optimizer == "adam":
    opt = optax.adam(config.learning_rate)
  else:
    raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {config.optimizer!r}")
  if config.freeze_trunk:
    labels_fn = lambda p: {k: ("head" if k == "head" else "frozen") for k in p}
    tx = optax.multi_transform({"head": opt, "frozen": optax.set_to_zero()}, labels_fn)
  else:
    tx = opt
  mesh = sharding.data_mesh()
  replicated = NamedSharding(mesh, P())
  step = jax.jit(make_finetune_step(module, tx), donate_argnums=(0,),
                 out_shardings=(replicated, replicated))
  predict = jax.jit(lambda s, x: module.apply(
      {"params": s["params"], "batch_stats": s["batch_stats"]}, evaluate_lib.preprocess(x),
      train=False))
  init = jax.jit(functools.partial(module.init, train=False))
  return tx, mesh, step, predict, init


def run_fold(config, fold: int, train_idx, test_idx, images, labels, module: Classifier,
             trunk_vars, functions) -> dict:
  """Trains one fold from the pretrained trunk; returns its test accuracy and sizes.

  `config` is the run's `FinetuneSettings` (a fine-tuning config has the same fields).
  """
  tx, mesh, step, predict, init = functions
  rng = jax.random.fold_in(jax.random.key(config.seed, impl=config.prng_impl), fold)
  size = images.shape[1]
  variables = init(rng, jnp.zeros((1, size, size, 3), jnp.float32))
  params, stats = dict(variables["params"]), dict(variables["batch_stats"])
  if trunk_vars is not None:
    params["trunk"], stats["trunk"] = trunk_vars["params"], trunk_vars["batch_stats"]
  n = mesh.devices.size
  if config.batch_size % n:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {n} devices")
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P("data"))
  state = jax.device_put({"params": params, "batch_stats": stats,
                          "opt_state": tx.init(params)}, replicated)
  train = pipeline.TaskData(images[train_idx], labels[train_idx])
  for s in range(config.steps):
    idx = pipeline.epoch_batch_indices(len(train), config.batch_size, s,
                                       seed=config.seed + 7919 * fold)
    imgs = train.images[idx].copy()
    for j in range(len(idx)):
      imgs[j] = augment.augment_expression(
          imgs[j], np.random.default_rng([config.seed, fold, s, j]),
          flip_probability=config.flip_probability)
    state, m = step(state, jax.device_put(imgs, sharded),
                    jax.device_put(train.targets[idx], sharded))
    if (s + 1) % config.log_every == 0 or s + 1 == config.steps:
      m = jax.device_get(m)
      metric_writer.check_finite(s + 1, m)
      logging.info("fold %d step %d: loss %.4f acc %.3f", fold, s + 1, m["loss"], m["accuracy"])
  test_images = images[test_idx]
  batch = -(-config.eval_batch_size // n) * n
  logits = []
  for start in range(0, len(test_images), batch):
    idx = np.arange(start, start + batch)
    valid = idx < len(test_images)
    x = jax.device_put(test_images[np.where(valid, idx, 0)], sharded)
    logits.append(np.asarray(jax.device_get(predict(state, x)))[valid])
  accuracy = float(metrics_lib.accuracy(np.concatenate(logits), labels[test_idx]))
  return {"fold": fold, "accuracy": accuracy, "num_train": int(len(train_idx)),
          "num_test": int(len(test_idx))}


def setup_fingerprint(config, images, labels, subjects, trunk_vars) -> runfolder.Fingerprint:
  """What every fold's result depends on but the split: the config (less
  `runs.NON_RESULT_FIELDS`, such as `log_every`), the data (images, labels, subjects) and the
  pretrained trunk's weights. `fold_fingerprint` adds a fold's test samples. So a finished fold
  is reused only by a rerun of the same setup: a different seed, fold count, dataset or
  checkpoint reruns it."""
  return runfolder.fingerprint(config=runs.result_fields(config), images=images, labels=labels,
                               subjects=subjects, trunk=trunk_vars)


def fold_fingerprint(setup: runfolder.Fingerprint, test_idx) -> runfolder.Fingerprint:
  """The fingerprint of one fold: the run's `setup_fingerprint` and the fold's test samples."""
  return runfolder.fingerprint(setup=setup.digest, test_samples=np.asarray(test_idx))


def finetune(config: ml_collections.ConfigDict, workdir) -> dict:
  """Subject-independent k-fold fine-tuning; returns (and writes) the summary.

  Args:
    config: from `configs/mtl_finetune.py`.
    workdir: output folder (per-fold JSON, finetune_summary.json).

  Returns:
    {'fold_accuracies': [...], 'mean_accuracy', 'std_accuracy', 'num_folds', ...}.
  """
  workdir = pathlib.Path(workdir)
  # The config is checked, the weights and the data loaded before anything is written.
  check_data_config(config.data)
  fold_settings = finetune_settings(config)
  pretrained = None
  if config.checkpoint_workdir:
    pretrained = load_pretrained(config.checkpoint_workdir)
    trunk, trunk_vars = pretrained.trunk, pretrained.variables
    image_size = int(pretrained.mtl_config.image_size)
  else:
    trunk = multitask.backbone(config.backbone)
    trunk_vars, image_size = None, int(config.image_size)
  images, labels, subjects, class_names = load_finetune_data(config.data, image_size=image_size,
                                                             seed=config.seed)
  metric_writer.write_json(workdir / "config.json", json.loads(config.to_json_best_effort()))
  folds = pipeline.subject_kfold(subjects, fold_settings.num_folds, seed=fold_settings.seed)
  module = Classifier(trunk=trunk, num_classes=len(class_names))
  fold_functions = None
  results = []
  store = runfolder.ResultStore(workdir)
  # The data and weights are hashed once; each fold adds its test samples.
  setup = setup_fingerprint(config, images, labels, subjects, trunk_vars)
  for fold, (train_idx, test_idx) in enumerate(folds):
    name = f"fold_{fold:02d}"
    fp = fold_fingerprint(setup, test_idx)
    result = store.load_json(name, fp, on_mismatch="recompute")
    if result is not None:
      results.append(result)
      continue
    fold_functions = fold_functions or make_fold_functions(fold_settings, module)
    result = run_fold(fold_settings, fold, train_idx, test_idx, images, labels, module,
                      trunk_vars, fold_functions)
    result["test_subjects"] = sorted(int(s) for s in np.unique(subjects[test_idx]))
    store.save_json(name, fp, result)
    results.append(result)
  accuracies = [r["accuracy"] for r in results]
  mean, std = metrics_lib.mean_and_std(accuracies)
  summary = {"fold_accuracies": accuracies, "mean_accuracy": mean, "std_accuracy": std,
             "num_folds": config.num_folds, "class_names": list(class_names),
             "num_samples": int(len(labels)), "num_subjects": int(len(np.unique(subjects))),
             "pretrained_from": config.checkpoint_workdir or None,
             # Which weights: the newest checkpoint of the MTL run that could be restored.
             "pretrained_step": None if pretrained is None else pretrained.step,
             "pretrained_checkpoint": (
                 None if pretrained is None else
                 f"{pretrained.directory / str(pretrained.step)} (the newest intact checkpoint)"),
             "data": describe_data(config),
             "evaluated": "each fold's classifier after its last step, on the fold's test "
                          "subjects (no checkpoint selection)"}
  metric_writer.write_json(workdir / "finetune_summary.json", summary)
  return summary
