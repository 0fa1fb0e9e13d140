"""Training loop of the multi-task networks: one jitted step over both tasks, data parallel.

`train_and_evaluate(config, workdir)` (callable from a notebook; `experiments/mtl.py` only parses
flags) builds the stacked model, loads the two datasets, resumes from the latest checkpoint in
`workdir/checkpoints`, trains, evaluates periodically and, at the end, writes the decrease-rate
and embedding plots and `summary.json`.

The loss of one step is

  CE(expression logits, labels) + landmark loss (L1 or L2 per face, mean over the batch)
  + strength * trace norm of the stacked conv kernels (LAF / Tucker / TT)
  + the ADA term (gradient reversal with lambda_p = w (2 / (1 + exp(-10 p)) - 1), p = step / steps;
    or alternating discriminator / feature updates on even / odd steps).

Data parallelism: a `jax.sharding.Mesh` over every local device with one 'data' axis; the batch
is sharded along its batch axis, the train state replicated, and `jax.jit` inserts the
all-reduces (BatchNorm statistics are computed over the global batch).
"""
from __future__ import annotations

import functools
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mtl_flax import adversarial
from mtl_flax import checkpoint as checkpoint_lib
from mtl_flax import evaluate as evaluate_lib
from mtl_flax import metrics as metrics_lib
from mtl_flax import trace_norm
from mtl_flax.data import augment
from mtl_flax.data import pipeline
from mtl_flax.models import multitask
from mtl_flax.models import resnet
from subtle_core import atomic

Array = jax.Array


# --------------------------------------------------------------------------- model and data


def resolve_hard_share_convs(backbone: str, value: int) -> int:
  """k of hard sharing; a negative value -s means "up to the end of stage s" of the backbone."""
  if value >= 0:
    return int(value)
  stage_sizes = multitask._backbone(backbone, jnp.float32).stage_sizes  # pylint: disable=protected-access
  ends = resnet.stage_end_conv_counts(stage_sizes)
  stage = -value
  if not 1 <= stage <= len(ends):
    raise ValueError(f"model.hard_share_convs={value}: stage {stage} is not in 1..{len(ends)}")
  return ends[stage - 1]


def build_model(config: ml_collections.ConfigDict) -> multitask.MultiTaskNet:
  """The `MultiTaskNet` described by `config.model`, `config.tasks` and `config.ada`."""
  tasks = tuple(config.tasks)
  if config.ada.enabled and len(tasks) != 2:
    raise ValueError(f"ada.enabled needs two tasks (two datasets), got tasks={tasks}")
  if config.regulariser.kind != "none" and len(tasks) < 2:
    raise ValueError(f"regulariser.kind={config.regulariser.kind!r} couples tasks and needs "
                     f"T >= 2, got tasks={tasks}")
  if config.regulariser.kind != "none" and config.model.sharing == "hard":
    logging.info("trace norm on the per-task (not hard-shared) layers only")
  return multitask.build_multitask(
      backbone=config.model.backbone, num_classes=config.model.num_classes,
      num_landmarks=config.model.num_landmarks, sharing=config.model.sharing,
      hard_share_convs=resolve_hard_share_convs(config.model.backbone,
                                                config.model.hard_share_convs),
      tasks=tasks, adversarial=bool(config.ada.enabled))


def _synthetic():
  # Imported lazily: only runs on the synthetic data need the generator.
  from mtl_flax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic


def _split(data: pipeline.TaskData, fraction: float, seed: int):
  if data.subjects is not None and (data.subjects >= 0).all():
    train_idx, test_idx = pipeline.split_by_subject(data.subjects, fraction, seed=seed)
  else:
    train_idx, test_idx = pipeline.split_random(len(data), fraction, seed=seed)
  return data.subset(train_idx), data.subset(test_idx)


# The sources that read a dataset root (`data.<task>.path`), per task; 'synthetic' reads none.
READER_SOURCES = {"expression": ("image_folder",), "landmarks": ("300w",)}


