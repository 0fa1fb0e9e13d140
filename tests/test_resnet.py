"""ResNet trunk: ResNet-34 shapes and parameter count, layer order, forward vs a lax reference."""
import jax
import jax.numpy as jnp
import numpy as np

from mtl_flax.models import resnet


def _torchvision_resnet34_trunk_params():
  # Counted layer by layer as torchvision builds resnet34 (convs without bias, BN weight + bias).
  count = 7 * 7 * 3 * 64 + 2 * 64
  cin = 64
  for stage, blocks in enumerate((3, 4, 6, 3)):
    width = 64 * 2 ** stage
    for block in range(blocks):
      count += 9 * cin * width + 2 * width + 9 * width * width + 2 * width
      if stage > 0 and block == 0:
        count += cin * width + 2 * width  # downsample: 1x1 conv + BN
      cin = width
  return count


def test_resnet34_shapes_and_parameter_count():
  model = resnet.ResNet34()
  images = jax.ShapeDtypeStruct((2, 96, 96, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
  assert n_params == _torchvision_resnet34_trunk_params() == 21_797_672 - 513_000
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  assert out.shape == (2, 512) and model.feature_dim == 512
  # The last map is 3x3, so the final pooling is the paper's 3x3 average pool.
  before_last = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, stop=3), variables,
                               images)
  assert before_last.shape == (2, 6, 6, 256)
  last = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, start=3, stop=4, pool=False),
                        variables, before_last)
  assert last.shape == (2, 3, 3, 512)
  kernels = {k: v["kernel"].shape for k, v in variables["params"].items() if "kernel" in v}
  assert len(kernels) == 36
  assert kernels["conv00"] == (7, 7, 3, 64) and kernels["proj27"] == (1, 1, 256, 512)


def test_layer_names_are_in_forward_order():
  names = resnet.conv_layer_names((3, 4, 6, 3))
  assert len(names) == 36 and names[0] == "conv00" and names[-1] == "conv32"
  convs = [n for n in names if n.startswith("conv")]
  assert convs == sorted(convs) == [f"conv{i:02d}" for i in range(33)]
  assert [n for n in names if n.startswith("proj")] == ["proj07", "proj15", "proj27"]
  assert resnet.stage_end_conv_counts((3, 4, 6, 3)) == [6, 14, 26, 32]
  assert resnet.stage_end_conv_counts((1, 1, 1, 1)) == [2, 4, 6, 8]


def _reference_forward(params, stats, x, stage_sizes, eps=1e-5):
  """torchvision's BasicBlock ResNet in plain lax ops (explicit torch paddings), eval mode."""
  def conv_bn(x, name, bn_name, stride, pad):
    y = jax.lax.conv_general_dilated(x, params[name]["kernel"], (stride, stride), [(pad, pad)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    inv = params[bn_name]["scale"] / jnp.sqrt(stats[bn_name]["var"] + eps)
    return (y - stats[bn_name]["mean"]) * inv + params[bn_name]["bias"]

  x = jax.nn.relu(conv_bn(x, "conv00", "bn00", 2, 3))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                            [(0, 0), (1, 1), (1, 1), (0, 0)])
  index = 1
  for stage, blocks in enumerate(stage_sizes):
    for block in range(blocks):
      down = stage > 0 and block == 0
      stride = 2 if down else 1
      y = jax.nn.relu(conv_bn(x, f"conv{index:02d}", f"bn{index:02d}", stride, 1))
      y = conv_bn(y, f"conv{index + 1:02d}", f"bn{index + 1:02d}", 1, 1)
      shortcut = conv_bn(x, f"proj{index:02d}", f"projbn{index:02d}", stride, 0) if down else x
      x = jax.nn.relu(y + shortcut)
      index += 2
  return x.mean(axis=(1, 2))


def test_tiny_forward_matches_lax_reference():
  model = resnet.ResNet(stage_sizes=(1, 2, 1, 1), num_filters=4)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 20, 20, 3)), jnp.float32)
  # Random parameters and BatchNorm statistics drawn in NumPy (flax's initialisers are not under
  # test here, and compiling them costs seconds), so a wrong BN formula shows.
  shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(1), x)
  leaves, treedef = jax.tree.flatten(shapes)
  variables = jax.tree.unflatten(treedef, [
      rng.uniform(0.5, 1.5, size=a.shape).astype(np.float32) * rng.choice([-1, 1], size=a.shape)
      for a in leaves])
  variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])

  @jax.jit
  def forward(v, x):
    staged = x
    for s in range(4):  # stage by stage, as the cross-stitch path runs it
      staged = model.apply(v, staged, train=False, start=s, stop=s + 1)
    return (model.apply(v, x, train=False), staged,
            _reference_forward(v["params"], v["batch_stats"], x, (1, 2, 1, 1)))

  got, staged, want = forward(variables, x)
  assert got.shape == (2, 32)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(np.asarray(staged), np.asarray(got), rtol=1e-5, atol=1e-6)
