"""Training of the multi-task networks: `train_and_evaluate(config, workdir)`.

`train_and_evaluate` (callable from a notebook; `experiments/mtl.py` only parses flags) reads the
config once into `settings.TrainSettings`, then builds the stacked model and its jitted functions
(`functions`, cached on the settings), loads the two datasets (`datasets`), resumes from the
newest intact checkpoint in `workdir/checkpoints` (`checkpoint`), trains (`loop`: uint8 host
batches prefetched to the devices, augmented inside the step of `step`; the optimiser of
`optim`, the shardings of `sharding`, the writer of `metric_writer`), evaluates periodically
and, at the end, writes the decrease-rate and embedding plots and `summary.json`.

Mixed precision: `config.model.dtype='bfloat16'` runs the activations in bfloat16; parameters,
optimiser state, losses and trace-norm factorisations stay float32, so checkpoints are the same
either way. The dtype is part of the run's fingerprint (`config.json`) and its summary.

Data parallelism: a `jax.sharding.Mesh` over every device with one 'data' axis; the batch
is sharded along its batch axis, the train state replicated, and `jax.jit` inserts the
all-reduces (BatchNorm statistics are computed over the global batch).

Several hosts (`experiments.mtl --coordinator_address ... --num_processes N --process_id I`):
the mesh spans every process's devices; each process loads and feeds its share of every global
batch (`sharding`), all of them save and restore the checkpoints together (`checkpoint`), each
evaluates the whole test sets on its own copy of the state, and process 0 alone writes the
metrics, `config.json`, plots, features and `summary.json`.

The helpers that used to live here are re-exported under their old names for callers that
still pass a raw config (`build_model(config)`, `compiled_functions(config)`, ...).
"""
from __future__ import annotations

import logging
import pathlib

import jax
import ml_collections
import numpy as np

from mtl_flax import checkpoint as checkpoint_lib
from mtl_flax import datasets as datasets_lib
from mtl_flax import evaluate as evaluate_lib
from mtl_flax import functions
from mtl_flax import loop
from mtl_flax import metric_writer
from mtl_flax import metrics as metrics_lib
from mtl_flax import optim
from mtl_flax import runs
from mtl_flax import settings as settings_lib
from mtl_flax import sharding
from mtl_flax import step as step_lib
from mtl_flax.models import multitask  # noqa: F401  (re-exported: train.multitask)
from subtle_core import atomic
from subtle_core import distributed

# Re-exported under their former names.
NON_RESULT_FIELDS = runs.NON_RESULT_FIELDS
config_differences = runs.config_differences
resolve_hard_share_convs = settings_lib.resolve_hard_share_convs
check_data_config = datasets_lib.check_data_config
load_task_data = datasets_lib.load_task_data
make_optimizer = optim.make_optimizer
init_state = step_lib.init_state
make_train_step = step_lib.make_train_step
landmark_loss = step_lib.landmark_loss
data_mesh = sharding.data_mesh
shard_batch = sharding.shard_batch
MetricWriter = metric_writer.MetricWriter
write_json = metric_writer.write_json
check_finite = metric_writer.check_finite
make_trace_norms_fn = functions.make_trace_norms_fn
trace_norms = functions.trace_norms


def build_model(config: ml_collections.ConfigDict) -> multitask.MultiTaskNet:
  """The `MultiTaskNet` described by `config.model`, `config.tasks` and `config.ada`."""
  return functions.build_model(settings_lib.compute_settings(config))


def optimizer_from_config(model, config):
  """`optim.make_optimizer` for a whole run config (its optimiser and its ADA mode)."""
  return optim.optimizer_for(model, settings_lib.compute_settings(config))


def compiled_functions(config) -> functions.Compiled:
  """(model, tx, mesh, init_fn, train_step, eval_step, norms_fn) for `config` (local devices)."""
  return functions.compiled(settings_lib.compute_settings(config))


def root_key(config) -> jax.Array:
  """The run's root PRNG key (`config.seed`, `config.prng_impl`); init and steps derive from it."""
  return jax.random.key(config.seed, impl=config.get("prng_impl", "threefry2x32"))


def describe_data(config) -> dict:
  """task -> where its data came from (see `datasets.describe_data`)."""
  return datasets_lib.describe_data(tuple(config.tasks), lambda t: config.data[t], config.seed)


