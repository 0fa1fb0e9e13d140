"""Flax ResNet trunk (BasicBlock) with flat, ordered layer names.

The trunk follows torchvision's ResNet-34 layer for layer (7x7/2 stem conv, BatchNorm, ReLU, 3x3/2
max-pool, four stages of BasicBlocks with strides 1, 2, 2, 2) without the classifier, and ends
with an average pooling of the last feature map: on a 96 x 96 input that map is 3 x 3, so the
pooling is the paper's 3 x 3 average pool and gives the 512-d "activation" of ResNet-34.

Layer names are flat and zero-padded so that sorting them gives the forward order, which is what
makes "share the first k convolutions" well defined:

* ``conv00`` / ``bn00``: the stem convolution and its BatchNorm;
* ``conv01`` ... ``convNN`` / ``bn01`` ... ``bnNN``: the 3x3 convolutions of the residual blocks in
  forward order (two per BasicBlock; ResNet-34 has 32, its stages end at 6, 14, 26 and 32);
* ``proj{i:02d}`` / ``projbn{i:02d}``: the 1x1 projection shortcut of the block whose first 3x3
  convolution is ``conv{i:02d}`` (ResNet-34: ``proj07``, ``proj15``, ``proj27``).

So ResNet-34 has 33 convolutions plus 3 projections: 21,284,672 parameters, exactly torchvision's
``resnet34`` without its ``fc`` layer.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

NUM_STAGES = 4


def _conv_name(index: int) -> str:
  return f"conv{index:02d}"


def block_conv_indices(stage_sizes: Sequence[int]) -> list[tuple[int, int, int]]:
  """Forward-order layout of the residual blocks.

  Args:
    stage_sizes: number of BasicBlocks per stage.

  Returns:
    One ``(stage, first_conv_index, second_conv_index)`` per block, in forward order; conv index 0
    is the stem, so the first block's convolutions are 1 and 2.
  """
  layout = []
  index = 1
  for stage, size in enumerate(stage_sizes):
    for _ in range(size):
      layout.append((stage, index, index + 1))
      index += 2
  return layout


def conv_layer_names(stage_sizes: Sequence[int]) -> list[str]:
  """Names of every convolution of the trunk in forward order (projections after their block)."""
  names = [_conv_name(0)]
  for block, (stage, first, second) in enumerate(block_conv_indices(stage_sizes)):
    names += [_conv_name(first), _conv_name(second)]
    if _needs_projection(stage_sizes, stage, block):
      names.append(f"proj{first:02d}")
  return names


def stage_end_conv_counts(stage_sizes: Sequence[int]) -> list[int]:
  """Number of block convolutions up to the end of each stage (ResNet-34: [6, 14, 26, 32])."""
  counts, total = [], 0
  for size in stage_sizes:
    total += 2 * size
    counts.append(total)
  return counts


def _first_block_of_stage(stage_sizes: Sequence[int], stage: int) -> int:
  return sum(stage_sizes[:stage])


def _needs_projection(stage_sizes: Sequence[int], stage: int, block: int) -> bool:
  # Only the first block of stages 2-4 changes resolution and width (torchvision's downsample).
  return stage > 0 and block == _first_block_of_stage(stage_sizes, stage)


class ResNet(nn.Module):
  """ResNet trunk with BasicBlocks, returning pooled features.

  Attributes:
    stage_sizes: number of BasicBlocks in each of the four stages.
    num_filters: width of the first stage; stage s has ``num_filters * 2**s`` channels.
    dtype: computation dtype (parameters stay float32).
    bn_momentum: running-average decay of BatchNorm (0.9 = torchvision's momentum 0.1).
    bn_epsilon: BatchNorm epsilon (torchvision's 1e-5).
  """
  stage_sizes: Sequence[int]
  num_filters: int = 64
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @property
  def feature_dim(self) -> int:
    return self.num_filters * 2 ** (NUM_STAGES - 1)

  def _conv_bn(self, x, conv_name, bn_name, features, kernel, stride, padding, *, train):
    x = nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                use_bias=False, dtype=self.dtype, name=conv_name)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                        epsilon=self.bn_epsilon, dtype=self.dtype, name=bn_name)(x)

  @nn.compact
  def __call__(self, x, *, train: bool, start: int = 0, stop: int = NUM_STAGES, pool: bool = True):
    """Runs the trunk, or the stages ``start`` ... ``stop - 1`` of it.

    Cross-stitch networks mix the tasks' activations between stages, so the trunk can be run
    stage by stage: ``start == 0`` includes the stem and max-pool, ``stop == 4`` includes the final
    pooling. A full call (the default) maps images to features.

    Args:
      x: images (B, H, W, C), or the activation map entering stage ``start`` when ``start > 0``.
      train: whether BatchNorm uses (and updates) batch statistics.
      start: first stage to run (0-3).
      stop: one past the last stage to run (1-4).
      pool: with ``stop == 4``, whether to average-pool the last map into features.

    Returns:
      Features (B, feature_dim) when ``stop == 4`` and ``pool``, else the activation map after
      stage ``stop - 1`` (B, H', W', C').
    """
    if not 0 <= start < stop <= NUM_STAGES:
      raise ValueError(f"ResNet stages: expected 0 <= start < stop <= {NUM_STAGES}, got "
                       f"start={start}, stop={stop}")
    if len(self.stage_sizes) != NUM_STAGES:
      raise ValueError(f"ResNet stage_sizes: expected {NUM_STAGES} stages, got {self.stage_sizes}")
    conv = functools.partial(self._conv_bn, train=train)
    if start == 0:
      x = x.astype(self.dtype)
      x = nn.relu(conv(x, "conv00", "bn00", self.num_filters, 7, 2, ((3, 3), (3, 3))))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block, (stage, first, second) in enumerate(block_conv_indices(self.stage_sizes)):
      if not start <= stage < stop:
        continue
      width = self.num_filters * 2 ** stage
      stride = 2 if _needs_projection(self.stage_sizes, stage, block) else 1
      residual = x
      y = nn.relu(conv(x, _conv_name(first), f"bn{first:02d}", width, 3, stride, ((1, 1), (1, 1))))
      y = conv(y, _conv_name(second), f"bn{second:02d}", width, 3, 1, ((1, 1), (1, 1)))
      if _needs_projection(self.stage_sizes, stage, block):
        residual = conv(x, f"proj{first:02d}", f"projbn{first:02d}", width, 1, stride, "VALID")
      x = nn.relu(y + residual)
    if stop == NUM_STAGES and pool:
      # Global average = the paper's 3x3 average pool on 96x96 inputs (3x3 last map), and still
      # defined on the small inputs of tests and laptop configs.
      x = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    return x


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), num_filters=8)
