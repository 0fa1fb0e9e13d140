"""AlexNet- and VGG-style trunks: shapes, parameter counts against torchvision's, training steps."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_flax.models import plain_cnns

# torchvision's totals (alexnet: 61,100,840; vgg16: 138,357,544) less the last classifier layer.
TORCHVISION_ALEXNET_TRUNK = 61_100_840 - (4096 * 1000 + 1000)
TORCHVISION_VGG16_TRUNK = 138_357_544 - (4096 * 1000 + 1000)
VGG16_CONV_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def _shapes(model, size=96):
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
  features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  last_map = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, pool=False), variables,
                            images)
  return variables, n_params, features.shape, last_map.shape


def test_alexnet96_shapes_and_parameters_against_torchvision():
  model = plain_cnns.AlexNet96()
  variables, n_params, features, last_map = _shapes(model)
  assert features == (2, 4096) and model.feature_dim == 4096
  assert last_map == (2, 6, 6, 256)  # AlexNet's last map on 224 x 224, so fc6 is 9216 -> 4096
  conv_biases = 64 + 192 + 384 + 256 + 256
  first_conv_change = 5 * 5 * 3 * 64 - 11 * 11 * 3 * 64
  batch_norm = 2 * conv_biases
  assert n_params == TORCHVISION_ALEXNET_TRUNK - conv_biases + first_conv_change + batch_norm
  assert 50e6 < n_params < 62e6
  assert variables["params"]["fc00"]["kernel"].shape == (9216, 4096)
  assert set(variables["batch_stats"]) == {f"bn{i:02d}" for i in range(5)}


def test_vgg16_96_shapes_and_parameters_against_torchvision():
  model = plain_cnns.VGG16_96()
  variables, n_params, features, last_map = _shapes(model)
  assert features == (2, 4096) and last_map == (2, 3, 3, 512)
  conv_biases = sum(VGG16_CONV_WIDTHS)
  fc6_change = (3 * 3 * 512 - 7 * 7 * 512) * 4096
  assert n_params == TORCHVISION_VGG16_TRUNK - conv_biases + fc6_change + 2 * conv_biases
  assert model.conv_names == tuple(f"conv{i:02d}" for i in range(13))
  kernels = [variables["params"][name]["kernel"].shape for name in model.conv_names]
  assert [k[-1] for k in kernels] == list(VGG16_CONV_WIDTHS)


def test_without_fully_connected_layers_features_are_the_pooled_last_map():
  model = plain_cnns.PlainCNN(layers=plain_cnns.vgg_layers((8, "M", 16, "M")), fc_widths=())
  _, n_params, features, last_map = _shapes(model, size=16)
  assert features == (2, 16) and model.feature_dim == 16 and last_map == (2, 4, 4, 16)
  assert n_params == 9 * 3 * 8 + 2 * 8 + 9 * 8 * 16 + 2 * 16


def test_plain_cnn_runs_whole_only():
  model = plain_cnns.VGGTiny()
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  with pytest.raises(ValueError, match="start=0"):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False, stop=2), variables, images)


def _images_and_labels():
  rng = np.random.default_rng(0)
  labels = np.arange(8) % 3
  images = rng.normal(0, 1, (8, 32, 32, 3)) + labels[:, None, None, None]
  return jnp.asarray(images, jnp.float32), jnp.asarray(labels)


def _he_normal_variables(model, images, seed=0, **call_kwargs):
  """Variables of the model's shapes, drawn in NumPy: He-normal kernels, zero biases, unit BN.

  Compiling Flax's initialisers costs more than the whole training step on a CPU; the step only
  needs some random start.
  """
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **call_kwargs), images)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny_variables():
  images, _ = _images_and_labels()
  return lambda name: _he_normal_variables(getattr(plain_cnns, name)(), images, train=False)


@pytest.mark.parametrize("name", ["AlexNetTiny", "VGGTiny"])
def test_one_training_step_decreases_the_loss(name, tiny_variables):
  trunk, head = getattr(plain_cnns, name)(), nn.Dense(3)
  images, labels = _images_and_labels()
  variables = tiny_variables(name)
  params = {"trunk": variables["params"],
            "head": _he_normal_variables(head, jnp.zeros((1, trunk.feature_dim)))["params"]}
  tx = optax.sgd(0.01, momentum=0.9)
  dropout_key = jax.random.key(2)

  def loss_fn(p, batch_stats):
    features, updates = trunk.apply({"params": p["trunk"], "batch_stats": batch_stats}, images,
                                    train=True, rngs={"dropout": dropout_key},
                                    mutable=["batch_stats"])
    logits = head.apply({"params": p["head"]}, features)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, updates["batch_stats"]

  @jax.jit
  def step(p, opt_state, batch_stats):
    """One SGD step; returns the loss at the parameters it was given."""
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch_stats)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, new_stats, loss

  new_params, opt_state, new_stats, loss_before = step(params, tx.init(params),
                                                       variables["batch_stats"])
  _, _, _, loss_after = step(new_params, opt_state, new_stats)  # the same batch and dropout mask
  assert np.isfinite(float(loss_before)) and float(loss_after) < float(loss_before)
  # BatchNorm's running statistics moved towards the batch's.
  assert not np.allclose(new_stats["bn00"]["mean"], variables["batch_stats"]["bn00"]["mean"])


def test_dropout_is_a_function_of_the_key_and_off_at_evaluation(tiny_variables):
  model = plain_cnns.AlexNetTiny()
  images, _ = _images_and_labels()
  variables = tiny_variables("AlexNetTiny")
  run_train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key},
                                                    mutable=["batch_stats"])[0])
  run_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def train_features(key):
    return np.asarray(run_train(variables, images, jax.random.key(key)))

  np.testing.assert_array_equal(train_features(7), train_features(7))
  assert not np.allclose(train_features(7), train_features(8))  # only dropout reads the key
  evaluation = np.asarray(run_eval(variables, images))
  np.testing.assert_array_equal(evaluation, np.asarray(run_eval(variables, images)))
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                   variables, images)


def test_vgg_backbone_trains_by_the_mtl_entry_point(tmp_path):
  """`experiments.mtl` trains a single-task expression network on a VGG-style trunk.

  The small `vgg_tiny` (same module, fewer and narrower blocks): compiling VGG-16 costs about
  90 s of CPU for nothing more than the entry point could get wrong.
  """
  import json
  import pathlib
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  cmd = [sys.executable, "-m", "experiments.mtl", "--config", "configs/mtl.py:runlocal,single",
         f"--workdir={tmp_path}", "--config.model.backbone=vgg_tiny", "--config.tasks=('expression',)",
         "--config.num_steps=1", "--config.image_size=32"]
  done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["finished"] and summary["step"] == 1
  assert 0.0 <= summary["eval"]["expression_accuracy"] <= 1.0 and list(summary["eval"]) == [
      "expression_accuracy", "expression_mf1"]
  assert json.loads((tmp_path / "config.json").read_text())["model"]["backbone"] == "vgg_tiny"
  metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert np.isfinite(metrics[0]["train/expression_ce"]) and metrics[0]["step"] == 1


def test_hard_sharing_by_stage_is_refused_for_a_plain_backbone():
  from mtl_flax import settings
  with pytest.raises(ValueError, match="no stages"):
    settings.resolve_hard_share_convs("alexnet", -2)
  assert plain_cnns.VGGTiny().feature_dim == 64  # the property does not disturb the module