def load_datasets(config) -> tuple[dict, dict]:
  """Train and test `TaskData` for every task of `config.tasks`."""
  return datasets_lib.load_datasets(tuple(config.tasks), lambda t: config.data[t],
                                    image_size=config.image_size,
                                    num_classes=config.model.num_classes, seed=config.seed)


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
  # The config is read once; nothing in `workdir` is written until it has been checked, the
  # data loaded and the checkpoint (if any) restored or refused: a failed or refused start
  # leaves a finished run's files as they were.
  settings = settings_lib.train_settings(config)
  compute = settings.compute
  if datasets is None:
    for task in settings.tasks:
      datasets_lib.check_data_config(task, settings.data_for(task))
  compiled = functions.compiled(compute)
  model, mesh = compiled.model, compiled.mesh
  init_rng, step_rng = jax.random.split(functions.root_key(compute, settings.seed))
  if datasets is None:
    train_data, test_data = datasets_lib.load_datasets(
        settings.tasks, settings.data_for, image_size=compute.image_size,
        num_classes=compute.model.num_classes, seed=settings.seed)
    data_source = datasets_lib.describe_data(settings.tasks, settings.data_for, settings.seed)
  else:
    train_data, test_data = datasets
    data_source = {t: "given in memory (the datasets argument)" for t in model.tasks}

  state = compiled.init_fn(init_rng)
  ckpt = checkpoint_lib.Checkpointer(workdir, save_every=settings.checkpoint_every,
                                     keep=settings.keep_checkpoints,
                                     metadata={"architecture": compute.model.architecture()})
  try:
    state = sharding.replicate(
        ckpt.restore_latest(state, set_aside=workdir / "damaged_checkpoints"), mesh)
  except Exception:
    ckpt.close()
    raise
  start = int(jax.device_get(state["step"]))
  if start:
    logging.info("resumed from %s at step %d", ckpt.directory, start)
  runs.check_run(workdir, config, on_mismatch="warn")
  runs.save_run(workdir, config)

  writer = metric_writer.MetricWriter(workdir, resume_step=start)
  num_steps = compute.num_steps
  end = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  try:
    result = loop.run(settings, compiled, state, start=start, end=end,
                      step_rng=sharding.replicate(step_rng, mesh), train_data=train_data,
                      test_data=test_data, writer=writer, checkpointer=ckpt)
  finally:
    ckpt.close()
    writer.close()
  state, step, last_eval = result.state, result.step, result.last_eval

  summary = {"step": int(step), "finished": step >= num_steps, "eval": last_eval,
             "workdir": str(workdir), "data": data_source,
             # Activations in this dtype; parameters, optimiser state and losses in float32.
             "dtype": compute.model.dtype,
             "augmentation": ("on the device, in the train step" if compute.augment.enabled
                              else "none"),
             # No checkpoint is selected: the metrics are those of the last state trained.
             "evaluated": (f"the final state (step {num_steps}), on the test sets"
                           if step >= num_steps else
                           f"the latest periodic evaluation (every {settings.eval_every} steps), "
                           "on the test sets" if last_eval else "not evaluated yet")}
  if step < num_steps:
    return summary
  summary.update(_final_outputs(settings, compiled, state, test_data, init_rng, workdir))
  metric_writer.write_json(workdir / "summary.json", summary)
  return summary


def _final_outputs(settings, compiled, state, test_data, init_rng, workdir) -> dict:
  """The final evaluation, trace norms, features and plots of a finished run."""
  model = compiled.model
  kind = settings.compute.regulariser.kind
  main = distributed.is_main_process()
  final_eval, features = evaluate_lib.evaluate(
      compiled.eval_step, sharding.host_local_copy(state, compiled.mesh), test_data, model.tasks,
      batch_size=settings.eval_batch_size, mesh=sharding.local_mesh(compiled.mesh),
      nme_normalisation=settings.compute.losses.nme_normalisation,
      max_features=settings.embedding_max_points)
  out = {"eval": final_eval}
  # The initialisation is a deterministic function of the seed, so the initial norms of a
  # resumed run are recomputed rather than stored.
  initial_norms = functions.trace_norms(model, compiled.norms_fn,
                                        compiled.init_fn(init_rng)["params"])
  if initial_norms:
    final_norms = functions.trace_norms(model, compiled.norms_fn, state["params"])
    out["trace_norm_kind"] = kind if kind != "none" else "laf"
    out["trace_norm_initial"] = initial_norms
    out["trace_norm_final"] = final_norms
    out["decrease_rates"] = metrics_lib.decrease_rates(initial_norms, final_norms)
  two_datasets = len(model.tasks) == 2 and all(len(f) for f in features.values())
  if two_datasets and main:
    with atomic.atomic_path(workdir / "features.npz") as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, **features)
  if two_datasets:
    out["domain_separability"] = evaluate_lib.domain_separability(
        features[model.tasks[0]], features[model.tasks[1]])
  if settings.plots and main:
    if "decrease_rates" in out:
      evaluate_lib.plot_decrease_rates({out["trace_norm_kind"].upper(): out["decrease_rates"]},
                                       workdir / "decrease_rates.png")
    if two_datasets:
      title = "with ADA" if settings.compute.ada.enabled else "without ADA"
      evaluate_lib.plot_embeddings(
          {title: (features[model.tasks[0]], features[model.tasks[1]])},
          workdir / "embedding.png", method=settings.embedding_method,
          labels=tuple(f"{t} dataset" for t in model.tasks), seed=settings.seed)
  return out
