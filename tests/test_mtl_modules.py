"""The pieces of MTL training: task registry, frozen settings, compile cache, run fingerprints."""
import json
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from configs import mtl as mtl_configs
from mtl_flax import functions
from mtl_flax import metrics as metrics_lib
from mtl_flax import runs
from mtl_flax import settings as settings_lib
from mtl_flax import tasks
from mtl_flax import trace_norm
from mtl_flax.data import pipeline
from mtl_flax.models import multitask
from subtle_core import runfolder


def test_registry_describes_every_task_once():
  assert tasks.NAMES == ("expression", "landmarks")
  assert [tasks.get(n).index for n in tasks.NAMES] == [0, 1]  # the data streams' indices
  assert {tasks.get(n).batch_key for n in tasks.NAMES} == {"labels", "landmarks"}
  with pytest.raises(ValueError, match=r"unknown task 'landmark'; expected one of"):
    tasks.get("landmark")
  model = multitask.build_multitask(backbone="tiny", num_classes=5, num_landmarks=68)
  assert [model.head_dim(t) for t in model.tasks] == [5, 136]


def test_batches_and_metrics_follow_the_registry():
  rng = np.random.default_rng(0)
  data = {"expression": pipeline.TaskData(rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
                                          rng.integers(0, 3, 6).astype(np.int32)),
          "landmarks": pipeline.TaskData(rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
                                         rng.uniform(0.3, 0.7, (5, 68, 2)).astype(np.float32))}
  batch = pipeline.train_batch(0, data, ("landmarks", "expression"), 4, seed=0,
                               augmentation=False)
  assert set(batch) == {"images", "labels", "landmarks"}
  assert batch["labels"].dtype == np.int32 and batch["landmarks"].shape == (4, 136)
  pred = rng.uniform(0.3, 0.7, (5, 136)).astype(np.float32)
  got = tasks.get("landmarks").evaluate(pred, data["landmarks"].targets, "inter_ocular")
  true = data["landmarks"].targets.reshape(5, -1)
  assert got["landmark_nme"] == pytest.approx(float(metrics_lib.inter_ocular_nme(pred, true)))
  logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
  labels = data["expression"].targets
  assert tasks.get("expression").evaluate(logits, labels, "inter_pupil") == {
      "expression_accuracy": pytest.approx(float(np.mean(labels == [0, 1, 2, 0, 1, 2]))),
      "expression_mf1": pytest.approx(metrics_lib.macro_f1(logits, labels))}


def test_settings_are_read_once_and_key_the_compile_cache():
  config = mtl_configs.get_config("runlocal,tucker")
  settings = settings_lib.train_settings(config)
  assert settings.compute.regulariser == settings_lib.RegulariserSettings(
      kind="tucker", strength=0.01, method="exact", gammas=None)
  assert settings.compute.model.hard_share_convs == 0
  with pytest.raises(Exception):
    settings.compute.regulariser.kind = "laf"  # frozen
  # Fields that change no computation share one compilation; any other field does not.
  quiet = config.copy_and_resolve_references()
  quiet.log_every, quiet.data.expression.num = 7, 30
  assert settings_lib.train_settings(quiet).compute == settings.compute
  assert functions.compiled(settings_lib.compute_settings(quiet)) is functions.compiled(
      settings.compute)
  stronger = config.copy_and_resolve_references()
  stronger.regulariser.strength = 0.5
  assert functions.compiled(settings_lib.compute_settings(stronger)) is not functions.compiled(
      settings.compute)
  # The augmentation runs inside the step and the dtype changes its activations: both key it.
  for field, value in (("augment.noise_std", 0.0), ("model.dtype", "bfloat16")):
    other = config.copy_and_resolve_references()
    parent, _, name = field.rpartition(".")
    other[parent][name] = value
    assert settings_lib.compute_settings(other) != settings.compute, field
  # 'hardstage2' is resolved once, here: the tiny trunk has one two-conv block per stage.
  assert settings_lib.compute_settings(
      mtl_configs.get_config("runlocal,hardstage2")).model.hard_share_convs == 4


