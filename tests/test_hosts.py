"""Several hosts (subtle_core.distributed): two processes on 127.0.0.1 equal one process.

Each multi-process test starts its two processes once (one device each, gloo collectives) and
compares their outputs with a single-process run of the same grid or global batch.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from subtle_core import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
# The subprocesses compile at XLA's lowest CPU optimisation level: compilation dominates these
# runs (about 40 % less), and every run compared uses the same flags.
XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count="


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_processes(args: list[str], num_processes: int = 2, *, devices: int = 1,
                    xla_flags: str = "--xla_force_host_platform_device_count=") -> list:
  """Starts ``python -m ARGS`` as ``num_processes`` joined processes of ``devices`` CPU devices
  each (alone when ``num_processes`` is 1)."""
  env = dict(os.environ, XLA_FLAGS=f"{xla_flags}{devices}")
  address = f"127.0.0.1:{free_port()}"
  joined = [f"--coordinator_address={address}", f"--num_processes={num_processes}"]
  return [subprocess.Popen(
      [sys.executable, "-m", *args] + (joined + [f"--process_id={i}"] if num_processes > 1 else []),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(num_processes)]


def finish(*groups: list) -> list[list[subprocess.CompletedProcess]]:
  """Waits for every process of ``groups`` (``TIMEOUT_S`` in all); fails with every stderr."""
  done = [[None] * len(g) for g in groups]
  try:
    for g, group in enumerate(groups):
      for i, proc in enumerate(group):
        out, err = proc.communicate(timeout=TIMEOUT_S)
        done[g][i] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
  except subprocess.TimeoutExpired:
    for group in groups:
      for proc in group:
        proc.kill()
    done = [[subprocess.CompletedProcess(p.args, p.returncode, *p.communicate()) for p in group]
            for group in groups]
  failed = [(g, i, o) for g, group in enumerate(done) for i, o in enumerate(group)
            if o.returncode]
  if failed:
    pytest.fail("\n\n".join(
        f"group {g} process {i} exited with {o.returncode} ({' '.join(o.args[2:4])}); stderr:\n"
        f"{o.stderr[-4000:]}" for g, group in enumerate(done) for i, o in enumerate(group)))
  return done


def run_processes(args: list[str], num_processes: int = 2, **kwargs
                  ) -> list[subprocess.CompletedProcess]:
  """:func:`start_processes` and :func:`finish`."""
  return finish(start_processes(args, num_processes, **kwargs))[0]


# --------------------------------------------------------------------------- flags, no JAX


def test_flags_all_or_none():
  assert distributed.process_group() is None
  group = distributed.process_group("127.0.0.1:1234", 2, 1)
  assert group == distributed.ProcessGroup("127.0.0.1:1234", 2, 1)
  with pytest.raises(ValueError, match=r"^--num_processes, --process_id missing"):
    distributed.process_group("127.0.0.1:1234")
  with pytest.raises(ValueError, match=r"^--coordinator_address missing"):
    distributed.process_group(num_processes=2, process_id=0)
  with pytest.raises(ValueError, match="--coordinator_address: expected HOST:PORT"):
    distributed.process_group("127.0.0.1", 2, 0)
  with pytest.raises(ValueError, match="--process_id: expected 0 <= id < --num_processes=2"):
    distributed.process_group("host:1", 2, 2)
  with pytest.raises(ValueError, match="--num_processes: expected a positive number"):
    distributed.process_group("host:1", 0, 0)


def test_alone_the_helpers_are_the_identity():
  arrays = {"x": np.arange(3.0), "n": np.asarray([1, 2], np.int64)}
  (gathered,) = distributed.all_gather_arrays(arrays)
  assert gathered.keys() == arrays.keys() and all(
      np.array_equal(gathered[k], arrays[k]) for k in arrays)
  assert distributed.broadcast_arrays(arrays)["n"].dtype == np.int64
  payload = distributed.arrays_to_bytes(arrays)
  back = distributed.arrays_from_bytes(payload)
  assert back["x"].dtype == np.float64 and np.array_equal(back["x"], arrays["x"])


def test_partial_flags_are_one_line_naming_the_missing_flag(tmp_path):
  done = subprocess.run([sys.executable, "-m", "experiments.cdmer", "--config",
                         "configs/cdmer.py:runlocal", "--workdir", str(tmp_path),
                         "--num_processes=2"], cwd=REPO, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert done.returncode == 2, done.stderr
  assert done.stderr.startswith("error: --coordinator_address, --process_id missing"), done.stderr
  assert not any(tmp_path.iterdir())  # refused before anything was written


def test_each_process_gathers_its_rows_of_the_global_batch():
  from mtl_flax.data import device_pipeline  # pylint: disable=import-outside-toplevel
  from mtl_flax.data import pipeline  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  data = {"expression": pipeline.TaskData(rng.integers(0, 255, (7, 4, 4, 3), np.uint8),
                                          rng.integers(0, 6, 7).astype(np.int32)),
          "landmarks": pipeline.TaskData(rng.integers(0, 255, (5, 4, 4, 3), np.uint8),
                                         rng.random((5, 68, 2), np.float32))}
  tasks = ("expression", "landmarks")
  whole = device_pipeline.HostBatches(data, tasks, 6, seed=3)
  shares = [device_pipeline.HostBatches(data, tasks, 6, seed=3, process_index=p, process_count=3)
            for p in range(3)]
  for step in (0, 1, 4):  # batches straddling epochs included
    expected = whole(step)
    parts = [share(step) for share in shares]
    assert parts[0]["images"].shape == (2, 2, 4, 4, 3)
    np.testing.assert_array_equal(np.concatenate([p["images"] for p in parts], axis=1),
                                  expected["images"])
    for key in ("labels", "landmarks"):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), expected[key])
  with pytest.raises(ValueError, match="batch_size 6 .* not divisible by the 4 processes"):
    device_pipeline.HostBatches(data, tasks, 6, seed=3, process_index=0, process_count=4)
  with pytest.raises(ValueError, match=r"process_index must lie in \[0, 2\), got 2"):
    device_pipeline.HostBatches(data, tasks, 6, seed=3, process_index=2, process_count=2)


# --------------------------------------------------------------------------- TGSR sweep


def test_two_processes_share_the_tgsr_grid_and_equal_one(tmp_path):
  from configs import cdmer as cdmer_config  # pylint: disable=import-outside-toplevel
  from tgsr_jax import experiment  # pylint: disable=import-outside-toplevel
  overrides = {"experiments": "V->N", "chunk_size": 2}  # 6 grid points: 3 chunks
  config = cdmer_config.get_config("runlocal")
  config.update(overrides)
  experiment.run(config, tmp_path / "alone")
  alone = tmp_path / "alone" / "SMIC_VIS_to_SMIC_NIR"
  chunks = sorted((alone / "chunks").rglob("chunk_*.npz"))
  assert [c.name for c in chunks] == ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
  # A resumed run: chunk 1 is already saved, so the two processes solve chunks 0 and 2.
  shared = tmp_path / "shared" / "SMIC_VIS_to_SMIC_NIR"
  saved = shared / chunks[1].relative_to(alone)
  saved.parent.mkdir(parents=True)
  shutil.copy(chunks[1], saved)
  outputs = run_processes(
      ["experiments.cdmer", "--config=configs/cdmer.py:runlocal",
       f"--workdir={tmp_path / 'shared'}", "--logtostderr"]
      + [f"--config.{k}={v}" for k, v in overrides.items()])
  assert "process 0 of 2: grid chunk 0 (2 points)" in outputs[0].stderr
  assert "process 1 of 2: grid chunk 2 (2 points)" in outputs[1].stderr
  assert "chunk 1" not in outputs[0].stderr + outputs[1].stderr
  assert "TYPE-I" in outputs[0].stdout and "TYPE-I" not in outputs[1].stdout  # process 0 prints
  assert (shared / "grid.csv").read_text() == (alone / "grid.csv").read_text()
  for chunk in chunks:
    with np.load(chunk) as a, np.load(shared / chunk.relative_to(alone)) as b:
      assert sorted(a.files) == sorted(b.files)
      for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{chunk.name}: {name}")
  best_alone = (alone / "best.json").read_text()
  best_shared = (shared / "best.json").read_text()
  assert best_shared.replace(str(tmp_path / "shared"), "") == best_alone.replace(
      str(tmp_path / "alone"), "")


# --------------------------------------------------------------------------- MTL training


def _metrics(workdir: pathlib.Path) -> list[dict]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k != "train/steps_per_second"} for r in records]


def _save_start_checkpoint(workdir: pathlib.Path, config) -> None:
  """A checkpoint at step 1 that a run could not have made: the initialisation of another seed.

  A run resuming from it ends elsewhere than a run that ignored it, so equal results of two runs
  resuming from it show that both restored it.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from mtl_flax import checkpoint  # pylint: disable=import-outside-toplevel
  from mtl_flax import functions  # pylint: disable=import-outside-toplevel
  from mtl_flax import settings  # pylint: disable=import-outside-toplevel
  compute = settings.compute_settings(config)
  state = functions.compiled(compute).init_fn(functions.root_key(compute, 7))
  state = {**jax.device_get(state), "step": np.int32(1)}
  with checkpoint.Checkpointer(workdir, metadata={"architecture":
                                                  compute.model.architecture()}) as ckpt:
    ckpt.save(1, state, force=True)


