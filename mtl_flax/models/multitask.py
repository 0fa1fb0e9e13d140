"""T task networks of identical architecture with parameters stacked along a leading task axis.

Every variant of the paper's Table 4 is one ``MultiTaskNet`` and runs in the same training loop:

The trunk is a ResNet (``'resnet34'``, ``'resnet18'``, ``'tiny'``) or one of the plain AlexNet- /
VGG-style networks of ``mtl_flax.models.plain_cnns`` (``PLAIN_BACKBONES``, Table 5's baselines).
Plain trunks have no stages, so they take ``'none'`` and ``'trace_norm'`` sharing only, and their
dropout needs a PRNG key in ``apply`` when training.

* ``'none'``: independent networks (T = 1 is single-task training);
* ``'trace_norm'``: independent networks coupled only through a tensor trace-norm penalty on
  ``shareable_kernels(params)`` (see ``mtl_flax.trace_norm``);
* ``'hard'``: the stem and the first ``hard_share_convs`` block convolutions are stored ONCE under
  ``params['shared_trunk']`` (no task axis) and broadcast to every task at apply time, so their
  gradient is the sum over tasks and they stay identical by construction;
* ``'cross_stitch'``: independent networks whose activations are mixed after each of the four
  stages by a learned T x T matrix (Misra et al., 2016).

Variables::

  {'params': {'trunk': stacked ResNet params (leading axis T),
              'shared_trunk': single-copy layers ('hard' only),
              'heads': {task: Dense params},
              'cross_stitch': {'stage0'..'stage3': (T, T)} ('cross_stitch' only),
              'discriminator': Discriminator params (adversarial=True only)},
   'batch_stats': {'trunk': stacked BatchNorm statistics (leading axis T; per task in every
                            variant, hard-shared layers included)}}

Heads: ``'expression'`` is a Dense layer giving ``num_classes`` logits; ``'landmarks'`` is a Dense
layer with ``2 * num_landmarks`` outputs squashed by a sigmoid into (0, 1), ordered
``(x0, y0, x1, y1, ...)`` so ``out.reshape(B, num_landmarks, 2)`` gives (x, y) per point, in the
image-size-normalised coordinates of the data pipeline.
"""
import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_flax import tasks as tasks_lib
from mtl_flax.adversarial import Discriminator
from mtl_flax.models import plain_cnns
from mtl_flax.models import resnet

SHARING_MODES = ("none", "trace_norm", "hard", "cross_stitch")
# Sharing modes that need a trunk made of stages (hard sharing counts block convolutions,
# cross-stitch units sit between stages): ResNet backbones only.
STAGED_SHARING = ("hard", "cross_stitch")
TASK_KINDS = tasks_lib.NAMES
RESNET_BACKBONES = {
    "resnet34": resnet.ResNet34,
    "resnet18": resnet.ResNet18,
    "tiny": resnet.ResNetTiny,
}
# Table 5's plain networks; the '_tiny' ones are the same layouts at CPU size.
PLAIN_BACKBONES = {
    "alexnet": plain_cnns.AlexNet96,
    "vgg": plain_cnns.VGG16_96,
    "vgg11": plain_cnns.VGG11_96,
    "alexnet_tiny": plain_cnns.AlexNetTiny,
    "vgg_tiny": plain_cnns.VGGTiny,
}
BACKBONES = tuple(RESNET_BACKBONES) + tuple(PLAIN_BACKBONES)
TASK_MAPS = ("unroll", "vmap")
CROSS_STITCH_SELF = 0.9
_CONV_NAME = re.compile(r"(conv|proj)\d+")
# The dropout key of a training apply given no key (see `MultiTaskNet.apply`).
_BATCH_DROPOUT_SEED = 0x5EED


def backbone(name: str, dtype=jnp.float32):
  """The single-task trunk called `name` (one of `BACKBONES`): a ResNet or a `PlainCNN`."""
  return _backbone(name, dtype)


def _backbone(name: str, dtype):
  if name in RESNET_BACKBONES:
    return RESNET_BACKBONES[name](dtype=dtype)
  if name in PLAIN_BACKBONES:
    return PLAIN_BACKBONES[name](dtype=dtype)
  raise ValueError(f"backbone: expected one of {BACKBONES}, got {name!r}")