@pytest.mark.parametrize("field,value,message", [
    ("regulariser.kind", "lap", "regulariser.kind: expected one of 'none', 'laf', 'tucker', 'tt', "
                                "got 'lap'"),
    ("ada.mode", "reverse", "ada.mode: expected one of 'grl', 'alternating', got 'reverse'"),
    ("model.backbone", "resnet50", "model.backbone: expected one of"),
    ("tasks", ("expression", "pose"), "unknown task 'pose'"),
    ("model.dtype", "float16", "model.dtype: expected one of 'float32', 'bfloat16', got "
                               "'float16'"),
])
def test_settings_name_the_bad_field(field, value, message):
  config = mtl_configs.get_config("runlocal")
  parent, _, name = field.rpartition(".")
  (config[parent] if parent else config)[name] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    settings_lib.train_settings(config)


def test_trace_norms_of_bfloat16_kernels_are_computed_in_float32():
  rng = np.random.default_rng(0)
  kernels = {"conv01": rng.normal(size=(3, 3, 4, 5, 2)).astype(np.float32)}
  low = {k: jnp.asarray(v, jnp.bfloat16) for k, v in kernels.items()}
  rounded = {k: np.asarray(v, np.float32) for k, v in low.items()}  # the bf16 values, exactly
  penalty = trace_norm.trace_norm_penalty(low, kind="laf", strength=1.0)
  assert penalty.dtype == jnp.float32
  want = trace_norm.trace_norm_penalty(rounded, kind="laf", strength=1.0)
  assert float(penalty) == pytest.approx(float(want), rel=1e-6)
  norms = trace_norm.trace_norm_per_layer(low, "laf")
  assert norms["conv01"].dtype == jnp.float32
  assert float(norms["conv01"]) == pytest.approx(
      np.linalg.svd(rounded["conv01"].reshape(-1, 2), compute_uv=False).sum(), rel=1e-5)


def test_svd_config_is_named_not_positional():
  config = trace_norm._svd_config("randomized", None, 8, 2)  # pylint: disable=protected-access
  assert (config.method, config.rank, config.oversample, config.power_iters) == (
      "randomized", trace_norm.DEFAULT_RANK, 8, 2)
  ns = trace_norm._svd_config("newton_schulz", None, 0, 0)  # pylint: disable=protected-access
  assert ns.iterations == trace_norm.NS_ITERATIONS and ns.smoothing == trace_norm.NS_SMOOTHING
  hash(ns)  # a static argument of the custom VJP


def test_run_fingerprint_warns_on_resume_and_refuses_on_request(tmp_path, caplog):
  config = mtl_configs.get_config("runlocal,laf")
  assert runs.check_run(tmp_path, config, on_mismatch="refuse") == []  # nothing saved yet
  runs.save_run(tmp_path, config)
  assert json.loads((tmp_path / "config.json").read_text())["regulariser"]["kind"] == "laf"
  saved = json.loads((tmp_path / "fingerprint.json").read_text())["fingerprint"]
  assert saved["fields"]["regulariser.strength"] == 0.01
  assert saved["fields"]["model.dtype"] == "float32"  # mixed precision is part of a run
  assert "log_every" not in saved["fields"]
  quiet = config.copy_and_resolve_references()
  quiet.log_every = 3
  assert runs.check_run(tmp_path, quiet, on_mismatch="refuse") == []
  changed = config.copy_and_resolve_references()
  changed.regulariser.strength = 0.5
  with caplog.at_level(logging.WARNING):
    assert runs.check_run(tmp_path, changed, on_mismatch="warn") == ["regulariser.strength"]
  assert any("differs from the saved one in regulariser.strength" in r.getMessage()
             for r in caplog.records)
  with pytest.raises(runfolder.FingerprintMismatch,
                     match=r"fingerprint\.json was made under other settings \(regulariser\."
                           r"strength: saved 0\.01, now 0\.5\); delete it"):
    runs.check_run(tmp_path, changed, on_mismatch="refuse", hint="; delete it")
  # A run saved before fingerprints were kept is compared through its config.json.
  (tmp_path / "fingerprint.json").unlink()
  with pytest.raises(runfolder.FingerprintMismatch, match=r"config\.json was made under other "
                     r"settings \(regulariser\.strength: saved 0\.01, now 0\.5\)"):
    runs.check_run(tmp_path, changed, on_mismatch="refuse")