def check_data_config(task: str, data_config) -> None:
  """Raises ValueError naming the field when `data.<task>` cannot be what the user meant.

  The source must be known for the task; 'synthetic' takes no path (a path set beside it is a
  contradiction, not something to ignore); a reader source needs `path`, and every path given
  must exist.
  """
  sources = ("synthetic",) + READER_SOURCES[task]
  source = data_config.source
  field = f"data.{task}"
  if source not in sources:
    raise ValueError(f"{field}.source: unknown source {source!r}; expected one of "
                     f"{', '.join(map(repr, sources))}")
  if source == "synthetic":
    for name in ("path", "test_path"):
      if data_config.get(name):  # partial data configs may lack the field
        raise ValueError(
            f"{field}.{name} is set ({data_config[name]}) but {field}.source is 'synthetic', "
            f"which reads no files; set {field}.source to the reader of that dataset "
            f"({', '.join(map(repr, READER_SOURCES[task]))}) or clear {field}.{name}")
    return
  if not data_config.path:
    raise ValueError(f"{field}.path: a dataset root is needed for source {source!r}")
  for name in ("path", "test_path"):
    if data_config.get(name) and not pathlib.Path(data_config[name]).exists():
      raise ValueError(f"{field}.{name}: {data_config[name]} does not exist (expected the root "
                       f"of a {source!r} dataset)")


def describe_data(config) -> dict:
  """task -> where its data came from: the reader and paths, or 'synthetic, seed N'."""
  out = {}
  for task in config.tasks:
    d = config.data[task]
    split = f"{d.test_fraction:.0%} held out for testing (by subject where known)"
    if d.source == "synthetic":
      # The landmark faces are drawn from seed + 1 (see `load_task_data`).
      seed = config.seed + (0 if task == "expression" else 1)
      out[task] = f"synthetic, seed {seed}, {d.num} samples; {split}"
    else:
      test = f"test set {d.test_path}" if d.test_path else split
      out[task] = f"{d.source} {d.path}; {test}"
  return out


def load_task_data(task: str, data_config, *, image_size: int, num_classes: int, seed: int):
  """(train, test) `TaskData` of one task from its data config (synthetic or a reader)."""
  from mtl_flax.data import readers  # pylint: disable=g-import-not-at-top

  check_data_config(task, data_config)
  class_names = None

  def read(path):
    nonlocal class_names
    if task == "expression":
      # The test root is read with the training root's class order, so a class missing from
      # one of them cannot shift the other's label indices.
      out = readers.load_image_folder(path, class_names=class_names, num_classes=num_classes,
                                      image_size=image_size,
                                      face_detection=data_config.face_detection)
      class_names = out.class_names
      subjects = out.subjects if (out.subjects >= 0).all() else None
      return pipeline.TaskData(out.images, out.labels, subjects)
    out = readers.load_300w(path, image_size=image_size)
    return pipeline.TaskData(out.images, out.landmarks)

  if data_config.source == "synthetic":
    synthetic = _synthetic()
    if task == "expression":
      images, labels, subjects = synthetic.make_expression_dataset(
          data_config.num, num_classes=num_classes, image_size=image_size, seed=seed,
          domain="A")
      data = pipeline.TaskData(np.asarray(images), np.asarray(labels, np.int32),
                               np.asarray(subjects, np.int32))
    else:
      images, points, subjects = synthetic.make_landmark_dataset(
          data_config.num, image_size=image_size, seed=seed + 1, domain="B",
          return_subjects=True)
      data = pipeline.TaskData(np.asarray(images), np.asarray(points, np.float32),
                               np.asarray(subjects, np.int32))
    return _split(data, data_config.test_fraction, seed)
  data = read(data_config.path)
  if data_config.test_path:
    return data, read(data_config.test_path)
  return _split(data, data_config.test_fraction, seed)


def load_datasets(config) -> tuple[dict, dict]:
  """Train and test `TaskData` for every task of `config.tasks`."""
  for task in config.tasks:  # every task's fields, before any dataset is read
    check_data_config(task, config.data[task])
  train, test = {}, {}
  for task in config.tasks:
    train[task], test[task] = load_task_data(
        task, config.data[task], image_size=config.image_size,
        num_classes=config.model.num_classes, seed=config.seed)
    if task == "expression":
      labels = np.concatenate([train[task].targets, test[task].targets])
      if labels.min() < 0 or labels.max() >= config.model.num_classes:
        raise ValueError(f"expression labels span [{labels.min()}, {labels.max()}], outside "
                         f"[0, model.num_classes={config.model.num_classes})")
  return train, test


