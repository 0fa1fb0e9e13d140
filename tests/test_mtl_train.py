"""Training of the stacked multi-task networks (mtl_flax.train) on a tiny variant.

Compilation dominates the cost on CPU, so images are 16 x 16, batches hold 2-4 faces and the
configs of the end-to-end tests are shared (train.compiled_functions caches their jitted
functions within the process).
"""
import functools
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mtl as mtl_configs
from mtl_flax import checkpoint as checkpoint_lib
from mtl_flax import functions
from mtl_flax import settings as settings_lib
from mtl_flax import train
from mtl_flax.data import device_augment
from mtl_flax.data import device_pipeline
from mtl_flax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 16


def tiny_config(variant="runlocal,laf,ada"):
  config = mtl_configs.get_config(variant)
  config.image_size = SIZE
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 4
  config.checkpoint_every = 2
  config.plots = False
  return config


def tiny_datasets(seed=0, n_expr=10, n_lm=8, num_classes=13):
  rng = np.random.default_rng(seed)

  def data(n, expression):
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    if expression:
      return pipeline.TaskData(images, rng.integers(0, num_classes, n).astype(np.int32))
    base = rng.uniform(0.3, 0.7, (68, 2))
    return pipeline.TaskData(images, (base + rng.normal(0, 0.02, (n, 68, 2))).astype(np.float32))

  train_sets = {"expression": data(n_expr, True), "landmarks": data(n_lm, False)}
  test_sets = {"expression": data(5, True), "landmarks": data(3, False)}
  return train_sets, test_sets


def _batch(config, step=0, datasets=None):
  """The uint8 host batch of `step` (what the training loop feeds the step)."""
  datasets = datasets or tiny_datasets()[0]
  return device_pipeline.HostBatches(datasets, tuple(config.tasks), config.batch_size,
                                     seed=config.seed)(step)


# The runs' device augmentation (runlocal keeps the default ranges), compiled into every step.
AUGMENT = settings_lib.augment_settings(mtl_configs.get_config("runlocal"))


def _step_rng():
  return jax.random.split(train.root_key(tiny_config()))[1]


def _init_rng():
  return jax.random.split(train.root_key(tiny_config()))[0]  # as in train.train_and_evaluate


@functools.lru_cache(maxsize=None)
def _initial_state(variant):
  config = tiny_config(variant)
  model = train.build_model(config)
  tx = train.make_optimizer(model, config.optimizer)
  state = jax.jit(functools.partial(train.init_state, model, tx, image_shape=(SIZE, SIZE, 3)))(
      _init_rng())
  return model, tx, jax.device_get(state)


@functools.lru_cache(maxsize=None)
def _jitted_step(init_variant, **kwargs):
  """One compiled single-device step per setting (with the runs' augmentation), shared below."""
  model, tx, _ = _initial_state(init_variant)
  return jax.jit(train.make_train_step(model, tx, num_steps=4, augment=AUGMENT, **kwargs))


def _stacked_kernels(params):
  """Every per-task conv kernel with the task axis moved last (NumPy)."""
  return {name: np.moveaxis(np.asarray(layer["kernel"]), 0, -1)
          for name, layer in params["trunk"].items() if "kernel" in layer}


def _numpy_trace_norm(kernels, kind):
  """Independent reference: moveaxis/reshape unfoldings and NumPy singular values."""
  total = 0.0
  for w in kernels.values():
    w = np.asarray(w, np.float64)
    if kind == "laf":
      mats = [w.reshape(-1, w.shape[-1])]
    elif kind == "tucker":
      mats = [np.moveaxis(w, i, 0).reshape(w.shape[i], -1) for i in range(w.ndim)]
    else:
      mats = [w.reshape(int(np.prod(w.shape[:k])), -1) for k in range(1, w.ndim)]
    total += sum(np.linalg.svd(m, compute_uv=False).sum() for m in mats)
  return total


def _leaves_changed(before, after):
  return any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                      jax.tree_util.tree_leaves(after)))


def _ada_mode(kind):
  # The unregularised run takes the alternating ADA updates, the others gradient reversal:
  # both modes are covered without compiling a ninth step.
  return "alternating" if kind == "none" else "grl"


