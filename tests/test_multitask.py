"""Stacked multi-task network: stacked apply vs separate networks, hard sharing, cross-stitch."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_flax import functions
from mtl_flax.models import multitask, plain_cnns, resnet

T, B, HW = 2, 4, 24


def _images(seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(T, B, HW, HW, 3)), jnp.float32)


@pytest.fixture(scope="module")
def independent():
  model = multitask.build_multitask(backbone="tiny", sharing="none")
  # The rbg generator compiles much faster than threefry on CPU.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), _images())
  return model, variables


def _with_params(variables, **params):
  return {"params": {**variables["params"], **params}, "batch_stats": variables["batch_stats"]}


def _assert_tree_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


def test_init_layout(independent):
  model, variables = independent
  params = variables["params"]
  assert model.num_tasks == 2 and model.feature_dim == 64
  assert sorted(params) == ["heads", "trunk"]
  assert params["trunk"]["conv00"]["kernel"].shape == (T, 7, 7, 3, 8)
  assert variables["batch_stats"]["trunk"]["bn08"]["mean"].shape == (T, 64)
  assert params["heads"]["expression"]["kernel"].shape == (64, 13)
  assert params["heads"]["landmarks"]["kernel"].shape == (64, 136)
  # Each task gets its own random initialisation.
  k = params["trunk"]["conv01"]["kernel"]
  assert not np.allclose(np.asarray(k[0]), np.asarray(k[1]))
  kernels = model.shareable_kernels(params)
  assert list(kernels) == sorted(resnet.conv_layer_names((1, 1, 1, 1)))
  np.testing.assert_array_equal(np.asarray(kernels["conv03"][..., 1]),
                                np.asarray(params["trunk"]["conv03"]["kernel"][1]))
  assert kernels["proj05"].shape == (1, 1, 16, 32, T)


def test_stacked_apply_equals_separate_networks(independent):
  model, variables = independent
  images = _images(1)

  vmap_model = dataclasses.replace(model, task_map="vmap")

  @jax.jit
  def run(v, x):
    stacked = {train: model.apply(v, x, train=train) for train in (True, False)}
    vmapped = vmap_model.apply(v, x, train=True)
    separate = []
    for t in range(T):
      tv = model.task_variables(v, t)
      f_train, upd = model.trunk.apply(tv, x[t], train=True, mutable=["batch_stats"])
      separate.append((f_train, upd["batch_stats"], model.trunk.apply(tv, x[t], train=False)))
    return stacked, vmapped, separate

  stacked, vmapped, separate = run(variables, images)
  # Batch statistics over a few samples on tiny maps amplify round-off of the batched convs.
  tol = {True: dict(rtol=1e-3, atol=1e-3), False: dict(rtol=1e-5, atol=1e-5)}
  for train in (True, False):
    features, outputs, stats = stacked[train]
    assert features.shape == (T, B, 64)
    assert outputs[0].shape == (B, 13) and outputs[1].shape == (B, 136)
    assert np.all((np.asarray(outputs[1]) > 0) & (np.asarray(outputs[1]) < 1))
    for t, (f_train, stats_train, f_eval) in enumerate(separate):
      np.testing.assert_allclose(np.asarray(features[t]), np.asarray(f_train if train else f_eval),
                                 **tol[train])
      if train:
        _assert_tree_close(jax.tree.map(lambda a, t=t: a[t], stats["trunk"]), stats_train,
                           rtol=1e-3, atol=1e-5)
    if not train:
      _assert_tree_close(stats, variables["batch_stats"])
  # jax.vmap over the task axis (grouped convolutions) computes the same as the unrolled map.
  _assert_tree_close(vmapped, stacked[True], rtol=1e-3, atol=1e-4)
  # Training updates the running statistics; the two tasks' statistics differ.
  mean = np.asarray(stacked[True][2]["trunk"]["bn00"]["mean"])
  assert not np.allclose(mean, 0) and not np.allclose(mean[0], mean[1])
  # Heads: the expression logits are the Dense layer on task 0's features.
  head = variables["params"]["heads"]["expression"]
  np.testing.assert_allclose(np.asarray(stacked[True][1][0]),
                             np.asarray(stacked[True][0][0] @ head["kernel"] + head["bias"]),
                             rtol=1e-5, atol=1e-5)


def _hard_from_independent(model, variables):
  """The same numbers as `variables`, with the shared layers taken from task 0 and stored once."""
  trunk = dict(variables["params"]["trunk"])
  shared = {n: jax.tree.map(lambda a: a[0], trunk.pop(n)) for n in model.shared_layers}
  return {"params": {"trunk": trunk, "shared_trunk": shared, "heads": variables["params"]["heads"]},
          "batch_stats": variables["batch_stats"]}


def _loss(model, variables, images):
  _, outputs, _ = model.apply(variables, images, train=True)
  return jnp.mean(outputs[0] ** 2) + jnp.mean(jnp.abs(outputs[1] - 0.5))


def test_hard_sharing_stores_once_and_sums_gradients(independent):
  none_model, none_vars = independent
  model = multitask.build_multitask(backbone="tiny", sharing="hard", hard_share_convs=3)
  assert model.shared_layers == ("bn00", "bn01", "bn02", "bn03", "conv00", "conv01", "conv02",
                                 "conv03", "proj03", "projbn03")
  layout = jax.eval_shape(model.init, jax.random.key(0), _images())
  assert sorted(layout["params"]["shared_trunk"]) == list(model.shared_layers)
  assert layout["params"]["shared_trunk"]["conv03"]["kernel"].shape == (3, 3, 8, 16)
  assert "conv03" not in layout["params"]["trunk"] and "conv04" in layout["params"]["trunk"]
  assert list(jax.eval_shape(model.shareable_kernels, layout["params"])) == [
      "conv04", "conv05", "conv06", "conv07", "conv08", "proj05", "proj07"]
  hard_vars = _hard_from_independent(model, none_vars)
  # The same network with the shared layers tied by hand: task 0's copy in both slots.
  tied = dict(none_vars["params"]["trunk"])
  for name in model.shared_layers:
    tied[name] = jax.tree.map(lambda a: jnp.stack([a[0]] * T), tied[name])
  tied_vars = _with_params(none_vars, trunk=tied)
  images = _images(2)

  @jax.jit
  def grads(hv, tv):
    return (jax.grad(lambda p: _loss(model, _with_params(hv, **p), images))(hv["params"]),
            jax.grad(lambda p: _loss(none_model, _with_params(tv, **p), images))(tv["params"]))

  g_hard, g_tied = grads(hard_vars, tied_vars)
  for name in model.shared_layers:
    # One stored copy gets the sum of both tasks' gradients.
    _assert_tree_close(g_hard["shared_trunk"][name],
                       jax.tree.map(lambda a: a.sum(0), g_tied["trunk"][name]),
                       rtol=1e-3, atol=1e-5)
  _assert_tree_close(g_hard["trunk"]["conv04"], g_tied["trunk"]["conv04"], rtol=1e-3, atol=1e-5)
  # After an SGD step the shared layers are identical across tasks, the others still differ.
  stepped = jax.tree.map(lambda p, g: p - 0.1 * g, hard_vars["params"], g_hard)
  full = model.stacked_trunk_params(stepped)
  for name in ("conv00", "conv03", "proj03", "bn02"):
    leaf = jax.tree.leaves(full[name])[0]
    np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))
  assert not np.allclose(np.asarray(full["conv04"]["kernel"][0]),
                         np.asarray(full["conv04"]["kernel"][1]))
  assert multitask.hard_shared_layers((1, 1, 1, 1), 2) == (
      "bn00", "bn01", "bn02", "conv00", "conv01", "conv02")


def test_hard_share_k_for_resnet34():
  stages = (3, 4, 6, 3)
  all_layers = set(resnet.conv_layer_names(stages))
  convs = lambda k: {n for n in multitask.hard_shared_layers(stages, k) if n in all_layers}
  assert convs(6) == {f"conv{i:02d}" for i in range(7)}  # stem + stage 1
  assert convs(14) == {f"conv{i:02d}" for i in range(15)} | {"proj07"}
  assert convs(26) == {f"conv{i:02d}" for i in range(27)} | {"proj07", "proj15"}
  assert convs(32) == all_layers
  assert multitask.hard_shared_layers(stages, 0) == ()
  with pytest.raises(ValueError, match="hard_share_convs"):
    multitask.hard_shared_layers(stages, 33)
  model = multitask.build_multitask(backbone="resnet34", sharing="hard", hard_share_convs=32)
  layout = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((T, 1, 96, 96, 3), jnp.float32))
  count = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
  assert count(layout["params"]["shared_trunk"]) == 21_284_672
  assert count(layout["params"]["trunk"]) == 0


def test_cross_stitch_mixes_stage_outputs(independent):
  none_model, none_vars = independent
  model = multitask.build_multitask(backbone="tiny", sharing="cross_stitch")
  layout = jax.eval_shape(model.init, jax.random.key(0), _images())
  assert sorted(layout["params"]["cross_stitch"]) == ["stage0", "stage1", "stage2", "stage3"]
  init_unit = multitask.cross_stitch_init(T)
  np.testing.assert_allclose(np.asarray(init_unit), [[0.9, 0.1], [0.1, 0.9]])
  np.testing.assert_allclose(np.asarray(multitask.cross_stitch_init(3).sum(1)), 1.0, rtol=1e-6)
  eye = {f"stage{s}": jnp.eye(T) for s in range(4)}
  mix = {f"stage{s}": jnp.asarray([[0.8, 0.2 + 0.1 * s], [0.3, 0.6]]) for s in range(4)}
  images = _images(3)

  @jax.jit
  def run(v, x):
    identity = model.apply(_with_params(v, cross_stitch=eye), x, train=True)
    independent_out = none_model.apply(v, x, train=True)
    mixed = model.apply(_with_params(v, cross_stitch=mix), x, train=False)
    # Reference: each task's own network run stage by stage, mixed by a Python double loop.
    maps = list(x)
    for s in range(4):
      maps = [model.trunk.apply(model.task_variables(v, t), maps[t], train=False, start=s,
                                stop=s + 1) for t in range(T)]
      maps = [sum(mix[f"stage{s}"][t, u] * maps[u] for u in range(T)) for t in range(T)]
    return identity, independent_out, mixed[0], jnp.stack(maps)

  identity, independent_out, mixed, reference = run(none_vars, images)
  # Train mode: batch statistics of a few samples amplify round-off, hence the tolerance.
  _assert_tree_close(identity, independent_out, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(np.asarray(mixed), np.asarray(reference), rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(mixed), np.asarray(independent_out[0]), atol=1e-3)


def test_single_task_adversarial_and_labels():
  model = multitask.build_multitask(backbone="tiny", sharing="none", tasks=("landmarks",),
                                    num_landmarks=5, adversarial=True)
  assert model.num_tasks == 1
  images = jax.ShapeDtypeStruct((1, B, HW, HW, 3), jnp.float32)
  layout = jax.eval_shape(model.init, jax.random.key(0), images)
  features, outputs, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True), layout, images)
  assert features.shape == (1, B, 64) and len(outputs) == 1 and outputs[0].shape == (B, 10)
  params = layout["params"]
  assert params["discriminator"]["dense0"]["kernel"].shape == (64, 128)
  assert jax.eval_shape(model.shareable_kernels, params)["conv01"].shape == (3, 3, 8, 8, 1)
  labels = model.param_labels(params)
  assert set(jax.tree.leaves(labels["trunk"])) == {"trunk"}
  assert set(jax.tree.leaves(labels["heads"])) == {"head"}
  assert set(jax.tree.leaves(labels["discriminator"])) == {"discriminator"}
  tx = optax.multi_transform({"trunk": optax.sgd(0.1), "head": optax.sgd(0.2),
                              "discriminator": optax.adam(1e-3)}, model.param_labels)
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), params)
  state = tx.init(zeros)
  ones = jax.tree.map(jnp.ones_like, zeros)
  updates, _ = tx.update(ones, state, zeros)
  np.testing.assert_allclose(np.asarray(updates["heads"]["landmarks"]["bias"]), -0.2)
  np.testing.assert_allclose(np.asarray(updates["trunk"]["conv00"]["kernel"]), -0.1)
  with pytest.raises(ValueError, match="unexpected"):
    model.param_labels({**params, "extra": {}})


def test_bad_arguments():
  with pytest.raises(ValueError, match="sharing"):
    multitask.build_multitask(backbone="tiny", sharing="soft")
  with pytest.raises(ValueError, match="backbone"):
    multitask.build_multitask(backbone="vgg19", sharing="none")
  with pytest.raises(ValueError, match="hard_share_convs"):
    multitask.build_multitask(backbone="tiny", sharing="hard", hard_share_convs=9)
  with pytest.raises(ValueError, match="needs sharing='hard'"):
    multitask.build_multitask(backbone="tiny", sharing="none", hard_share_convs=2)
  with pytest.raises(ValueError, match="does not match"):
    multitask.build_multitask(backbone="tiny", sharing="none", num_tasks=1,
                              tasks=("expression", "landmarks"))
  with pytest.raises(ValueError, match="tasks"):
    multitask.build_multitask(backbone="tiny", sharing="none", tasks=("age",))
  model = multitask.build_multitask(backbone="tiny", sharing="none", num_tasks=1)
  assert model.tasks == ("expression",)
  with pytest.raises(ValueError, match="images"):
    model.init(jax.random.key(0), jnp.zeros((2, 1, HW, HW, 3)))


def test_plain_backbones_are_registered_beside_the_resnets():
  assert multitask.backbone("vgg").layers == plain_cnns.VGG16_96().layers
  assert multitask.backbone("alexnet").layers == plain_cnns.ALEXNET_96_LAYERS
  assert multitask.backbone("vgg_tiny") == plain_cnns.VGGTiny()
  assert set(multitask.PLAIN_BACKBONES) <= set(multitask.BACKBONES)
  for sharing in multitask.STAGED_SHARING:
    with pytest.raises(ValueError, match=f"sharing='{sharing}' needs a ResNet backbone"):
      multitask.build_multitask(backbone="alexnet_tiny", sharing=sharing)


def test_plain_trunk_stacked_apply_equals_separate_networks_with_their_dropout_keys():
  model = multitask.build_multitask(backbone="vgg_tiny", sharing="trace_norm")
  images = jnp.asarray(np.random.default_rng(3).normal(size=(T, 2, 32, 32, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), images)
  assert multitask.uses_dropout(model.trunk) and model.conv_names == model.trunk.conv_names
  assert list(model.shareable_kernels(variables["params"])) == list(model.conv_names)
  key = jax.random.key(5)
  apply = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rng=k)[0])
  apply_without_key = jax.jit(lambda v, x: model.apply(v, x, train=True)[0])

  @jax.jit
  def separate(task_variables, x, dropout_key):
    return model.trunk.apply(task_variables, x, train=True, rngs={"dropout": dropout_key},
                             mutable=["batch_stats"])[0]

  stacked = np.asarray(apply(variables, images, key))
  for t, task_key in enumerate(jax.random.split(key, T)):
    np.testing.assert_allclose(
        stacked[t], np.asarray(separate(model.task_variables(variables, t), images[t], task_key)),
        rtol=1e-5, atol=1e-6)
  assert not np.allclose(stacked, np.asarray(apply(variables, images, jax.random.key(6))))
  # Without a key the masks come from the batch: the same batch, the same masks; a new batch,
  # new ones.
  without = np.asarray(apply_without_key(variables, images))
  np.testing.assert_array_equal(without, np.asarray(apply_without_key(variables, images)))
  np.testing.assert_array_equal(
      without, np.asarray(apply(variables, images, multitask.batch_dropout_key(images))))
  other = images.at[0, 0, 0, 0, 0].add(1.0)
  zeros = lambda f: np.asarray(f) == 0
  assert not np.array_equal(zeros(apply_without_key(variables, other)), zeros(without))
  # Evaluation has no dropout and reads no key.
  evaluation = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, images)
  reference = jax.jit(lambda v, x: model.trunk.apply(v, x, train=False))(
      model.task_variables(variables, 1), images[1])
  np.testing.assert_allclose(np.asarray(evaluation[1]), np.asarray(reference), rtol=1e-5,
                             atol=1e-6)


def test_trace_norms_are_listed_in_the_trunks_forward_order():
  resnet_model = multitask.build_multitask(backbone="tiny", sharing="trace_norm")
  assert resnet_model.conv_names == tuple(resnet.conv_layer_names((1, 1, 1, 1)))
  model = multitask.build_multitask(backbone="alexnet_tiny", sharing="trace_norm")
  images = jnp.zeros((T, 1, 32, 32, 3), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), images)["params"]
  norms = functions.trace_norms(model, functions.make_trace_norms_fn(model, "laf"), params)
  assert list(norms) == [f"conv{i:02d}" for i in range(5)] == list(model.conv_names)
  assert all(v > 0 for v in norms.values())
