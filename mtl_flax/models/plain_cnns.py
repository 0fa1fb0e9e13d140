"""AlexNet- and VGG-style trunks for 96 x 96 faces (Table 5's plain CNN baselines).

Each network is a :class:`PlainCNN`: a stack of convolutions (each followed by BatchNorm and ReLU)
and max-pools, then the fully connected layers of the original classifier without its last
layer. Like :class:`mtl_flax.models.resnet.ResNet` it maps images to features and leaves the task
head (a Dense layer) to the caller, so a single-task expression network is trunk + head.

Adaptation to 96 x 96 inputs (the originals take 224 x 224):

* ``AlexNet96``: the 11 x 11 / 4 first convolution becomes 5 x 5 / 2 (the same ~0.43 scale as
  96 / 224) and the 3 x 3 / 2 max-pools pad their input ('SAME'), so the maps are 48 -> 24 -> 12
  -> 6: the last map is 6 x 6 x 256, exactly AlexNet's on 224 x 224, and fc6 keeps its
  9216 -> 4096 shape. Widths (64, 192, 384, 256, 256) and fc (4096, 4096) are torchvision's
  AlexNet; 56,986,560 parameters (torchvision's 57.0 M without its last layer).
* ``VGG16_96`` / ``VGG11_96``: VGG's 3 x 3 convolutions and five 2 x 2 / 2 pools unchanged, which
  leaves a 3 x 3 x 512 map on 96 x 96 (ResNet-34's last map has the same size); it is flattened
  (4608) into fc6 instead of torchvision's 7 x 7 adaptive pool (25088). VGG-16: 50,378,688
  parameters, most of the difference to torchvision's 134 M in fc6.

Two changes apply to both: every convolution is followed by BatchNorm (torchvision's ``*_bn``
variants; AlexNet's local response normalisation is replaced by it), so the networks train from
scratch with the ResNets' optimiser settings and carry a ``batch_stats`` collection like them;
convolutions then have no bias. Dropout (rate 0.5, before each fully connected layer, as in
the originals) is active only with ``train=True`` and then needs a ``'dropout'`` PRNG stream:
``apply(..., train=True, rngs={'dropout': key}, mutable=['batch_stats'])``.

Layer names are flat and ordered like the ResNet's: ``conv00 ...`` / ``bn00 ...`` in forward order
and ``fc00, fc01`` for the fully connected layers, so ``MultiTaskNet.shareable_kernels`` (which
matches ``conv\\d+``) finds every convolution.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_flax.models import resnet

NUM_STAGES = resnet.NUM_STAGES  # accepted for the ResNet call signature; see PlainCNN.__call__

# A layer is ("conv", features, kernel, stride) or ("pool", window, stride, padding).
ALEXNET_96_LAYERS = (
    ("conv", 64, 5, 2), ("pool", 3, 2, "SAME"),
    ("conv", 192, 5, 1), ("pool", 3, 2, "SAME"),
    ("conv", 384, 3, 1), ("conv", 256, 3, 1), ("conv", 256, 3, 1), ("pool", 3, 2, "SAME"))
# CPU-sized: the same layout at 1/8 of the widths.
ALEXNET_TINY_LAYERS = (
    ("conv", 8, 5, 2), ("pool", 3, 2, "SAME"),
    ("conv", 24, 5, 1), ("pool", 3, 2, "SAME"),
    ("conv", 48, 3, 1), ("conv", 32, 3, 1), ("conv", 32, 3, 1), ("pool", 3, 2, "SAME"))
_VGG_POOL = ("pool", 2, 2, "VALID")


def vgg_layers(config: Sequence[Any]) -> tuple[tuple, ...]:
  """Layers of a torchvision-style VGG configuration (widths, with 'M' for a 2 x 2 max-pool)."""
  return tuple(_VGG_POOL if item == "M" else ("conv", int(item), 3, 1) for item in config)


VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
                "M")


class PlainCNN(nn.Module):
  """Convolutions + BatchNorm + ReLU and max-pools, then fully connected layers, giving features.

  Attributes:
    layers: ``("conv", features, kernel, stride)`` (padding ``kernel // 2`` on each side) or
      ``("pool", window, stride, padding)`` entries in forward order.
    fc_widths: widths of the fully connected layers after flattening the last map; features are
      the last one's ReLU output. Empty: features are the globally average-pooled last map.
    dropout_rate: dropout before each fully connected layer when training.
    dtype: computation dtype (parameters stay float32; features are returned as float32).
    bn_momentum: running-average decay of BatchNorm (0.9 = torchvision's momentum 0.1).
    bn_epsilon: BatchNorm epsilon.
  """
  layers: Sequence[tuple]
  fc_widths: Sequence[int] = (4096, 4096)
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @property
  def feature_dim(self) -> int:
    if self.fc_widths:
      return int(self.fc_widths[-1])
    return int([layer for layer in self.layers if layer[0] == "conv"][-1][1])

  @property
  def stage_sizes(self):
    """Refused: a plain network has no stages (asked for by hard sharing up to a stage)."""
    raise ValueError("model.hard_share_convs / sharing: a plain AlexNet- / VGG-style backbone has "
                     "no stages to share or to mix between; use a ResNet backbone, or sharing "
                     "'none' or 'trace_norm'")

  @property
  def conv_names(self) -> tuple[str, ...]:
    """Names of the convolutions in forward order (``conv00``, ``conv01``, ...)."""
    count = sum(layer[0] == "conv" for layer in self.layers)
    return tuple(f"conv{i:02d}" for i in range(count))

  @nn.compact
  def __call__(self, x, *, train: bool, start: int = 0, stop: int = NUM_STAGES, pool: bool = True):
    """Maps images to features.

    Args:
      x: images (B, H, W, C).
      train: BatchNorm uses (and updates) batch statistics and dropout is active; needs the
        ``'dropout'`` PRNG stream when ``dropout_rate > 0`` and there are fully connected layers.
      start: must be 0; with ``stop``, the ResNet trunk's signature (a plain network has no
        stages to run separately, so cross-stitch units cannot be placed between them).
      stop: must be ``NUM_STAGES``.
      pool: False returns the last convolutional map instead of the features.

    Returns:
      Features (B, feature_dim) float32, or the last map (B, H', W', C') when ``pool`` is False.
    """
    if (start, stop) != (0, NUM_STAGES):
      raise ValueError(f"PlainCNN runs whole: expected start=0, stop={NUM_STAGES}, got "
                       f"start={start}, stop={stop} (cross-stitch sharing needs a ResNet trunk)")
    x = x.astype(self.dtype)
    conv_index = 0
    for layer in self.layers:
      if layer[0] == "conv":
        _, features, kernel, stride = layer
        pad = kernel // 2
        x = nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                    padding=((pad, pad), (pad, pad)), use_bias=False, dtype=self.dtype,
                    name=f"conv{conv_index:02d}")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=self.bn_epsilon, dtype=self.dtype,
                         name=f"bn{conv_index:02d}")(x)
        x = nn.relu(x)
        conv_index += 1
      elif layer[0] == "pool":
        _, window, stride, padding = layer
        x = nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)
      else:
        raise ValueError(f"PlainCNN layers: expected 'conv' or 'pool' entries, got {layer!r}")
    if not pool:
      return x
    if not self.fc_widths:
      return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.fc_widths):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"fc{i:02d}")(x))
    return x.astype(jnp.float32)


AlexNet96 = functools.partial(PlainCNN, layers=ALEXNET_96_LAYERS)
VGG11_96 = functools.partial(PlainCNN, layers=vgg_layers(VGG11_CONFIG))
VGG16_96 = functools.partial(PlainCNN, layers=vgg_layers(VGG16_CONFIG))
# CPU-sized variants for tests and laptop configs.
AlexNetTiny = functools.partial(PlainCNN, layers=ALEXNET_TINY_LAYERS, fc_widths=(64, 64))
VGGTiny = functools.partial(PlainCNN, layers=vgg_layers((8, "M", 16, "M", 32, 32, "M", 64, "M")),
                            fc_widths=(64, 64))