@pytest.mark.parametrize("ada", [False, True], ids=["plain", "ada"])
@pytest.mark.parametrize("kind", ["none", "laf", "tucker", "tt"])
def test_one_training_step_per_regulariser(kind, ada):
  variant = f"runlocal,{kind}" + (",ada" if ada else "")
  config = tiny_config(variant)
  model, tx, state0 = _initial_state("runlocal,laf" + (",ada" if ada else ""))
  step = _jitted_step("runlocal,laf" + (",ada" if ada else ""), regulariser=kind,
                      strength=config.regulariser.strength, ada=ada,
                      ada_mode=_ada_mode(kind) if ada else "grl")
  state1, m = step(jax.tree_util.tree_map(jnp.asarray, state0), _batch(config),
                   _step_rng())
  m = jax.device_get(m)
  assert all(np.isfinite(v) for v in m.values())
  assert int(state1["step"]) == 1
  expected_loss = m["expression_ce"] + m["landmark_loss"]
  if kind == "none":
    assert "trace_norm_penalty" not in m
  else:
    reference = _numpy_trace_norm(_stacked_kernels(state0["params"]), kind)
    assert m["trace_norm_penalty"] == pytest.approx(config.regulariser.strength * reference,
                                                    rel=1e-4)
    expected_loss += m["trace_norm_penalty"]
  if ada:
    assert m["grl_lambda"] == 0.0  # lambda_p at p = 0
    assert 0.3 < m["domain_ce"] < 1.5
    expected_loss += m["domain_ce"]
    assert _leaves_changed(state0["params"]["discriminator"], state1["params"]["discriminator"])
  else:
    assert "discriminator" not in state1["params"]
  assert m["loss"] == pytest.approx(expected_loss, rel=1e-5)
  assert _leaves_changed(state0["params"]["trunk"], state1["params"]["trunk"])
  assert _leaves_changed(state0["batch_stats"], state1["batch_stats"])


def test_fast_factorisations_train_like_exact():
  # The same Tucker step with the Gram-matrix and the Newton-Schulz factorisations: the same
  # penalty and parameters (Newton-Schulz: to its smoothing, ~1e-6 relative on these kernels).
  config = tiny_config("runlocal,tucker")
  _, _, state0 = _initial_state("runlocal,laf")
  common = dict(regulariser="tucker", strength=config.regulariser.strength, ada=False,
                ada_mode="grl")  # the exact step is the one compiled above
  out = {}
  for method in ("exact", "gram", "newton_schulz"):
    kwargs = {} if method == "exact" else {"svd_method": method}
    state1, m = _jitted_step("runlocal,laf", **common, **kwargs)(
        jax.tree_util.tree_map(jnp.asarray, state0), _batch(config), _step_rng())
    out[method] = jax.device_get((state1["params"]["trunk"], m["trace_norm_penalty"]))
  for method, rel in (("gram", 1e-5), ("newton_schulz", 1e-4)):
    assert out[method][1] == pytest.approx(out["exact"][1], rel=rel), method
    for got, want in zip(jax.tree_util.tree_leaves(out[method][0]),
                         jax.tree_util.tree_leaves(out["exact"][0])):
      np.testing.assert_allclose(got, want, atol=1e-5, err_msg=method)


def test_resnet34_setting_factorises_by_gram_and_the_cpu_setting_exactly():
  # The paper's setting takes the cheaper exact path measured by benchmarks/mtl_step.py; the
  # variant tokens after it (a regulariser, ADA) keep that choice.
  assert mtl_configs.get_config("resnet34,tucker,ada").regulariser.method == "gram"
  assert mtl_configs.get_config("").regulariser.method == "exact"


@pytest.mark.parametrize("variant,group", [("runlocal,hardstage1", "shared_trunk"),
                                           ("runlocal,cross_stitch", "cross_stitch")])
def test_hard_sharing_and_cross_stitch_train_in_the_same_step(variant, group):
  config = tiny_config(variant)
  model, tx, state0 = _initial_state(variant)
  assert group in state0["params"]
  step = _jitted_step(variant, regulariser="none")
  state1, m = step(jax.tree_util.tree_map(jnp.asarray, state0), _batch(config),
                   _step_rng())
  assert np.isfinite(float(m["loss"]))
  assert _leaves_changed(state0["params"][group], state1["params"][group])


