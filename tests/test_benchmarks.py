"""The speed scripts run end to end on a tiny network (their numbers are not checked here)."""
import json

import jax
import pytest

from benchmarks import mtl_step
from mtl_flax import trace_norm
from mtl_flax.models import multitask


def test_mtl_step_benchmark_writes_a_consistent_record(tmp_path, capsys):
  out = tmp_path / "mtl_step.json"
  mtl_step.main(["--backbone", "tiny", "--batch", "2", "--image_size", "16", "--steps", "1",
                 "--rounds", "2", "--variants", "laf/gram,stacked/no_augment", "--json",
                 str(out)])
  record = json.loads(out.read_text())
  # stacked: the reference
  assert set(record["seconds"]) == {"stacked", "laf/gram", "stacked/no_augment"}
  assert record["overhead_percent"][mtl_step.AUGMENT_SHARE] == pytest.approx(
      100 * (record["seconds"]["stacked"] / record["seconds"]["stacked/no_augment"] - 1))
  assert record["dtype"] == "float32" and "ADA" in record["step"]
  assert all(len(r) == 2 and min(r) > 0 for r in record["rounds"].values())
  seconds = record["seconds"]
  assert seconds == {name: min(r) for name, r in record["rounds"].items()}
  assert record["overhead_percent"]["laf/gram vs stacked"] == pytest.approx(
      100 * (seconds["laf/gram"] / seconds["stacked"] - 1))
  rounds = record["rounds"]
  paired = sorted(a / b - 1 for a, b in zip(rounds["laf/gram"], rounds["stacked"]))
  assert record["paired_overhead_percent"]["laf/gram vs stacked"] == pytest.approx(
      100 * (paired[0] + paired[1]) / 2)  # the median of the two rounds' ratios
  assert record["penalty_alone_seconds"]["laf/gram"] > 0
  assert "laf/gram vs stacked" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="unknown"):
    mtl_step.main(["--variants", "tucker/svd"])


def test_mtl_step_penalty_only_reports_the_trace_norms(tmp_path, capsys):
  out = tmp_path / "penalties.json"
  mtl_step.main(["--backbone", "tiny", "--penalty_only", "--per_layer", "--rounds", "1",
                 "--variants", "stacked,laf/gram", "--json", str(out)])
  record = json.loads(out.read_text())
  assert sorted(record["trace_norm"]) == ["laf/gram"]  # 'stacked' is no penalty
  # The same initial parameters, summed layer by layer here.
  model = multitask.build_multitask(backbone="tiny", sharing="trace_norm")
  params = jax.jit(model.init)(jax.random.key(0), jax.numpy.zeros((2, 1, 32, 32, 3)))["params"]
  norms = jax.jit(lambda p: trace_norm.trace_norm_per_layer(model.shareable_kernels(p), "laf"))
  want = sum(float(v) for v in norms(params).values())
  assert record["trace_norm"]["laf/gram"] == pytest.approx(want, rel=1e-4)
  # Every shareable kernel is counted once, under its own shape.
  kernels = model.shareable_kernels(params)
  layers = record["per_layer_seconds"]
  assert sum(row["count"] for row in layers) == len(kernels)
  assert {tuple(row["shape"]) for row in layers} == {tuple(k.shape) for k in kernels.values()}
  assert all(row["seconds"]["laf/gram"] > 0 for row in layers)
  with pytest.raises(SystemExit, match="--per_layer"):
    mtl_step.main(["--backbone", "tiny", "--per_layer"])
  assert "ms (value+grad)" in capsys.readouterr().out