def is_resnet(trunk) -> bool:
  """Whether `trunk` is made of ResNet stages (hard sharing and cross-stitch units need them)."""
  return isinstance(trunk, resnet.ResNet)


def conv_names(trunk) -> tuple[str, ...]:
  """The trunk's convolution names in forward order (a ResNet's projections included)."""
  if is_resnet(trunk):
    return tuple(resnet.conv_layer_names(trunk.stage_sizes))
  return tuple(trunk.conv_names)


def uses_dropout(trunk) -> bool:
  """Whether a training apply of `trunk` draws dropout masks (and so needs a key)."""
  return (not is_resnet(trunk) and bool(trunk.fc_widths) and trunk.dropout_rate > 0)


def batch_dropout_key(images: jax.Array) -> jax.Array:
  """A dropout key drawn from the pixels of a batch: a fresh mask for every new batch.

  For callers that pass no key to a training `MultiTaskNet.apply` (the train step passes one;
  fine-tuning and the benchmarks' bare applies do not): training batches differ at every step
  (fresh draws and augmentation), so the masks do too, and a resumed run recomputes them.
  """
  bits = jax.lax.bitcast_convert_type(
      jnp.stack([jnp.sum(images, dtype=jnp.float32),
                 jnp.sum(jnp.abs(images[..., :1]), dtype=jnp.float32)]), jnp.uint32)
  key = jax.random.key(_BATCH_DROPOUT_SEED)
  return jax.random.fold_in(jax.random.fold_in(key, bits[0]), bits[1])


def hard_shared_layers(stage_sizes, k: int) -> tuple[str, ...]:
  """Layer names (convs, their BatchNorms, projections) shared by hard sharing of k convolutions.

  ``k`` counts the 3x3 convolutions of the residual blocks in forward order (ResNet-34 has 32; its
  stages end at k = 6, 14, 26, 32, the paper's values). The stem is shared whenever k >= 1, and a
  block's 1x1 projection shortcut is shared together with the block's first convolution (they
  read the same input). k = 0 shares nothing; k = 32 shares the whole ResNet-34 trunk.

  Args:
    stage_sizes: the trunk's blocks per stage.
    k: number of block convolutions to share.

  Returns:
    Sorted layer names.
  """
  total = resnet.stage_end_conv_counts(stage_sizes)[-1]
  if not 0 <= k <= total:
    raise ValueError(f"hard_share_convs: expected 0 <= k <= {total} for stage sizes "
                     f"{tuple(stage_sizes)}, got {k}")
  if k == 0:
    return ()
  names = {"conv00", "bn00"}
  for i in range(1, k + 1):
    names |= {f"conv{i:02d}", f"bn{i:02d}"}
  for name in resnet.conv_layer_names(stage_sizes):
    if name.startswith("proj") and int(name[len("proj"):]) <= k:
      names |= {name, f"projbn{name[4:]}"}
  return tuple(sorted(names))


def cross_stitch_init(num_tasks: int, self_weight: float = CROSS_STITCH_SELF) -> jax.Array:
  """A T x T unit near identity: ``self_weight`` on the diagonal, the rest even; rows sum to 1."""
  if num_tasks == 1:
    return jnp.ones((1, 1), jnp.float32)
  off = (1.0 - self_weight) / (num_tasks - 1)
  return (jnp.full((num_tasks, num_tasks), off, jnp.float32)
          + (self_weight - off) * jnp.eye(num_tasks, dtype=jnp.float32))