def test_the_step_trains_on_the_device_augmented_host_batch():
  # The step's losses are the network's on `augment_batch` of the uint8 host batch, drawn from
  # the second half of the step key and keyed by the state's step (here 3), not on the batch
  # as it came.
  config = tiny_config("runlocal,none")
  model, _, state0 = _initial_state("runlocal,laf")  # the same network
  step = _jitted_step("runlocal,laf", regulariser="none", strength=config.regulariser.strength,
                      ada=False, ada_mode="grl")  # compiled for the per-regulariser test
  state = jax.tree_util.tree_map(jnp.asarray, {**state0, "step": np.int32(3)})
  batch, rng = _batch(config, 3), _step_rng()
  _, m = step(state, batch, rng)
  m = jax.device_get(m)
  variables = {"params": state0["params"], "batch_stats": state0["batch_stats"]}

  augmented = {enabled: device_augment.augment_batch(
      batch, jax.random.split(rng)[1], 3, tasks=model.tasks, enabled=enabled,
      landmark_augment=AUGMENT.landmark_augment(), expression_flip=AUGMENT.expression_flip)
               for enabled in (True, False)}
  forward = jax.jit(lambda images: model.apply(variables, images, train=True)[1])
  for enabled, data in augmented.items():
    outputs = forward(data["images"])
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs[0], batch["labels"]).mean()
    l1 = jnp.abs(outputs[1] - data["landmarks"]).sum(-1).mean()  # per face, batch mean
    same = (m["expression_ce"] == pytest.approx(float(ce), rel=1e-5)
            and m["landmark_loss"] == pytest.approx(float(l1), rel=1e-5))
    assert same == enabled, enabled


def test_bfloat16_activations_with_float32_parameters_train():
  # Without the penalty, whose SVDs cost most of the compilation (its kernels are float32
  # parameters; test_mtl_modules checks that a bfloat16 kernel is factorised in float32).
  config = tiny_config("runlocal,none")
  config.model.dtype = "bfloat16"
  config.augment.enabled = False  # the same batch every step: the loss must go down
  compute = settings_lib.compute_settings(config)
  compiled = functions.compiled(compute)
  # The initial state does not depend on the dtype (the float32 run's, compiled above).
  state = jax.tree_util.tree_map(jnp.asarray, _initial_state("runlocal,laf")[2])
  batch = jax.device_put(_batch(config), compiled.batch_sharding)
  rng = _step_rng()
  # Every convolution of the step (forward and backward) runs on bfloat16 operands; those of a
  # float32 run on float32 ones. The parameters, the optimiser state, the batch statistics and
  # the losses are float32 in both.
  for dtype, compiled_fn in (("bf16", compiled.train_step),
                             ("f32", functions.compiled(settings_lib.compute_settings(
                                 tiny_config("runlocal,none"))).train_step)):
    text = compiled_fn.lower(state, batch, rng).as_text()
    convolutions = [l for l in text.splitlines() if "stablehlo.convolution" in l]
    assert convolutions and all(f"x{dtype}>" in l for l in convolutions), dtype
  losses = []
  for _ in range(5):
    state, m = compiled.train_step(state, batch, rng)
    losses.append(float(m["loss"]))
    assert m["loss"].dtype == m["landmark_loss"].dtype == jnp.float32
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  for leaf in jax.tree_util.tree_leaves((state["params"], state["opt_state"],
                                         state["batch_stats"])):
    assert leaf.dtype == jnp.float32
  # An intermediate activation of the trunk (the last map, before the float32 pooling).
  trunk_vars = compiled.model.task_variables(state, 0)
  activation = compiled.model.trunk.apply(trunk_vars, jnp.zeros((1, SIZE, SIZE, 3)),
                                          train=False, pool=False)
  assert activation.dtype == jnp.bfloat16


