"""Frozen settings of an MTL run, read once from its ml_collections config at the entry.

Library functions take these objects, never the raw config. They are hashable, so the jitted
functions of a run are cached on them (`mtl_flax.functions.compiled`): two configs that differ
only in fields that do not change the computation (logging cadence, data paths) share one
compilation, and nothing is keyed on hand-picked JSON fields.
"""
from __future__ import annotations

import dataclasses

from mtl_flax import tasks as tasks_lib
from mtl_flax.data import augment as augment_lib
from mtl_flax.models import multitask
from mtl_flax.models import resnet

REGULARISERS = ("none", "laf", "tucker", "tt")
ADA_MODES = ("grl", "alternating")
OPTIMIZERS = ("sgd", "adam")
DTYPES = ("float32", "bfloat16")  # computation dtypes of the trunk (`config.model.dtype`)


def resolve_hard_share_convs(backbone: str, value: int) -> int:
  """k of hard sharing; a negative value -s means "up to the end of stage s" of the backbone."""
  if value >= 0:
    return int(value)
  stage_sizes = multitask.backbone(backbone).stage_sizes
  ends = resnet.stage_end_conv_counts(stage_sizes)
  stage = -value
  if not 1 <= stage <= len(ends):
    raise ValueError(f"model.hard_share_convs={value}: stage {stage} is not in 1..{len(ends)}")
  return ends[stage - 1]


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """The stacked network (`config.model`, `config.tasks`, `config.ada.enabled`)."""
  backbone: str
  num_classes: int
  num_landmarks: int
  sharing: str
  hard_share_convs: int  # resolved: a block-convolution count >= 0
  tasks: tuple[str, ...]
  adversarial: bool
  # The activations' dtype; parameters, optimiser state, losses and trace norms stay float32,
  # so a checkpoint does not depend on it (it is not part of `architecture`).
  dtype: str = "float32"

  def architecture(self) -> dict:
    """The metadata saved with every checkpoint (a checkpoint of another one is refused)."""
    return {"backbone": self.backbone, "sharing": self.sharing,
            "hard_share_convs": self.hard_share_convs, "tasks": list(self.tasks),
            "ada": self.adversarial}


@dataclasses.dataclass(frozen=True)
class RegulariserSettings:
  """The trace-norm penalty (`config.regulariser`)."""
  kind: str = "none"
  strength: float = 0.0
  method: str = "exact"  # how each unfolding's nuclear norm is computed (trace_norm.METHODS)
  gammas: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class AdaSettings:
  """Adversarial domain alignment (`config.ada`)."""
  enabled: bool = False
  mode: str = "grl"
  weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """The optimiser (`config.optimizer`)."""
  name: str = "sgd"
  learning_rate: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 0.0
  discriminator_learning_rate: float = 0.01


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """The training augmentation (`config.augment`), run on the device inside the train step
  (`mtl_flax.data.device_augment`); disabled: the images only get the input scaling."""
  enabled: bool = False
  expression_flip: float = 0.5
  landmark_flip: float = 0.5
  max_rotation_deg: float = 15.0
  scale_range: tuple[float, float] = (0.9, 1.1)
  max_shift: float = 0.05
  noise_std: float = 3.0

  def landmark_augment(self) -> augment_lib.LandmarkAugment:
    """The landmark task's ranges as `augment.LandmarkAugment`."""
    return augment_lib.LandmarkAugment(
        flip_probability=self.landmark_flip, max_rotation_deg=self.max_rotation_deg,
        scale_range=tuple(self.scale_range), max_shift=self.max_shift, noise_std=self.noise_std)


@dataclasses.dataclass(frozen=True)
class ComputeSettings:
  """Everything the compiled functions of a run depend on (the cache key of `functions`)."""
  model: ModelSettings
  regulariser: RegulariserSettings
  ada: AdaSettings
  optimizer: OptimizerSettings
  losses: tasks_lib.LossOptions
  image_size: int
  num_steps: int
  prng_impl: str
  # In the compiled step since the augmentation runs on the device.
  augment: AugmentSettings = AugmentSettings()


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """One task's data (`config.data.<task>`)."""
  source: str
  path: str
  test_path: str
  num: int
  test_fraction: float
  face_detection: bool
  cache_dir: str = ""  # '' = the user's cache folder, 'none' = no cache (see data.cache)
  extra_paths: str = ""  # comma-separated extra training folders ('300w')
  synthetic: str = "independent"  # the synthetic data variant (`config.data.synthetic`)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """A whole training run."""
  compute: ComputeSettings
  seed: int
  batch_size: int
  eval_batch_size: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  data: tuple[tuple[str, DataSettings], ...]  # (task, settings) in task order
  embedding_method: str
  embedding_max_points: int
  plots: bool

  @property
  def tasks(self) -> tuple[str, ...]:
    return self.compute.model.tasks

  @property
  def augment(self) -> AugmentSettings:
    return self.compute.augment

  def data_for(self, task: str) -> DataSettings:
    return dict(self.data)[task]


