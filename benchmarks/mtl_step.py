"""Throughput of a T = 2 multi-task train step: stacked vs separate networks, trace-norm cost.

Measures images per second of one jitted train step (forward, backward, SGD-momentum update) over
both tasks with B images per task, for

* the two task networks with parameters stacked along a task axis (``MultiTaskNet``), the trunk
  mapped over the task axis by unrolling (the default, ``task_map='unroll'``) or by ``jax.vmap``;
* two separate, un-stacked networks called one after the other in the same jitted step;
* the stacked step plus each tensor trace-norm penalty (LAF exact; Tucker and TT, exact and
  randomized SVD), reported as the extra time over the plain stacked step.

Issue targets: stacking <= 5 % slower than separate networks; LAF adds <= 5 %; Tucker and TT add
<= 25 % with the randomized SVD.

Usage (CPU, tiny network; a quick check that everything runs)::

  python -m benchmarks.mtl_step --backbone tiny --batch 8 --image_size 32 --steps 3

On a GPU, the paper's setting::

  python -m benchmarks.mtl_step --backbone resnet34 --batch 256 --image_size 96
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_flax import trace_norm
from mtl_flax.models import multitask


def _task_losses(outputs, labels, landmarks):
  ce = optax.softmax_cross_entropy_with_integer_labels(outputs[0], labels).mean()
  l1 = jnp.abs(outputs[1] - landmarks).mean()
  return ce + l1


def make_stacked_step(model, tx, penalty=None):
  """Jitted step of the stacked network; ``penalty(kernels, key)`` adds a trace norm."""

  def step(params, batch_stats, opt_state, batch, key):
    images, labels, landmarks = batch

    def loss_fn(p):
      variables = {"params": p, "batch_stats": batch_stats}
      _, outputs, new_stats = model.apply(variables, images, train=True)
      loss = _task_losses(outputs, labels, landmarks)
      if penalty is not None:
        loss = loss + penalty(model.shareable_kernels(p), key)
      return loss, new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


def make_separate_step(model, tx):
  """Jitted step of T un-stacked networks, each called on its own batch in one program."""

  def step(params, batch_stats, opt_state, batch, key):
    del key
    images, labels, landmarks = batch

    def loss_fn(p):
      outputs, stats = [], []
      for t, task in enumerate(model.tasks):
        features, upd = model.trunk.apply({"params": p["trunk"][t], "batch_stats": batch_stats[t]},
                                          images[t], train=True, mutable=["batch_stats"])
        outputs.append(model.apply_head(p["heads"][task], task, features))
        stats.append(upd["batch_stats"])
      return _task_losses(outputs, labels, landmarks), stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


def _time_step(step, params, batch_stats, opt_state, batch, steps, warmup):
  key = jax.random.key(0)
  for i in range(warmup):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, batch,
                                                jax.random.fold_in(key, i))
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for i in range(steps):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, batch,
                                                jax.random.fold_in(key, warmup + i))
  jax.block_until_ready(loss)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"non-finite loss {float(loss)} in the benchmark step")
  return (time.perf_counter() - start) / steps


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--backbone", default=None, choices=multitask.BACKBONES,
                      help="default: resnet34 on a GPU, tiny on CPU")
  parser.add_argument("--batch", type=int, default=None, help="images per task (GPU 256, CPU 8)")
  parser.add_argument("--image_size", type=int, default=None, help="default 96 (GPU), 32 (CPU)")
  parser.add_argument("--steps", type=int, default=None, help="timed steps (GPU 20, CPU 3)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--rank", type=int, default=trace_norm.DEFAULT_RANK,
                      help="rank of the randomized SVD")
  parser.add_argument("--strength", type=float, default=1e-3)
  args = parser.parse_args(argv)
  on_gpu = jax.default_backend() == "gpu"
  backbone = args.backbone or ("resnet34" if on_gpu else "tiny")
  batch_size = args.batch or (256 if on_gpu else 8)
  size = args.image_size or (96 if on_gpu else 32)
  steps = args.steps or (20 if on_gpu else 3)

  model = multitask.build_multitask(backbone=backbone, sharing="trace_norm")
  rng = np.random.default_rng(0)
  shape = (model.num_tasks, batch_size, size, size, 3)
  batch = (jnp.asarray(rng.normal(size=shape), jnp.float32),
           jnp.asarray(rng.integers(0, model.num_classes, batch_size), jnp.int32),
           jnp.asarray(rng.uniform(size=(batch_size, 2 * model.num_landmarks)), jnp.float32))
  variables = jax.jit(model.init)(jax.random.key(0), batch[0])
  tx = optax.sgd(0.01, momentum=0.9)
  images_per_step = model.num_tasks * batch_size
  print(f"device={jax.devices()[0].device_kind} backbone={backbone} T={model.num_tasks} "
        f"B={batch_size}/task image={size}x{size} steps={steps}")

  def fresh(tree):  # donated buffers are consumed: copy per run
    return jax.tree.map(jnp.copy, tree)

  def run_stacked(penalty=None, net=model):
    params = fresh(variables["params"])
    return _time_step(make_stacked_step(net, tx, penalty), params,
                      fresh(variables["batch_stats"]), tx.init(params), batch, steps, args.warmup)

  separate_params = {"trunk": [model.task_variables(variables, t)["params"]
                               for t in range(model.num_tasks)],
                     "heads": variables["params"]["heads"]}
  separate_stats = [model.task_variables(variables, t)["batch_stats"]
                    for t in range(model.num_tasks)]
  times = {}
  times["separate"] = _time_step(make_separate_step(model, tx), fresh(separate_params),
                                 fresh(separate_stats), tx.init(separate_params), batch, steps,
                                 args.warmup)
  times["stacked"] = run_stacked()
  times["stacked/vmap"] = run_stacked(net=multitask.build_multitask(
      backbone=backbone, sharing="trace_norm", task_map="vmap"))
  strength = jnp.float32(args.strength)
  for kind, method in (("laf", "exact"), ("tucker", "exact"), ("tucker", "randomized"),
                       ("tt", "exact"), ("tt", "randomized")):
    def penalty(kernels, key, kind=kind, method=method):
      return trace_norm.trace_norm_penalty(kernels, kind=kind, strength=strength, method=method,
                                           key=key, rank=args.rank)
    times[f"{kind}/{method}"] = run_stacked(penalty)

  base = times["stacked"]
  print(f"{'variant':<20}{'ms/step':>10}{'images/s':>12}{'vs stacked':>12}")
  for name, seconds in times.items():
    print(f"{name:<20}{1e3 * seconds:>10.2f}{images_per_step / seconds:>12.1f}"
          f"{100 * (seconds / base - 1):>+11.1f}%")
  print(f"stacking overhead vs separate: unrolled {100 * (base / times['separate'] - 1):+.1f}%, "
        f"vmap {100 * (times['stacked/vmap'] / times['separate'] - 1):+.1f}% (target <= +5%)")
  print(f"LAF exact cost: {100 * (times['laf/exact'] / base - 1):+.1f}% (target <= +5%); "
        f"Tucker randomized: {100 * (times['tucker/randomized'] / base - 1):+.1f}%, "
        f"TT randomized: {100 * (times['tt/randomized'] / base - 1):+.1f}% (targets <= +25%)")


if __name__ == "__main__":
  main()