def test_alternating_ada_updates_discriminator_on_even_steps_only():
  config = tiny_config("runlocal,none,alternating")
  model, _, state0 = _initial_state("runlocal,laf,ada")  # the same model; another optimiser
  tx = train.optimizer_from_config(model, config)
  step = jax.jit(train.make_train_step(model, tx, num_steps=4, regulariser="none", ada=True,
                                       ada_mode="alternating"))
  state = jax.tree_util.tree_map(jnp.asarray, {**state0, "opt_state": tx.init(state0["params"])})
  discs, trunks = [], []
  for s in range(4):
    discs.append(jax.device_get(state["params"]["discriminator"]))
    trunks.append(jax.device_get(state["params"]["trunk"]))
    state, m = step(state, _batch(config, s), _step_rng())
    assert np.isfinite(float(m["loss"]))
  discs.append(jax.device_get(state["params"]["discriminator"]))
  trunks.append(jax.device_get(state["params"]["trunk"]))
  # Steps 0 and 2 are the discriminator's turns. On steps 1 and 3 it stays exactly where it is:
  # no gradient and no momentum (SGD 0.9) moves it. The extractors train on every step.
  assert _leaves_changed(discs[0], discs[1]) and _leaves_changed(discs[2], discs[3])
  assert not _leaves_changed(discs[1], discs[2]) and not _leaves_changed(discs[3], discs[4])
  assert all(_leaves_changed(a, b) for a, b in zip(trunks, trunks[1:]))


def _final_params(workdir, target):
  ckpt = checkpoint_lib.Checkpointer(workdir)
  try:
    return ckpt.restore_latest(target)["params"], ckpt.latest_step()
  finally:
    ckpt.close()


def test_resume_gives_the_uninterrupted_parameters_on_two_devices(tmp_path):
  assert jax.device_count() == 2  # tests/conftest.py forces two host devices
  config = tiny_config()
  datasets = tiny_datasets()
  mesh = train.compiled_functions(config)[2]
  assert mesh.devices.size == 2

  straight = train.train_and_evaluate(config, tmp_path / "straight", datasets=datasets)
  first = train.train_and_evaluate(config, tmp_path / "resumed", datasets=datasets,
                                   stop_at_step=2)
  in_memory = "given in memory (the datasets argument)"
  assert first == {"step": 2, "finished": False, "eval": {}, "workdir": str(tmp_path / "resumed"),
                   "data": {"expression": in_memory, "landmarks": in_memory},
                   "dtype": "float32", "augmentation": "on the device, in the train step",
                   "evaluated": "not evaluated yet"}
  resumed = train.train_and_evaluate(config, tmp_path / "resumed", datasets=datasets)
  assert straight["finished"] and resumed["finished"]
  assert resumed["eval"] == pytest.approx(straight["eval"], rel=1e-6)

  model, tx, state0 = _initial_state("runlocal,laf,ada")
  target = jax.tree_util.tree_map(jnp.asarray, state0)
  params_a, step_a = _final_params(tmp_path / "straight", target)
  params_b, step_b = _final_params(tmp_path / "resumed", target)
  assert step_a == step_b == 4
  for a, b in zip(jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert _leaves_changed(state0["params"], params_a)

  records = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
  summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
  assert set(summary["decrease_rates"]) == set(_stacked_kernels(state0["params"]))
  assert summary["eval"]["landmark_nme"] > 0

  # The same first step on one device (no mesh) gives the data-parallel result.
  single = _jitted_step("runlocal,laf,ada", regulariser="laf",
                        strength=config.regulariser.strength, ada=True, ada_mode="grl")
  assert settings_lib.compute_settings(config).augment == AUGMENT and AUGMENT.enabled
  _, m_single = single(target, _batch(config, 0, datasets[0]),
                       jax.random.split(train.root_key(config))[1])
  first_log = records[0]
  assert first_log["train/loss"] == pytest.approx(float(m_single["loss"]), rel=1e-5)

  # A checkpoint of another architecture is refused with the mismatching leaves named.
  other = train.build_model(_with_classes(config, 7))
  other_tx = train.make_optimizer(other, config.optimizer)
  shapes = jax.eval_shape(functools.partial(train.init_state, other, other_tx,
                                            image_shape=(SIZE, SIZE, 3)), jax.random.key(0))
  other_target = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(ValueError, match=r"params/heads/expression/kernel: checkpoint float32\[64, 13\] vs model float32\[64, 7\]"):
    _final_params(tmp_path / "straight", other_target)


def _with_classes(config, num_classes):
  config = config.copy_and_resolve_references()
  config.model.num_classes = num_classes
  return config


def test_nan_loss_raises_a_clear_error(tmp_path, caplog):
  config = tiny_config()
  train_sets, test_sets = tiny_datasets()
  bad = pipeline.TaskData(train_sets["landmarks"].images,
                          np.full_like(train_sets["landmarks"].targets, np.nan))
  # The workdir holds a run of another learning rate: the resumed run says so.
  saved = json.loads(config.to_json_best_effort())
  saved["optimizer"]["learning_rate"] = 0.5
  saved["log_every"] = 99  # changes no result: not reported
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(FloatingPointError, match="step 1: .*non-finite"):
    train.train_and_evaluate(config, tmp_path, datasets=({**train_sets, "landmarks": bad},
                                                         test_sets))
  warnings = [r.getMessage() for r in caplog.records if "differs from the saved one" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].endswith(
      "in optimizer.learning_rate; a resumed run continues under the new values")


def test_cli_end_to_end_runlocal(tmp_path, monkeypatch):
  pytest.importorskip("mtl_flax.data.synthetic")
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import mtl as cli  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  # In-process (the tiny computation is the one compiled above); the flags are exactly what
  # `python -m experiments.mtl` would parse.
  command = ["mtl", f"--config={REPO / 'configs' / 'mtl.py'}:runlocal,laf,ada",
             f"--workdir={workdir}", f"--config.image_size={SIZE}", "--config.batch_size=4",
             "--config.eval_batch_size=4", "--config.num_steps=4", "--config.checkpoint_every=2"]
  monkeypatch.setattr(sys, "argv", command)  # config_flags reads its overrides from sys.argv
  argv = flags.FLAGS(command)
  try:
    cli.main(argv)
  finally:
    flags.FLAGS.unparse_flags()
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["finished"] and summary["step"] == 4
  assert summary["dtype"] == "float32"
  assert summary["augmentation"] == "on the device, in the train step"
  assert summary["data"]["expression"].startswith("synthetic, seed 0, 26 samples")
  assert summary["data"]["landmarks"].startswith("synthetic, seed 1, 16 samples")
  assert summary["evaluated"] == "the final state (step 4), on the test sets"
  assert 0.0 <= summary["eval"]["expression_accuracy"] <= 1.0
  assert summary["eval"]["landmark_nme"] > 0
  for name in ("metrics.jsonl", "decrease_rates.png", "embedding.png", "features.npz",
               "config.json"):
    assert (workdir / name).is_file(), name
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
      "2", "4"]
  with np.load(workdir / "features.npz") as f:
    assert f["expression"].shape[1] == f["landmarks"].shape[1] == 64


