"""Several hosts (subtle_core.distributed): two processes on 127.0.0.1 equal one process.

Each multi-process test starts its two processes once (one device each, gloo collectives) and
compares their outputs with a single-process run of the same grid or global batch.
"""
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


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(args: list[str], num_processes: int = 2) -> list[subprocess.CompletedProcess]:
  """Runs ``python -m ARGS`` as ``num_processes`` joined processes; fails with every stderr."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  address = f"127.0.0.1:{free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", *args, f"--coordinator_address={address}",
       f"--num_processes={num_processes}", f"--process_id={i}"],
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