@dataclasses.dataclass(frozen=True)
class MultiTaskNet:
  """Stacked task networks; every method is a pure function of its arguments (jit-friendly).

  Attributes:
    trunk: the per-task trunk (one module, vmapped over the task axis): a ResNet, or a
      ``plain_cnns.PlainCNN`` (sharing 'none' or 'trace_norm' only).
    tasks: task names in task-axis order, each in ``TASK_KINDS``.
    num_classes: classes of the expression head.
    num_landmarks: points of the landmark head (outputs 2 * num_landmarks values).
    sharing: one of ``SHARING_MODES``.
    hard_share_convs: k for ``sharing='hard'`` (see ``hard_shared_layers``).
    adversarial: whether ``init`` adds the ADA discriminator under ``params['discriminator']``.
    task_map: how ``apply`` maps the trunk over the task axis: 'unroll' (one call per task on its
      slice of the stacked parameters: the same convolutions as separate networks) or 'vmap'
      (``jax.vmap``; XLA turns the per-task kernels into grouped convolutions, which XLA:CPU runs
      several times slower). Both give the same numbers.
  """
  trunk: Any  # resnet.ResNet | plain_cnns.PlainCNN
  tasks: tuple[str, ...]
  num_classes: int = 13
  num_landmarks: int = 68
  sharing: str = "trace_norm"
  hard_share_convs: int = 0
  adversarial: bool = False
  task_map: str = "unroll"

  def __post_init__(self):
    if self.task_map not in TASK_MAPS:
      raise ValueError(f"task_map: expected one of {TASK_MAPS}, got {self.task_map!r}")
    if self.sharing not in SHARING_MODES:
      raise ValueError(f"sharing: expected one of {SHARING_MODES}, got {self.sharing!r}")
    if not self.tasks or len(set(self.tasks)) != len(self.tasks):
      raise ValueError(f"tasks: expected distinct task names, got {self.tasks}")
    for task in self.tasks:
      if task not in TASK_KINDS:
        raise ValueError(f"tasks: expected names from {TASK_KINDS}, got {task!r}")
    if self.sharing != "hard" and self.hard_share_convs:
      raise ValueError(f"hard_share_convs={self.hard_share_convs} needs sharing='hard', got "
                       f"sharing={self.sharing!r}")
    if not is_resnet(self.trunk):
      if self.sharing in STAGED_SHARING:
        raise ValueError(f"sharing={self.sharing!r} needs a ResNet backbone (stages to share or "
                         f"to mix between); {type(self.trunk).__name__} trunks take sharing "
                         f"'none' or 'trace_norm'")
      return
    hard_shared_layers(self.trunk.stage_sizes, self.hard_share_convs)  # validates k

  @property
  def num_tasks(self) -> int:
    return len(self.tasks)

  @property
  def feature_dim(self) -> int:
    return self.trunk.feature_dim

  @property
  def shared_layers(self) -> tuple[str, ...]:
    """Layers stored once under ``params['shared_trunk']`` (empty unless sharing='hard')."""
    if self.sharing != "hard":
      return ()
    return hard_shared_layers(self.trunk.stage_sizes, self.hard_share_convs)

  def head_dim(self, task: str) -> int:
    return tasks_lib.get(task).head_size(self.num_classes, self.num_landmarks)

  def _check_images(self, images):
    if images.ndim != 5 or images.shape[0] != self.num_tasks:
      raise ValueError(f"images: expected (T={self.num_tasks}, B, H, W, C), got {images.shape}")

  def init(self, rng: jax.Array, images: jax.Array) -> dict[str, Any]:
    """Initialises all variables.

    Args:
      rng: a PRNG key.
      images: (T, B, H, W, C) example inputs (only shapes matter).

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` as described in the module docstring.
    """
    self._check_images(images)
    k_trunk, k_heads, k_disc = jax.random.split(rng, 3)
    trunk_vars = jax.vmap(lambda k, x: self.trunk.init(k, x, train=False))(
        jax.random.split(k_trunk, self.num_tasks), images)
    trunk_params = dict(trunk_vars["params"])
    params = {}
    if self.shared_layers:
      params["shared_trunk"] = {name: jax.tree.map(lambda a: a[0], trunk_params.pop(name))
                                for name in self.shared_layers}
    params["trunk"] = trunk_params
    features = jnp.zeros((1, self.feature_dim), jnp.float32)
    params["heads"] = {
        task: nn.Dense(self.head_dim(task)).init(k, features)["params"]
        for task, k in zip(self.tasks, jax.random.split(k_heads, self.num_tasks))}
    if self.sharing == "cross_stitch":
      params["cross_stitch"] = {f"stage{s}": cross_stitch_init(self.num_tasks)
                                for s in range(resnet.NUM_STAGES)}
    if self.adversarial:
      params["discriminator"] = Discriminator().init(k_disc, features)["params"]
    return {"params": params, "batch_stats": {"trunk": trunk_vars["batch_stats"]}}

  def stacked_trunk_params(self, params) -> dict[str, Any]:
    """Every task's trunk parameters with a leading task axis (hard-shared layers broadcast)."""
    stacked = dict(params["trunk"])
    for name, layer in params.get("shared_trunk", {}).items():
      stacked[name] = jax.tree.map(
          lambda a: jnp.broadcast_to(a, (self.num_tasks,) + a.shape), layer)
    return stacked

  @property
  def conv_names(self) -> tuple[str, ...]:
    """The trunk's convolutions in forward order (the layer order of the Fig. 3 plots)."""
    return conv_names(self.trunk)

  def _run_trunk(self, trunk_params, batch_stats, x, *, train, start, stop, dropout_keys):
    def run(p, bs, xt, key):
      variables = {"params": p, "batch_stats": bs}
      if not train:
        return self.trunk.apply(variables, xt, train=False, start=start, stop=stop), bs
      rngs = {} if key is None else {"dropout": key}
      y, updates = self.trunk.apply(variables, xt, train=True, start=start, stop=stop,
                                    mutable=["batch_stats"], rngs=rngs)
      # Stage-wise calls update only their own layers; keep the others' statistics.
      return y, {**bs, **updates["batch_stats"]}
    if self.task_map == "vmap":
      if dropout_keys is None:
        return jax.vmap(lambda p, bs, xt: run(p, bs, xt, None))(trunk_params, batch_stats, x)
      return jax.vmap(run)(trunk_params, batch_stats, x, dropout_keys)
    take = lambda t: (lambda a: a[t])
    per_task = [run(jax.tree.map(take(t), trunk_params), jax.tree.map(take(t), batch_stats), x[t],
                    None if dropout_keys is None else dropout_keys[t])
                for t in range(self.num_tasks)]
    return jax.tree.map(lambda *a: jnp.stack(a), *per_task)

  def apply(self, variables, images: jax.Array, *, train: bool, rng: jax.Array | None = None):
    """Runs every task network on its own batch.

    Args:
      variables: from ``init`` (or updated).
      images: (T, B, H, W, C), task t's batch at index t.
      train: BatchNorm uses and updates batch statistics when True (and dropout, for trunks
        that have it, is active).
      rng: the dropout key of a training apply (split into one key per task); read only by
        trunks with dropout (``uses_dropout``). None draws it from the batch's pixels
        (``batch_dropout_key``), so callers that thread no key still get a new mask per batch.

    Returns:
      ``(features, outputs, new_batch_stats)``: features (T, B, feature_dim); outputs a tuple of T
      arrays, task t's head output (B, num_classes) logits or (B, 2 * num_landmarks) in (0, 1);
      new_batch_stats the updated ``batch_stats`` collection (the input one when not training).
    """
    self._check_images(images)
    params = variables["params"]
    trunk_params = self.stacked_trunk_params(params)
    stats = variables["batch_stats"]["trunk"]
    dropout_keys = None
    if train and uses_dropout(self.trunk):
      key = batch_dropout_key(images) if rng is None else rng
      dropout_keys = jax.random.split(key, self.num_tasks)
    if self.sharing == "cross_stitch":
      x = images
      for s in range(resnet.NUM_STAGES):
        x, stats = self._run_trunk(trunk_params, stats, x, train=train, start=s, stop=s + 1,
                                   dropout_keys=None)
        x = jnp.einsum("ts,s...->t...", params["cross_stitch"][f"stage{s}"].astype(x.dtype), x)
      features = x
    else:
      features, stats = self._run_trunk(trunk_params, stats, images, train=train, start=0,
                                        stop=resnet.NUM_STAGES, dropout_keys=dropout_keys)
    outputs = tuple(self.apply_head(params["heads"][task], task, features[t])
                    for t, task in enumerate(self.tasks))
    new_batch_stats = {"trunk": stats} if train else variables["batch_stats"]
    return features, outputs, new_batch_stats

  def apply_head(self, head_params, task: str, features: jax.Array) -> jax.Array:
    """Task head on (B, feature_dim) features: logits, or sigmoid landmark coordinates in (0, 1)."""
    out = nn.Dense(self.head_dim(task)).apply({"params": head_params}, features)
    return tasks_lib.get(task).head_output(out)

  def shareable_kernels(self, params) -> dict[str, jax.Array]:
    """Every per-task conv kernel of the trunk, stacked with the task axis LAST.

    Hard-shared layers are identical across tasks and are left out (nothing to couple).

    Args:
      params: the ``params`` collection.

    Returns:
      ``{layer name: (kh, kw, cin, cout, T)}`` in forward order.
    """
    return {name: jnp.moveaxis(layer["kernel"], 0, -1)
            for name, layer in sorted(params["trunk"].items())
            if _CONV_NAME.fullmatch(name)}

  def param_labels(self, params):
    """Optimiser group of every parameter: 'trunk', 'head', 'cross_stitch' or 'discriminator'.

    Use with ``optax.multi_transform(transforms, model.param_labels)`` (or optax.partition).
    """
    groups = {"trunk": "trunk", "shared_trunk": "trunk", "heads": "head",
              "cross_stitch": "cross_stitch", "discriminator": "discriminator"}
    labels = {}
    for key, subtree in params.items():
      if key not in groups:
        raise ValueError(f"params: unexpected top-level entry {key!r}; expected keys of "
                         f"{tuple(groups)}")
      labels[key] = jax.tree.map(lambda _, g=groups[key]: g, subtree)
    return labels

  def task_variables(self, variables, task: int) -> dict[str, Any]:
    """One task's un-stacked trunk variables, usable with ``self.trunk.apply`` (e.g. fine-tuning).

    For 'cross_stitch' this is the task's own column of the network without the mixing.

    Args:
      variables: the stacked variables.
      task: index on the task axis.

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` of a single ResNet.
    """
    take = lambda a: a[task]
    return {"params": jax.tree.map(take, self.stacked_trunk_params(variables["params"])),
            "batch_stats": jax.tree.map(take, variables["batch_stats"]["trunk"])}