# --------------------------------------------------------------------------- no silent wrong results


def _data_config(task, **fields):
  config = mtl_configs.get_config("runlocal")
  for key, value in fields.items():
    config.data[task][key] = value
  return config.data[task]


def test_data_config_errors_name_the_fields(tmp_path):
  # A path beside source 'synthetic' is a contradiction, not something to ignore.
  with pytest.raises(ValueError, match=r"data\.expression\.path is set \(/data/LSEMSW\) but "
                     r"data\.expression\.source is 'synthetic'.*'image_folder'"):
    train.check_data_config("expression", _data_config("expression", path="/data/LSEMSW"))
  with pytest.raises(ValueError, match=r"data\.landmarks\.test_path is set .* "
                     r"data\.landmarks\.source is 'synthetic'.*'300w'"):
    train.check_data_config("landmarks", _data_config("landmarks", test_path=str(tmp_path)))
  # An unknown source is named as such (not asked for a path).
  with pytest.raises(ValueError, match=r"data\.expression\.source: unknown source 'foo'; "
                     r"expected one of 'synthetic', 'image_folder'"):
    train.check_data_config("expression", _data_config("expression", source="foo"))
  with pytest.raises(ValueError, match=r"data\.landmarks\.path: a dataset root is needed"):
    train.check_data_config("landmarks", _data_config("landmarks", source="300w"))
  missing = tmp_path / "nowhere"
  with pytest.raises(ValueError, match=rf"data\.landmarks\.path: {missing} does not exist"):
    train.check_data_config("landmarks", _data_config("landmarks", source="300w",
                                                      path=str(missing)))
  with pytest.raises(ValueError, match=rf"data\.expression\.test_path: {missing} does not"):
    train.check_data_config("expression", _data_config(
        "expression", source="image_folder", path=str(tmp_path), test_path=str(missing)))
  train.check_data_config("expression", _data_config("expression", source="image_folder",
                                                     path=str(tmp_path)))  # accepted


