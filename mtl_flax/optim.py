"""The optimiser of the stacked networks: one transform for the networks, one for the discriminator."""
from __future__ import annotations

import optax

from mtl_flax import settings as settings_lib
from mtl_flax.models import multitask


def make_optimizer(model: multitask.MultiTaskNet, optimizer: settings_lib.OptimizerSettings, *,
                   alternating_discriminator: bool = False) -> optax.GradientTransformation:
  """Optax optimiser: one transform for the networks, its own group for the discriminator.

  Args:
    model: the stacked network (its `param_labels` assign the groups).
    optimizer: the optimiser settings (`OptimizerSettings`, or `config.optimizer`: anything
      with its fields).
    alternating_discriminator: for ADA with alternating updates: the discriminator's transform
      runs on even steps only; on odd steps (the extractors' turn) its parameters and its
      optimiser state (momentum, Adam moments) stay exactly as they are
      (`optax.transforms.conditionally_mask`).

  Returns:
    The transformation; its state depends on `alternating_discriminator`.
  """
  def base(lr):
    if optimizer.name == "sgd":
      tx = optax.sgd(lr, momentum=optimizer.momentum)
    elif optimizer.name == "adam":
      tx = optax.adam(lr)
    else:
      raise ValueError(f"optimizer.name: expected 'sgd' or 'adam', got {optimizer.name!r}")
    if optimizer.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(optimizer.weight_decay), tx)
    return tx

  network = base(optimizer.learning_rate)
  discriminator = base(optimizer.discriminator_learning_rate)
  if alternating_discriminator:
    # The update counter starts at 0 with the train step, so even counts are even steps.
    discriminator = optax.transforms.conditionally_mask(
        discriminator, lambda count: count % 2 == 0)
  transforms = {"trunk": network, "head": network, "cross_stitch": network,
                "discriminator": discriminator}
  return optax.multi_transform(transforms, model.param_labels)


def optimizer_for(model: multitask.MultiTaskNet,
                  compute: settings_lib.ComputeSettings) -> optax.GradientTransformation:
  """`make_optimizer` for a run's compute settings (its optimiser and its ADA mode)."""
  return make_optimizer(model, compute.optimizer, alternating_discriminator=bool(
      compute.ada.enabled and compute.ada.mode == "alternating"))