@pytest.mark.slow  # three processes compiling the training step: ~60 s of CPU
def test_two_processes_resume_and_train_like_one(tmp_path):
  """Resumed from the same checkpoint (step 1), two processes (1 device each) end with the
  parameters and metrics of one process (2 devices).

  The global batch of every step is the same (4 per task, 2 rows per device either way) and so
  is its layout on the 2-device mesh; what differs is that the cross-device sums (BatchNorm
  statistics, gradients) go through gloo between processes. Measured: the parameters are equal
  to the last bit (a sum of two operands does not depend on the order); they and the metrics are
  asserted within rtol 1e-5, atol 1e-6 (float32 rounding of a few steps) so that a collective
  summing in another order still passes. The evaluation runs on one device per process against
  two alone, so its features (domain_separability) differ by float32 rounding (measured 1e-7
  relative).
  """
  from configs import mtl as mtl_config  # pylint: disable=import-outside-toplevel
  from mtl_flax import inference  # pylint: disable=import-outside-toplevel
  # Without the trace-norm penalty, whose SVDs cost most of the step's compilation (the penalty
  # is a function of the replicated parameters: nothing in it depends on the processes).
  args = ["experiments.mtl", "--config=configs/mtl.py:runlocal,none", "--config.plots=False",
          "--config.keep_checkpoints=3", "--logtostderr"]
  alone, shared = tmp_path / "alone", tmp_path / "shared"
  _save_start_checkpoint(alone, mtl_config.get_config("runlocal,none"))
  shutil.copytree(alone / "checkpoints", shared / "checkpoints")
  groups = finish(
      start_processes(args + [f"--workdir={alone}"], 1, devices=2, xla_flags=XLA_FLAGS),
      start_processes(args + [f"--workdir={shared}"], 2, xla_flags=XLA_FLAGS))
  (reference,), outputs = groups
  for out in (reference, *outputs):
    assert "resumed from" in out.stderr and "at step 1" in out.stderr
  assert "step 3:" in reference.stdout
  assert "step 3:" in outputs[0].stdout and "step 3:" not in outputs[1].stdout  # process 0 prints
  # Steps 2 and 3 were saved by the two processes together (runlocal checkpoints every 2 steps
  # and where it stops).
  assert sorted(p.name for p in (shared / "checkpoints").iterdir()) == ["1", "2", "3"]
  one, two = inference.load_run(alone), inference.load_run(shared)
  assert one.step == two.step == 3
  flat_one = jax_leaves_with_paths(one.variables)
  flat_two = jax_leaves_with_paths(two.variables)
  assert flat_one.keys() == flat_two.keys()
  for name, value in flat_one.items():
    np.testing.assert_allclose(flat_two[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  metrics_one, metrics_two = _metrics(alone), _metrics(shared)
  assert [r["step"] for r in metrics_two] == [r["step"] for r in metrics_one] == [2, 3, 3]
  for r1, r2 in zip(metrics_one, metrics_two):
    assert r1.keys() == r2.keys()
    np.testing.assert_allclose([r2[k] for k in r1], [r1[k] for k in r1], rtol=1e-5, atol=1e-6)
  summary_one = json.loads((alone / "summary.json").read_text())
  summary_two = json.loads((shared / "summary.json").read_text())
  assert summary_two["eval"].keys() == summary_one["eval"].keys()
  np.testing.assert_allclose([summary_two["eval"][k] for k in summary_one["eval"]],
                             [summary_one["eval"][k] for k in summary_one["eval"]],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(summary_two["domain_separability"],
                             summary_one["domain_separability"], rtol=1e-5)
  assert (shared / "features.npz").is_file() and (shared / "config.json").is_file()


def jax_leaves_with_paths(tree) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