# --------------------------------------------------------------------------- optimiser and state


def make_optimizer(model: multitask.MultiTaskNet, optimizer_config, *,
                   alternating_discriminator: bool = False) -> optax.GradientTransformation:
  """Optax optimiser: one transform for the networks, its own group for the discriminator.

  Args:
    model: the stacked network (its `param_labels` assign the groups).
    optimizer_config: `config.optimizer`.
    alternating_discriminator: for ADA with alternating updates: the discriminator's transform
      runs on even steps only; on odd steps (the extractors' turn) its parameters and its
      optimiser state (momentum, Adam moments) stay exactly as they are
      (`optax.transforms.conditionally_mask`).

  Returns:
    The transformation; its state depends on `alternating_discriminator`.
  """
  def base(lr):
    if optimizer_config.name == "sgd":
      tx = optax.sgd(lr, momentum=optimizer_config.momentum)
    elif optimizer_config.name == "adam":
      tx = optax.adam(lr)
    else:
      raise ValueError(f"optimizer.name: expected 'sgd' or 'adam', got {optimizer_config.name!r}")
    if optimizer_config.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(optimizer_config.weight_decay), tx)
    return tx

  network = base(optimizer_config.learning_rate)
  discriminator = base(optimizer_config.discriminator_learning_rate)
  if alternating_discriminator:
    # The update counter starts at 0 with the train step, so even counts are even steps.
    discriminator = optax.transforms.conditionally_mask(
        discriminator, lambda count: count % 2 == 0)
  transforms = {"trunk": network, "head": network, "cross_stitch": network,
                "discriminator": discriminator}
  return optax.multi_transform(transforms, model.param_labels)


def optimizer_from_config(model: multitask.MultiTaskNet, config) -> optax.GradientTransformation:
  """`make_optimizer` for a whole run config (its optimiser and its ADA mode)."""
  return make_optimizer(model, config.optimizer, alternating_discriminator=bool(
      config.ada.enabled and config.ada.mode == "alternating"))


def init_state(model, tx, rng, image_shape) -> dict:
  """The train state {'step', 'params', 'batch_stats', 'opt_state'} (a plain pytree)."""
  dummy = jnp.zeros((model.num_tasks, 1) + tuple(image_shape), jnp.float32)
  variables = model.init(rng, dummy)
  return {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
          "batch_stats": variables["batch_stats"], "opt_state": tx.init(variables["params"])}


# --------------------------------------------------------------------------- the train step


def landmark_loss(predictions: Array, targets: Array, kind: str) -> Array:
  """Per-face L1 (sum |d|) or L2 (sum d^2) over the 136 coordinates, mean over faces."""
  diff = predictions - targets
  if kind == "l1":
    return jnp.mean(jnp.sum(jnp.abs(diff), axis=-1))
  if kind == "l2":
    return jnp.mean(jnp.sum(jnp.square(diff), axis=-1))
  raise ValueError(f"landmark_loss: expected 'l1' or 'l2', got {kind!r}")


