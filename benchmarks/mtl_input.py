"""The MTL input pipeline: host batches, device augmentation, cached start-up, in one run.

Three comparisons (``--sections``, default all three):

* ``host``: images/s of today's ``pipeline.train_batch`` with augmentation (NumPy / OpenCV, one
  image at a time) against the new host path, ``device_pipeline.HostBatches`` (index gathering
  of uint8 crops only; the augmentation moves to the device), from an in-memory array and from a
  memory-mapped cache. Issue target: the new path >= 20 x today's.
* ``device``: one jitted multi-task train step on uint8 batches with and without
  ``device_augment.augment_batch`` inside it, and the augmentation jitted on its own; the share
  is (with - without) / without. Issue target: <= 5 % of a ResNet-34 step at batch 256 per task
  (the default on an accelerator; a CPU runs ``--backbone tiny --batch 32`` by default).
* ``cache``: start-up of a generated ``--num_images`` image folder (synthetic drawn faces,
  JPEG) as training starts it (``datasets.load_task_data``, source 'image_folder': file
  listing, split, decoding through the dataset cache): the first start (parallel decode + crop)
  against a second, cached start; one image at a time (the readers before the cache) is
  measured on a sample and extrapolated; ``--compare_executors`` also times
  ``cache.cached_dataset`` with a process pool. Issue target: the cached start < 5 % of the
  first.

Usage::

  python -m benchmarks.mtl_input                                   # CPU defaults
  python -m benchmarks.mtl_input --sections cache --num_images 20000
  python -m benchmarks.mtl_input --sections device --backbone resnet34 --batch 256   # GPU
"""
import argparse
import json
import os
import pathlib
import tempfile
import time

import cv2
import numpy as np

SECTIONS = ("host", "device", "cache")