def _check_choice(field: str, value, choices):
  if value not in choices:
    raise ValueError(f"{field}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def model_settings(config) -> ModelSettings:
  """`ModelSettings` of a config from configs/mtl.py (also an MTL run's saved config.json)."""
  tasks = tuple(config.tasks)
  for task in tasks:
    tasks_lib.get(task)
  backbone = config.model.backbone
  _check_choice("model.backbone", backbone, multitask.BACKBONES)
  # A run saved before the option existed computed in float32.
  dtype = config.model.get("dtype", "float32")
  _check_choice("model.dtype", dtype, DTYPES)
  return ModelSettings(
      backbone=backbone, num_classes=int(config.model.num_classes),
      num_landmarks=int(config.model.num_landmarks), sharing=config.model.sharing,
      hard_share_convs=resolve_hard_share_convs(backbone, int(config.model.hard_share_convs)),
      tasks=tasks, adversarial=bool(config.ada.enabled), dtype=dtype)


def compute_settings(config) -> ComputeSettings:
  """The `ComputeSettings` of a config (also an MTL run's saved config.json)."""
  reg = config.regulariser
  _check_choice("regulariser.kind", reg.kind, REGULARISERS)
  _check_choice("ada.mode", config.ada.mode, ADA_MODES)
  _check_choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
  _check_choice("landmark_loss", config.landmark_loss, ("l1", "l2"))
  _check_choice("nme_normalisation", config.nme_normalisation, ("inter_pupil", "inter_ocular"))
  opt = config.optimizer
  return ComputeSettings(
      model=model_settings(config),
      regulariser=RegulariserSettings(
          kind=reg.kind, strength=float(reg.strength), method=reg.method,
          gammas=None if reg.gammas is None else tuple(float(g) for g in reg.gammas)),
      ada=AdaSettings(enabled=bool(config.ada.enabled), mode=config.ada.mode,
                      weight=float(config.ada.weight)),
      optimizer=OptimizerSettings(
          name=opt.name, learning_rate=float(opt.learning_rate), momentum=float(opt.momentum),
          weight_decay=float(opt.weight_decay),
          discriminator_learning_rate=float(opt.discriminator_learning_rate)),
      losses=tasks_lib.LossOptions(landmark_loss=config.landmark_loss,
                                   nme_normalisation=config.nme_normalisation),
      image_size=int(config.image_size), num_steps=int(config.num_steps),
      prng_impl=config.get("prng_impl", "threefry2x32"), augment=augment_settings(config))


def augment_settings(config) -> AugmentSettings:
  """`AugmentSettings` of `config.augment`."""
  aug = config.augment
  return AugmentSettings(
      enabled=bool(aug.enabled), expression_flip=float(aug.expression_flip),
      landmark_flip=float(aug.landmark_flip), max_rotation_deg=float(aug.max_rotation_deg),
      scale_range=tuple(float(x) for x in aug.scale_range), max_shift=float(aug.max_shift),
      noise_std=float(aug.noise_std))


def train_settings(config) -> TrainSettings:
  """Reads a config from configs/mtl.py into `TrainSettings` (the one place that reads it)."""
  compute = compute_settings(config)
  data = tuple(
      (task, DataSettings(source=config.data[task].source, path=config.data[task].path,
                          test_path=config.data[task].test_path, num=int(config.data[task].num),
                          test_fraction=float(config.data[task].test_fraction),
                          face_detection=bool(config.data[task].face_detection),
                          cache_dir=str(config.data[task].get("cache_dir", "")),
                          extra_paths=str(config.data[task].get("extra_paths", "")),
                          synthetic=config.data[task].get("synthetic", "independent")))
      for task in compute.model.tasks)
  return TrainSettings(
      compute=compute, seed=int(config.seed), batch_size=int(config.batch_size),
      eval_batch_size=int(config.eval_batch_size), log_every=int(config.log_every),
      eval_every=int(config.eval_every), checkpoint_every=int(config.checkpoint_every),
      keep_checkpoints=int(config.keep_checkpoints), data=data, embedding_method=config.embedding.method,
      embedding_max_points=int(config.embedding.max_points), plots=bool(config.plots))