def make_train_step(model: multitask.MultiTaskNet, tx: optax.GradientTransformation, *,
                    num_steps: int, regulariser: str = "none", strength: float = 0.0,
                    gammas=None, svd_method: str = "exact", ada: bool = False,
                    ada_mode: str = "grl", ada_weight: float = 1.0,
                    landmark_loss_kind: str = "l1", nme_normalisation: str = "inter_pupil"):
  """Builds `train_step(state, batch, rng) -> (state, metrics)` (to be jitted by the caller).

  Args:
    model: the stacked network.
    tx: its optimiser (from `make_optimizer`).
    num_steps: total steps (the GRL schedule's progress is step / num_steps).
    regulariser: 'none', 'laf', 'tucker' or 'tt'.
    strength: weight of the trace-norm penalty.
    gammas: optional per-unfolding weights of the trace norm.
    svd_method: 'exact', 'gram', 'randomized' or 'newton_schulz' (see
      `trace_norm.nuclear_norm`).
    ada: add adversarial domain alignment between the two tasks' features.
    ada_mode: 'grl' (one gradient-reversal update) or 'alternating' (even steps update the
      discriminator on fixed features, odd steps the extractors against a fixed discriminator;
      build `tx` with `alternating_discriminator=True` so that the discriminator's momentum
      does not move it on odd steps).
    ada_weight: scale of the schedule lambda_p.
    landmark_loss_kind: 'l1' or 'l2'.
    nme_normalisation: 'inter_pupil' or 'inter_ocular' for the logged training NME.

  Returns:
    The step function. `rng` is the run's root key; the step folds in its step number.
  """
  if regulariser not in ("none", "laf", "tucker", "tt"):
    raise ValueError(f"regulariser: expected none/laf/tucker/tt, got {regulariser!r}")
  if ada_mode not in ("grl", "alternating"):
    raise ValueError(f"ada.mode: expected 'grl' or 'alternating', got {ada_mode!r}")
  tasks = model.tasks
  if ada and len(tasks) != 2:
    raise ValueError("ADA needs exactly two tasks")

  def loss_fn(params, batch_stats, batch, step, rng):
    images = evaluate_lib.preprocess(batch["images"])
    features, outputs, new_stats = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True)
    terms = {}
    loss = jnp.zeros((), jnp.float32)
    for t, task in enumerate(tasks):
      if task == "expression":
        logits = outputs[t].astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        terms["expression_ce"] = ce
        terms["expression_accuracy"] = metrics_lib.accuracy(logits, batch["labels"])
        loss += ce
      else:
        pred = outputs[t].astype(jnp.float32)
        lm = landmark_loss(pred, batch["landmarks"], landmark_loss_kind)
        terms["landmark_loss"] = lm
        terms["landmark_nme"] = metrics_lib.landmark_nme(
            jax.lax.stop_gradient(pred), batch["landmarks"], normalisation=nme_normalisation)
        loss += lm
    if regulariser != "none":
      penalty = trace_norm.trace_norm_penalty(
          model.shareable_kernels(params), kind=regulariser, strength=strength, gammas=gammas,
          method=svd_method, key=jax.random.fold_in(rng, 1))
      terms["trace_norm_penalty"] = penalty
      loss += penalty
    if ada:
      progress = step.astype(jnp.float32) / max(num_steps, 1)
      lam = ada_weight * adversarial.grl_lambda(progress)
      disc = params["discriminator"]
      fa, fb = features[0], features[1]
      if ada_mode == "grl":
        ada_loss = adversarial.domain_adversarial_loss(disc, fa, fb, lam)
        terms["domain_ce"] = ada_loss
        loss += ada_loss
      else:
        disc_turn = (step % 2 == 0).astype(jnp.float32)
        domain_ce = adversarial.discriminator_loss(
            disc, jax.lax.stop_gradient(fa), jax.lax.stop_gradient(fb))
        confusion = adversarial.feature_confusion_loss(disc, fa, fb)
        terms["domain_ce"] = domain_ce
        loss += disc_turn * domain_ce + (1.0 - disc_turn) * lam * confusion
      terms["grl_lambda"] = lam
    terms["loss"] = loss
    return loss, (terms, new_stats)

  def train_step(state, batch, rng):
    step = state["step"]
    step_rng = jax.random.fold_in(rng, step)
    grads, (terms, new_stats) = jax.grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"], batch, step, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    terms["grad_norm"] = optax.tree.norm(grads)
    new_state = {"step": step + 1, "params": params, "batch_stats": new_stats,
                 "opt_state": opt_state}
    return new_state, terms

  return train_step


# --------------------------------------------------------------------------- sharding


def data_mesh(devices=None) -> Mesh:
  """A one-axis ('data') mesh over `devices` (default: every local device)."""
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def batch_shardings(mesh: Mesh, batch: dict) -> dict:
  """Images (T, B, ...) sharded on B, per-sample targets on their first axis."""
  return {k: NamedSharding(mesh, P(None, "data") if k == "images" else P("data"))
          for k in batch}


def shard_batch(mesh: Mesh, batch: dict) -> dict:
  n = mesh.devices.size
  for key, value in batch.items():
    size = value.shape[1] if key == "images" else value.shape[0]
    if size % n:
      raise ValueError(f"batch size {size} is not divisible by the {n} devices of the data mesh")
  return jax.device_put(batch, batch_shardings(mesh, batch))


# --------------------------------------------------------------------------- logging


