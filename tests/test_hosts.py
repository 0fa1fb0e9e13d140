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


def run_processes(args: list[str], num_processes: int = 2, *, devices: int = 1,
                  xla_flags: str = "--xla_force_host_platform_device_count="
                  ) -> list[subprocess.CompletedProcess]:
  """Runs ``python -m ARGS`` as ``num_processes`` joined processes of ``devices`` CPU devices
  each (alone when ``num_processes`` is 1); fails with every process's stderr."""
  env = dict(os.environ, XLA_FLAGS=f"{xla_flags}{devices}")
  address = f"127.0.0.1:{free_port()}"
  joined = [f"--coordinator_address={address}", f"--num_processes={num_processes}"]
  procs = [subprocess.Popen(
      [sys.executable, "-m", *args] + (joined + [f"--process_id={i}"] if num_processes > 1 else []),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(num_processes)]
  outputs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=TIMEOUT_S)
      outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
    outputs = [subprocess.CompletedProcess(p.args, -9, *p.communicate()) for p in procs]
  if any(o.returncode for o in outputs):
    pytest.fail("\n\n".join(f"process {i} exited with {o.returncode}; stderr:\n{o.stderr[-4000:]}"
                            for i, o in enumerate(outputs)))
  return outputs


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


def test_two_processes_resume_and_train_like_one(tmp_path):
  """A run interrupted after step 1 on one process (2 devices) and resumed on two processes (1
  device each) ends with the parameters and metrics of the uninterrupted one-process run.

  The global batch of every step is the same (4 per task, 2 rows per device either way) and so
  is its layout on the 2-device mesh; what differs is that the cross-device sums (BatchNorm
  statistics, gradients) go through gloo between processes. Measured: equal to the last bit
  (the sum of two operands does not depend on the order); asserted within rtol 1e-5, atol 1e-6
  (float32 rounding of a few steps), so that a collective that sums in another order still
  passes.
  """
  from mtl_flax import inference  # pylint: disable=import-outside-toplevel
  args = ["experiments.mtl", "--config=configs/mtl.py:runlocal", "--config.checkpoint_every=1",
          "--config.keep_checkpoints=3", "--config.plots=False", "--logtostderr"]
  alone, shared = tmp_path / "alone", tmp_path / "shared"
  (reference,) = run_processes(args + [f"--workdir={alone}"], 1, devices=2, xla_flags=XLA_FLAGS)
  assert "step 3:" in reference.stdout
  # The interrupted run: step 1's checkpoint and metrics.
  shutil.copytree(alone / "checkpoints" / "1", shared / "checkpoints" / "1")
  (shared / "metrics.jsonl").write_text((alone / "metrics.jsonl").read_text().splitlines()[0]
                                        + "\n")
  outputs = run_processes(args + [f"--workdir={shared}"], 2, xla_flags=XLA_FLAGS)
  for out in outputs:
    assert "resumed from" in out.stderr and "at step 1" in out.stderr
  assert "step 3:" in outputs[0].stdout and "step 3:" not in outputs[1].stdout  # process 0 prints
  # Steps 2 and 3 were saved by the two processes together.
  assert sorted(p.name for p in (shared / "checkpoints").iterdir()) == ["1", "2", "3"]
  one, two = inference.load_run(alone), inference.load_run(shared)
  assert one.step == two.step == 3
  flat_one = jax_leaves_with_paths(one.variables)
  flat_two = jax_leaves_with_paths(two.variables)
  assert flat_one.keys() == flat_two.keys()
  for name, value in flat_one.items():
    np.testing.assert_allclose(flat_two[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  metrics_one, metrics_two = _metrics(alone), _metrics(shared)
  assert [r["step"] for r in metrics_two] == [r["step"] for r in metrics_one]
  for r1, r2 in zip(metrics_one, metrics_two):
    assert r1.keys() == r2.keys()
    np.testing.assert_allclose([r2[k] for k in r1], [r1[k] for k in r1], rtol=1e-5, atol=1e-6)
  summary_one = json.loads((alone / "summary.json").read_text())
  summary_two = json.loads((shared / "summary.json").read_text())
  assert summary_two["eval"].keys() == summary_one["eval"].keys()
  np.testing.assert_allclose([summary_two["eval"][k] for k in summary_one["eval"]],
                             [summary_one["eval"][k] for k in summary_one["eval"]],
                             rtol=1e-5, atol=1e-6)
  assert (shared / "features.npz").is_file() and (shared / "config.json").is_file()


def jax_leaves_with_paths(tree) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