def _datasets(num, size, seed=0):
  from mtl_flax.data import pipeline  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  base = cv2.resize(rng.integers(0, 256, (size // 4, size // 4, 3)).astype(np.uint8),
                    (size, size))
  images = np.stack([np.roll(base, i % size, axis=1) for i in range(num)])
  expression = pipeline.TaskData(images, rng.integers(0, 7, num).astype(np.int32))
  landmarks = pipeline.TaskData(images[::-1].copy(),
                                rng.uniform(0.2, 0.8, (num, 68, 2)).astype(np.float32))
  return {"expression": expression, "landmarks": landmarks}


def _rate(fn, steps, images_per_step, rounds=3):
  """Images/s of the fastest of ``rounds`` rounds of ``steps`` calls ``fn(step)``."""
  best = float("inf")
  for r in range(rounds):
    start = time.perf_counter()
    for s in range(steps):
      fn(r * steps + s)
    best = min(best, time.perf_counter() - start)
  return images_per_step * steps / best


def host_section(args, record):
  from mtl_flax.data import device_pipeline  # pylint: disable=import-outside-toplevel
  from mtl_flax.data import pipeline  # pylint: disable=import-outside-toplevel
  tasks = ("expression", "landmarks")
  datasets = _datasets(args.host_images, args.image_size)
  per_step = len(tasks) * args.host_batch
  today = _rate(lambda s: pipeline.train_batch(s, datasets, tasks, args.host_batch, seed=0),
                args.host_steps, per_step)
  host = device_pipeline.HostBatches(datasets, tasks, args.host_batch, seed=0)
  gathered = _rate(host, args.host_steps * 10, per_step)
  with tempfile.TemporaryDirectory() as tmp:
    mapped = {}
    for task, data in datasets.items():
      np.save(os.path.join(tmp, f"{task}.npy"), data.images)
      mapped[task] = pipeline.TaskData(np.load(os.path.join(tmp, f"{task}.npy"), mmap_mode="r"),
                                       data.targets)
    host_mm = device_pipeline.HostBatches(mapped, tasks, args.host_batch, seed=0)
    gathered_mm = _rate(host_mm, args.host_steps * 10, per_step)
  print(f"\n[host] {len(tasks)} x {args.host_batch} images of {args.image_size}x"
        f"{args.image_size}, {args.host_images} per task")
  print(f"  pipeline.train_batch (augmented, today) {today:>12,.0f} images/s")
  print(f"  HostBatches, in-memory arrays           {gathered:>12,.0f} images/s  "
        f"{gathered / today:6.1f} x")
  print(f"  HostBatches, memory-mapped cache        {gathered_mm:>12,.0f} images/s  "
        f"{gathered_mm / today:6.1f} x   (target >= 20 x)")
  record["host"] = {"today_images_per_s": today, "gather_images_per_s": gathered,
                    "gather_mmap_images_per_s": gathered_mm,
                    "speedup": gathered / today, "speedup_mmap": gathered_mm / today}


def device_section(args, record):
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import optax

  from mtl_flax import evaluate
  from mtl_flax.data import augment
  from mtl_flax.data import device_augment
  from mtl_flax.data import device_pipeline
  from mtl_flax.models import multitask
  # pylint: enable=import-outside-toplevel
  accelerated = jax.default_backend() != "cpu"
  backbone = args.backbone or ("resnet34" if accelerated else "tiny")
  batch_size = args.batch or (256 if accelerated else 32)
  steps = args.steps or (10 if accelerated else 2)
  model = multitask.build_multitask(backbone=backbone, sharing="trace_norm")
  tasks = model.tasks
  datasets = _datasets(max(batch_size, 64), args.image_size)
  host = device_pipeline.HostBatches(datasets, tasks, batch_size, seed=0)
  batches = [jax.device_put(host(s)) for s in range(2)]
  tx = optax.sgd(0.01, momentum=0.9)
  variables = jax.jit(model.init)(jax.random.key(0),
                                  jnp.zeros((len(tasks), 1, args.image_size, args.image_size, 3)))
  base_key = device_augment.data_key(0)
  params_aug = augment.LandmarkAugment()

  def make_step(with_augment):
    def step(params, batch_stats, opt_state, batch, step_no):
      if with_augment:
        batch = device_augment.augment_batch(batch, base_key, step_no, tasks=tasks,
                                             landmark_augment=params_aug)
        images = batch["images"]
      else:
        images = evaluate.preprocess(batch["images"])

      def loss_fn(p):
        _, outputs, new_stats = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                            train=True)
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs[0], batch["labels"]).mean()
        return ce + jnp.abs(outputs[1] - batch["landmarks"]).mean(), new_stats

      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), new_stats, opt_state, loss
    return jax.jit(step, donate_argnums=(0, 1, 2))

  augment_only = jax.jit(lambda batch, step_no: device_augment.augment_batch(
      batch, base_key, step_no, tasks=tasks, landmark_augment=params_aug)["images"])

  class Variant:
    def __init__(self, with_augment):
      self.fn = make_step(with_augment)
      params = jax.tree.map(jnp.copy, variables["params"])
      self.state = (params, jax.tree.map(jnp.copy, variables["batch_stats"]), tx.init(params))
      self.calls = 0

    def run(self, count):
      start = time.perf_counter()
      for _ in range(count):
        *state, loss = self.fn(*self.state, batches[self.calls % 2], self.calls)
        self.state, self.calls = tuple(state), self.calls + 1
      jax.block_until_ready(loss)
      return (time.perf_counter() - start) / count

  variants = {"step": Variant(False), "step+augment": Variant(True)}
  for variant in variants.values():
    variant.run(1)  # compile
  jax.block_until_ready(augment_only(batches[0], 0))
  times = {name: [] for name in variants}
  times["augment alone"] = []
  for r in range(args.rounds):
    order = list(variants.items())
    for name, variant in order if r % 2 == 0 else order[::-1]:
      times[name].append(variant.run(steps))
    start = time.perf_counter()
    for s in range(steps):
      out = augment_only(batches[s % 2], s)
    jax.block_until_ready(out)
    times["augment alone"].append((time.perf_counter() - start) / steps)
  best = {name: min(v) for name, v in times.items()}
  paired = sorted(a / b - 1 for a, b in zip(times["step+augment"], times["step"]))
  share = 100 * (best["step+augment"] / best["step"] - 1)
  print(f"\n[device] {jax.devices()[0].device_kind} backbone={backbone} B={batch_size}/task "
        f"image={args.image_size} steps={steps} rounds={args.rounds}")
  for name, sec in best.items():
    print(f"  {name:<16}{1e3 * sec:>10.1f} ms")
  print(f"  augmentation share of the step: {share:+.1f} % (fastest rounds), "
        f"{100 * paired[len(paired) // 2]:+.1f} % (median of paired rounds); alone "
        f"{100 * best['augment alone'] / best['step']:.1f} % of a step (target <= 5 %)")
  record["device"] = {"device": jax.devices()[0].device_kind, "backbone": backbone,
                      "batch_per_task": batch_size, "seconds": best, "rounds": times,
                      "share_percent": share,
                      "alone_percent": 100 * best["augment alone"] / best["step"]}