def build_multitask(*, backbone: str = "resnet34", num_classes: int = 13, num_landmarks: int = 68,
                    sharing: str = "trace_norm", hard_share_convs: int = 0,
                    num_tasks: int | None = None, tasks: tuple[str, ...] | None = None,
                    adversarial: bool = False, task_map: str = "unroll",
                    dtype=jnp.float32) -> MultiTaskNet:
  """Builds a MultiTaskNet.

  Args:
    backbone: 'resnet34' (the paper's), 'resnet18', 'tiny' (stages 1,1,1,1, width 8; CPU), or a
      plain network of ``PLAIN_BACKBONES`` ('alexnet', 'vgg' (VGG-16), 'vgg11', and the
      CPU-sized 'alexnet_tiny', 'vgg_tiny'; sharing 'none' or 'trace_norm').
    num_classes: expression classes.
    num_landmarks: landmark points.
    sharing: 'none', 'trace_norm', 'hard' or 'cross_stitch'.
    hard_share_convs: k for 'hard' (block convolutions shared; ResNet-34: 6, 14, 26, 32).
    num_tasks: T; defaults to ``len(tasks)``, or 2.
    tasks: task names in task-axis order; defaults to the first T of ('expression', 'landmarks').
    adversarial: add the ADA discriminator's parameters.
    task_map: 'unroll' (default) or 'vmap', see ``MultiTaskNet``.
    dtype: computation dtype of the trunk.

  Returns:
    The model.
  """
  if tasks is None:
    count = 2 if num_tasks is None else num_tasks
    if not 1 <= count <= len(TASK_KINDS):
      raise ValueError(f"num_tasks: expected 1 or 2 without explicit tasks, got {num_tasks}")
    tasks = TASK_KINDS[:count]
  tasks = tuple(tasks)
  if num_tasks is not None and num_tasks != len(tasks):
    raise ValueError(f"num_tasks={num_tasks} does not match tasks={tasks}")
  return MultiTaskNet(trunk=_backbone(backbone, dtype), tasks=tasks, num_classes=num_classes,
                      num_landmarks=num_landmarks, sharing=sharing,
                      hard_share_convs=hard_share_convs, adversarial=adversarial,
                      task_map=task_map)