class MetricWriter:
  """Appends JSON lines to workdir/metrics.jsonl (and TensorBoard events when available)."""

  def __init__(self, workdir: pathlib.Path, *, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():
      # Drop records past the checkpoint we resume from: those steps are recomputed.
      kept = []
      for line in self.path.read_text().splitlines():
        try:
          if json.loads(line).get("step", 0) <= resume_step:
            kept.append(line)
        except json.JSONDecodeError:
          continue
      _atomic_write(self.path, "".join(k + "\n" for k in kept))
    self._tb = _tensorboard_writer(workdir / "tensorboard")

  def write(self, step: int, scalars: dict, prefix: str = ""):
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


def _atomic_write(path: pathlib.Path, text: str):
  atomic.write_text(path, text)


def write_json(path, obj):
  """Writes `obj` as indented JSON, atomically."""
  _atomic_write(pathlib.Path(path), json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_finite(step: int, scalars: dict):
  """Raises FloatingPointError naming the first non-finite metric."""
  for key, value in scalars.items():
    if not np.all(np.isfinite(np.asarray(value))):
      raise FloatingPointError(
          f"step {step}: {key} is {value} (non-finite); lower optimizer.learning_rate or the "
          "regulariser strength, or check the data")


# --------------------------------------------------------------------------- main entry

# Config fields that change no result of a run (logging, evaluation and checkpoint cadence).
NON_RESULT_FIELDS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "plots",
                     "eval_batch_size")


def config_differences(saved: dict, config, ignore=NON_RESULT_FIELDS) -> list[str]:
  """Dotted names of the fields where a saved `config.json` differs from `config`.

  Args:
    saved: the saved config, as read from JSON.
    config: the ConfigDict of this run.
    ignore: top-level fields left out (by default those that change no result).

  Returns:
    Sorted field names, e.g. ['optimizer.learning_rate', 'regulariser.kind'].
  """
  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      if isinstance(v, dict):
        out.update(flat(v, f"{prefix}{k}."))
      else:
        out[prefix + k] = v
    return out
  now = flat(json.loads(config.to_json_best_effort()))
  before = flat(saved)
  return sorted(k for k in set(now) | set(before)
                if k.split(".")[0] not in ignore and now.get(k) != before.get(k))


def make_trace_norms_fn(model, kind: str, gammas=None):
  """Jitted `params -> {layer: trace norm}` of the stacked shareable kernels, or None.

  The norm is `kind`'s (LAF when the run has no regulariser); None when there is nothing to
  couple (T = 1 or no per-task convolutions).
  """
  if model.num_tasks < 2:
    return None
  if kind == "none":
    kind, gammas = "laf", None
  return jax.jit(lambda params: trace_norm.trace_norm_per_layer(
      model.shareable_kernels(params), kind, gammas))


def trace_norms(model, norms_fn, params) -> dict:
  """Per-layer norms from `make_trace_norms_fn` as floats, in forward layer order."""
  if norms_fn is None:
    return {}
  per_layer = jax.device_get(norms_fn(params))
  order = [n for n in resnet.conv_layer_names(model.trunk.stage_sizes) if n in per_layer]
  return {k: float(per_layer[k]) for k in order}  # forward order, for the Fig. 3 plots


_COMPUTATION_FIELDS = ("tasks", "image_size", "model", "regulariser", "ada", "optimizer",
                       "landmark_loss", "nme_normalisation", "num_steps", "prng_impl")


@functools.lru_cache(maxsize=8)
def _compiled(key: str, devices: tuple):
  """Model, optimiser and jitted functions of a config, cached so repeated runs in one process
  (notebooks, resume, the Table-4 script re-reading rows) do not recompile."""
  config = ml_collections.ConfigDict(json.loads(key))
  model = build_model(config)
  tx = optimizer_from_config(model, config)
  mesh = data_mesh(list(devices))
  replicated = NamedSharding(mesh, P())
  image_shape = (config.image_size, config.image_size, 3)
  init_fn = jax.jit(functools.partial(init_state, model, tx, image_shape=image_shape),
                    out_shardings=replicated)
  train_step = make_train_step(
      model, tx, num_steps=config.num_steps, regulariser=config.regulariser.kind,
      strength=config.regulariser.strength,
      gammas=None if config.regulariser.gammas is None else tuple(config.regulariser.gammas),
      svd_method=config.regulariser.method, ada=config.ada.enabled, ada_mode=config.ada.mode,
      ada_weight=config.ada.weight, landmark_loss_kind=config.landmark_loss,
      nme_normalisation=config.nme_normalisation)
  keys = ["images"] + [("labels" if t == "expression" else "landmarks") for t in model.tasks]
  batch_sharding = {k: NamedSharding(mesh, P(None, "data") if k == "images" else P("data"))
                    for k in keys}
  step_fn = jax.jit(train_step, donate_argnums=(0,),
                    in_shardings=(replicated, batch_sharding, replicated),
                    out_shardings=(replicated, replicated))
  eval_fn = jax.jit(evaluate_lib.make_eval_step(model))
  norms_fn = make_trace_norms_fn(
      model, config.regulariser.kind,
      None if config.regulariser.gammas is None else tuple(config.regulariser.gammas))
  return model, tx, mesh, init_fn, step_fn, eval_fn, norms_fn


def compiled_functions(config):
  """(model, tx, mesh, init_fn, train_step, eval_step, norms_fn) for `config` (local devices)."""
  key = json.dumps({k: config[k].to_dict() if isinstance(config[k], ml_collections.ConfigDict)
                    else config[k] for k in _COMPUTATION_FIELDS}, sort_keys=True, default=list)
  return _compiled(key, tuple(jax.local_devices()))


def root_key(config) -> Array:
  """The run's root PRNG key (`config.seed`, `config.prng_impl`); init and steps derive from it."""
  return jax.random.key(config.seed, impl=config.get("prng_impl", "threefry2x32"))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       stop_at_step: int | None = None, datasets: tuple | None = None) -> dict:
  """Trains (resuming from `workdir`), evaluates and writes plots and `summary.json`.

  Args:
    config: a config from `configs/mtl.py`.
    workdir: output folder (checkpoints, metrics.jsonl, plots, summary.json).
    stop_at_step: stop (after checkpointing) once this step is reached, e.g. to train in
      chunks from a notebook; a later call resumes. The final evaluation and plots run only when
      `config.num_steps` is reached.
    datasets: optional (train, test) dicts task -> `pipeline.TaskData` replacing `config.data`
      (e.g. data prepared in a notebook).

  Returns:
    The summary dict (also written to workdir/summary.json when training finished).
  """
  workdir = pathlib.Path(workdir)
  # Nothing in `workdir` is written until the config has been checked, the data loaded and the
  # checkpoint (if any) restored or refused: a failed or refused start leaves a finished run's
  # files as they were.
  if datasets is None:
    for task in config.tasks:
      check_data_config(task, config.data[task])
  model, _, mesh, init_fn, p_train_step, eval_step, norms_fn = compiled_functions(config)
  replicated = NamedSharding(mesh, P())
  init_rng, step_rng = jax.random.split(root_key(config))
  kind = config.regulariser.kind
  train_data, test_data = load_datasets(config) if datasets is None else datasets
  data_source = (describe_data(config) if datasets is None else
                 {t: "given in memory (the datasets argument)" for t in model.tasks})

  state = init_fn(init_rng)
  architecture = {"backbone": config.model.backbone, "sharing": config.model.sharing,
                  "hard_share_convs": int(model.hard_share_convs),
                  "tasks": list(model.tasks), "ada": bool(config.ada.enabled)}
  ckpt = checkpoint_lib.Checkpointer(workdir, save_every=config.checkpoint_every,
                                     keep=config.keep_checkpoints,
                                     metadata={"architecture": architecture})
  try:
    state = jax.device_put(
        ckpt.restore_latest(state, set_aside=workdir / "damaged_checkpoints"), replicated)
  except Exception:
    ckpt.close()
    raise
  start = int(jax.device_get(state["step"]))
  if start:
    logging.info("resumed from %s at step %d", ckpt.directory, start)
  config_path = workdir / "config.json"
  if config_path.is_file():
    changed = config_differences(json.loads(config_path.read_text()), config)
    if changed:
      logging.warning("%s: this run's config differs from the saved one in %s; a resumed run "
                      "continues under the new values", workdir, ", ".join(changed))
  write_json(config_path, json.loads(config.to_json_best_effort()))

  aug = augment.LandmarkAugment(
      flip_probability=config.augment.landmark_flip,
      max_rotation_deg=config.augment.max_rotation_deg,
      scale_range=tuple(config.augment.scale_range), max_shift=config.augment.max_shift,
      noise_std=config.augment.noise_std)
  batch_fn = functools.partial(
      pipeline.train_batch, datasets=train_data, tasks=model.tasks,
      batch_size=config.batch_size, seed=config.seed, augmentation=config.augment.enabled,
      landmark_augment=aug, expression_flip=config.augment.expression_flip)
  step_rng = jax.device_put(step_rng, replicated)

  writer = MetricWriter(workdir, resume_step=start)
  end = config.num_steps if stop_at_step is None else min(stop_at_step, config.num_steps)
  eval_kwargs = dict(batch_size=config.eval_batch_size, mesh=mesh,
                     nme_normalisation=config.nme_normalisation)
  last_eval = {}
  t0 = time.time()
  step = start
  try:
    for step in range(start + 1, end + 1):
      # The batch of step s is a pure function of s (see pipeline), so a resumed run sees the
      # same data as an uninterrupted one.
      batch = shard_batch(mesh, batch_fn(step - 1))
      state, step_metrics = p_train_step(state, batch, step_rng)
      if step % config.log_every == 0 or step == end:
        scalars = jax.device_get(step_metrics)
        check_finite(step, scalars)
        scalars["steps_per_second"] = (step - start) / max(time.time() - t0, 1e-9)
        writer.write(step, scalars, prefix="train/")
      if step % config.eval_every == 0 or step == config.num_steps:
        last_eval, _ = evaluate_lib.evaluate(eval_step, state, test_data, model.tasks,
                                             **eval_kwargs)
        check_finite(step, last_eval)
        writer.write(step, last_eval, prefix="eval/")
      if step % config.checkpoint_every == 0 or step == end:
        ckpt.save(step, state, force=True)
    ckpt.wait()
  finally:
    ckpt.close()
    writer.close()

  summary = {"step": int(step), "finished": step >= config.num_steps, "eval": last_eval,
             "workdir": str(workdir), "data": data_source,
             # No checkpoint is selected: the metrics are those of the last state trained.
             "evaluated": (f"the final state (step {config.num_steps}), on the test sets"
                           if step >= config.num_steps else
                           f"the latest periodic evaluation (every {config.eval_every} steps), "
                           "on the test sets" if last_eval else "not evaluated yet")}
  if step < config.num_steps:
    return summary

  final_eval, features = evaluate_lib.evaluate(eval_step, state, test_data, model.tasks,
                                               max_features=config.embedding.max_points,
                                               **eval_kwargs)
  summary["eval"] = final_eval
  # The initialisation is a deterministic function of the seed, so the initial norms of a
  # resumed run are recomputed rather than stored.
  initial_norms = trace_norms(model, norms_fn, init_fn(init_rng)["params"])
  if initial_norms:
    final_norms = trace_norms(model, norms_fn, state["params"])
    summary["trace_norm_kind"] = kind if kind != "none" else "laf"
    summary["trace_norm_initial"] = initial_norms
    summary["trace_norm_final"] = final_norms
    summary["decrease_rates"] = metrics_lib.decrease_rates(initial_norms, final_norms)
  two_datasets = len(model.tasks) == 2 and all(len(f) for f in features.values())
  if two_datasets:
    with atomic.atomic_path(workdir / "features.npz") as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, **features)
    summary["domain_separability"] = evaluate_lib.domain_separability(
        features[model.tasks[0]], features[model.tasks[1]])
  if config.plots:
    if "decrease_rates" in summary:
      evaluate_lib.plot_decrease_rates(
          {summary["trace_norm_kind"].upper(): summary["decrease_rates"]},
          workdir / "decrease_rates.png")
    if two_datasets:
      title = "with ADA" if config.ada.enabled else "without ADA"
      evaluate_lib.plot_embeddings(
          {title: (features[model.tasks[0]], features[model.tasks[1]])},
          workdir / "embedding.png", method=config.embedding.method,
          labels=tuple(f"{t} dataset" for t in model.tasks), seed=config.seed)
  write_json(workdir / "summary.json", summary)
  return summary