def _draw_face(rng, size):
  """A cheap synthetic face: skin ellipse, eyes, mouth, noise (JPEG-friendly)."""
  image = np.full((size, size, 3), rng.integers(40, 200, 3), np.uint8)
  c = size // 2 + rng.integers(-size // 10, size // 10, 2)
  axes = (int(size * rng.uniform(0.25, 0.35)), int(size * rng.uniform(0.32, 0.42)))
  cv2.ellipse(image, tuple(int(v) for v in c), axes, 0, 0, 360,
              tuple(int(v) for v in rng.integers(120, 240, 3)), -1)
  for dx in (-1, 1):
    eye = (int(c[0] + dx * axes[0] * 0.4), int(c[1] - axes[1] * 0.2))
    cv2.circle(image, eye, max(size // 30, 2), (30, 30, 30), -1)
  cv2.ellipse(image, (int(c[0]), int(c[1] + axes[1] * 0.45)), (axes[0] // 2, size // 30),
              0, 0, 360, (60, 40, 120), -1)
  noise = rng.normal(0, 6, image.shape)
  return np.clip(image + noise, 0, 255).astype(np.uint8)


def _generate(folder, num, size, seed=0):
  rng = np.random.default_rng(seed)
  pool = [_draw_face(rng, size) for _ in range(min(num, 64))]
  paths = []
  for i in range(num):
    sub = folder / f"class{i % 7}"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / f"{i:06d}.jpg"
    # Shifted copies of a few drawn faces: distinct files at the cost of one roll each.
    cv2.imwrite(str(path), np.roll(pool[i % len(pool)], i // len(pool) % size, axis=1))
    paths.append(path)
  return paths


def cache_section(args, record):
  # pylint: disable=import-outside-toplevel
  import functools

  import ml_collections

  from mtl_flax import datasets
  from mtl_flax.data import cache
  from mtl_flax.data import readers
  # pylint: enable=import-outside-toplevel
  workers = args.workers or len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
    tmp = pathlib.Path(tmp)
    start = time.perf_counter()
    paths = _generate(tmp / "images", args.num_images, args.file_size)
    print(f"\n[cache] {args.num_images} generated {args.file_size}x{args.file_size} JPEGs "
          f"({time.perf_counter() - start:.1f} s to write), crops {args.image_size}x"
          f"{args.image_size}, {workers} workers")
    sample = paths[:min(len(paths), args.serial_sample)]
    start = time.perf_counter()
    for p in sample:  # what the readers did before the cache: one image at a time
      readers.crop_face(readers.read_image(p), image_size=args.image_size)
    serial = (time.perf_counter() - start) / len(sample) * len(paths)
    # The start-up that training runs: `datasets.load_task_data` of an 'image_folder' source
    # (file listing, split, decoding through the dataset cache), as `experiments.mtl` calls it.
    config = ml_collections.ConfigDict({
        "source": "image_folder", "path": str(tmp / "images"), "test_path": "",
        "face_detection": False, "test_fraction": 0.2, "cache_dir": str(tmp / "cache"),
        "extra_paths": ""})

    def start_up():
      begin = time.perf_counter()
      train, test = datasets.load_task_data("expression", config, image_size=args.image_size,
                                            num_classes=13, seed=0, progress=args.progress,
                                            num_workers=workers)
      int(train.images[-1].sum()) + int(test.images[-1].sum())  # touch the mapping
      return time.perf_counter() - begin, train

    first = {}
    first["thread"], train = start_up()
    cached, train = start_up()
    assert isinstance(train.images, np.memmap)
    if args.compare_executors:
      decode = functools.partial(cache.decode_face, image_size=args.image_size)
      start = time.perf_counter()
      out = cache.cached_dataset("bench-process", paths, decode, {}, tmp / "cache",
                                 num_workers=workers, executor="process",
                                 progress=args.progress)
      first["process"] = time.perf_counter() - start
      assert out.decoded == len(paths)
  print(f"  one at a time (before the cache, extrapolated from {len(sample)}) {serial:8.2f} s")
  labels = {"thread": "first start, datasets.load_task_data (thread pool)",
            "process": "first read, cache.cached_dataset (process pool)"}
  for executor, sec in first.items():
    print(f"  {labels[executor]:<52}{sec:8.2f} s  ({serial / sec:.2f} x one at a time)")
  print(f"  {'cached start, datasets.load_task_data':<52}{cached:8.3f} s  = "
        f"{100 * cached / first['thread']:.2f} % of the first start (target < 5 %)")
  record["cache"] = {"num_images": args.num_images, "workers": workers,
                     "timed": "datasets.load_task_data, source image_folder",
                     "serial_seconds_extrapolated": serial, "first_read_seconds": first,
                     "cached_start_seconds": cached,
                     "cached_percent": 100 * cached / first["thread"]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help=f"comma-separated subset of {','.join(SECTIONS)}")
  parser.add_argument("--image_size", type=int, default=96, help="crop size S")
  parser.add_argument("--host_batch", type=int, default=256, help="[host] images per task")
  parser.add_argument("--host_steps", type=int, default=2, help="[host] augmented batches per "
                      "round (the gatherer runs 10 x as many)")
  parser.add_argument("--host_images", type=int, default=2000, help="[host] images per task")
  parser.add_argument("--backbone", default=None, help="[device] resnet34 / resnet18 / tiny "
                      "(default resnet34 on an accelerator, tiny on CPU)")
  parser.add_argument("--batch", type=int, default=None, help="[device] images per task "
                      "(default 256 on an accelerator, 32 on CPU)")
  parser.add_argument("--steps", type=int, default=None, help="[device] steps per round")
  parser.add_argument("--rounds", type=int, default=3, help="[device] timing rounds")
  parser.add_argument("--num_images", type=int, default=20000, help="[cache] generated images")
  parser.add_argument("--file_size", type=int, default=256, help="[cache] generated image side")
  parser.add_argument("--serial_sample", type=int, default=500, help="[cache] images timed one "
                      "at a time")
  parser.add_argument("--workers", type=int, default=0, help="[cache] decoders (0: all CPUs)")
  parser.add_argument("--compare_executors", action="store_true", help="[cache] also time a "
                      "process pool")
  parser.add_argument("--progress", action="store_true", help="[cache] show the progress bar")
  parser.add_argument("--tmp_dir", default=None, help="[cache] where to generate the images")
  parser.add_argument("--json", default="", help="also write the measurements to this file")
  args = parser.parse_args(argv)
  sections = [s.strip() for s in args.sections.split(",") if s.strip()]
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    raise SystemExit(f"--sections: unknown {unknown}; expected names from {list(SECTIONS)}")
  record = {}
  for name in sections:
    {"host": host_section, "device": device_section, "cache": cache_section}[name](args, record)
  if args.json:
    from subtle_core import atomic  # pylint: disable=import-outside-toplevel
    atomic.write_text(pathlib.Path(args.json), json.dumps(record, indent=1) + "\n")
  return record


if __name__ == "__main__":
  main()