def test_describe_data_names_sources_and_seeds():
  config = mtl_configs.get_config("runlocal")
  config.seed = 3
  config.data.landmarks.source = "300w"
  config.data.landmarks.path = "/data/300W"
  described = train.describe_data(config)
  assert described["expression"].startswith("synthetic, seed 3, 26 samples; 25% held out")
  assert described["landmarks"] == ("300w /data/300W; 25% held out for testing (by subject "
                                    "where known)")


def _tree_bytes(root):
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished tiny run (checkpoints at steps 2 and 4), and its summary."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  summary = train.train_and_evaluate(tiny_config(), workdir, datasets=tiny_datasets())
  return workdir, summary


def test_refused_or_failed_start_leaves_a_finished_run_untouched(finished_run, tmp_path):
  workdir, _ = finished_run
  before = _tree_bytes(workdir)
  assert "config.json" in before and "summary.json" in before
  other = tiny_config()
  other.model.backbone = "resnet18"
  with pytest.raises(ValueError, match=r"checkpoints/4 was saved by another architecture "
                     r"\(backbone: saved 'tiny', now 'resnet18'\)"):
    train.train_and_evaluate(other, workdir, datasets=tiny_datasets())
  assert _tree_bytes(workdir) == before
  wrong_path = tiny_config()
  wrong_path.data.expression.source = "image_folder"
  wrong_path.data.expression.path = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match=r"data\.expression\.path: .*nowhere does not exist"):
    train.train_and_evaluate(wrong_path, workdir)
  assert _tree_bytes(workdir) == before
  # Nor is a fresh workdir created by a failed start.
  with pytest.raises(ValueError, match=r"data\.expression\.path"):
    train.train_and_evaluate(wrong_path, tmp_path / "fresh")
  assert not (tmp_path / "fresh").exists()


def _damage(step_dir):
  """Truncates every array data file of a checkpoint step (as a full disk or a crash would)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for path in files:
    path.write_bytes(path.read_bytes()[:20])


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path,
                                                                  caplog):
  source, straight = finished_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  (workdir / "summary.json").unlink()
  _damage(workdir / "checkpoints" / "4")
  resumed = train.train_and_evaluate(tiny_config(), workdir, datasets=tiny_datasets())
  warning = [r.getMessage() for r in caplog.records if "cannot be restored" in r.getMessage()]
  assert len(warning) == 1
  assert f"checkpoint step(s) 4 in {workdir / 'checkpoints'} cannot be restored" in warning[0]
  assert "using step 2, the newest intact one" in warning[0]
  assert str(workdir / "damaged_checkpoints" / "4") in warning[0]
  # Steps 3 and 4 were trained again from step 2: the uninterrupted run's results.
  assert resumed["finished"] and resumed["eval"] == pytest.approx(straight["eval"], rel=1e-6)
  assert (workdir / "damaged_checkpoints" / "4").is_dir()
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
      "2", "4"]

  # With every step damaged: one line naming the folder and the steps.
  _damage(workdir / "checkpoints" / "2")
  _damage(workdir / "checkpoints" / "4")
  with pytest.raises(checkpoint_lib.DamagedCheckpointError) as error:
    train.train_and_evaluate(tiny_config(), workdir, datasets=tiny_datasets())
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"{workdir / 'checkpoints'}: no checkpoint can be restored; "
                            "step(s) 4, 2 are damaged")


def _cli(workdir, *overrides, module="experiments.mtl", config="configs/mtl.py:runlocal"):
  command = [sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}",
             *overrides]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("overrides,expected", [
    (["--config.data.expression.path=/data/LSEMSW"],
     "error: data.expression.path is set (/data/LSEMSW) but data.expression.source is "
     "'synthetic'"),
    (["--config.data.expression.source=foo"],
     "error: data.expression.source: unknown source 'foo'; expected one of 'synthetic', "
     "'image_folder'"),
    (["--config.data.landmarks.source=300w", "--config.data.landmarks.path=/no/such/300W"],
     "error: data.landmarks.path: /no/such/300W does not exist"),
], ids=["path_with_synthetic", "unknown_source", "missing_path"])
def test_cli_reports_a_config_error_in_one_line(tmp_path, overrides, expected):
  proc = _cli(tmp_path / "run", *overrides)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[0].startswith(expected), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()
