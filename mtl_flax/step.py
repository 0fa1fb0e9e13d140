"""The train state and the train step of the stacked networks.

The step takes the host's uint8 batch (`mtl_flax.data.device_pipeline.HostBatches`) and first
augments it on the device (`mtl_flax.data.device_augment.augment_batch`: flips, the landmark
task's affine transform and noise, with per-sample keys from the data key, the step number and
the sample index, so a resumed run draws what an uninterrupted one does), then trains on it.

Keys: the step's `rng` is split once into a model key (folded with the step number: the
randomized factorisations' keys) and the data augmentation's base key.

Mixed precision: the trunk computes in the model's dtype (`config.model.dtype`); the heads'
outputs are cast to float32 before the losses, and the parameters, their gradients, the
optimiser state and the trace-norm penalty (`trace_norm` factorises float32 kernels) stay
float32.

The loss of one step is

  sum over tasks of the task's loss (`mtl_flax.tasks`: CE of the expression logits; L1 or L2 of
  the landmarks per face, mean over the batch)
  + strength * trace norm of the stacked conv kernels (LAF / Tucker / TT)
  + the ADA term (gradient reversal with lambda_p = w (2 / (1 + exp(-10 p)) - 1), p = step / steps;
    or alternating discriminator / feature updates on even / odd steps).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtl_flax import adversarial
from mtl_flax import settings as settings_lib
from mtl_flax import tasks as tasks_lib
from mtl_flax import trace_norm
from mtl_flax.data import device_augment
from mtl_flax.models import multitask

landmark_loss = tasks_lib.landmark_loss


def init_state(model, tx, rng, image_shape) -> dict:
  """The train state {'step', 'params', 'batch_stats', 'opt_state'} (a plain pytree)."""
  dummy = jnp.zeros((model.num_tasks, 1) + tuple(image_shape), jnp.float32)
  variables = model.init(rng, dummy)
  return {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
          "batch_stats": variables["batch_stats"], "opt_state": tx.init(variables["params"])}


def make_train_step(model: multitask.MultiTaskNet, tx: optax.GradientTransformation, *,
                    num_steps: int, regulariser: str = "none", strength: float = 0.0,
                    gammas=None, svd_method: str = "exact", ada: bool = False,
                    ada_mode: str = "grl", ada_weight: float = 1.0,
                    landmark_loss_kind: str = "l1", nme_normalisation: str = "inter_pupil",
                    augment: settings_lib.AugmentSettings | None = None):
  """Builds `train_step(state, batch, rng) -> (state, metrics)` (to be jitted by the caller).

  `batch` is a host batch: images (T, B, S, S, 3) uint8 and the raw targets (see
  `device_pipeline`); the step augments it (when `augment.enabled`) and scales the images.

  Args:
    model: the stacked network.
    tx: its optimiser (from `optim.make_optimizer`).
    num_steps: total steps (the GRL schedule's progress is step / num_steps).
    regulariser: 'none', 'laf', 'tucker' or 'tt'.
    strength: weight of the trace-norm penalty.
    gammas: optional per-unfolding weights of the trace norm.
    svd_method: 'exact', 'gram', 'randomized' or 'newton_schulz' (see
      `trace_norm.nuclear_norm`).
    ada: add adversarial domain alignment between the two tasks' features.
    ada_mode: 'grl' (one gradient-reversal update) or 'alternating' (even steps update the
      discriminator on fixed features, odd steps the extractors against a fixed discriminator;
      build `tx` with `alternating_discriminator=True` so that the discriminator's momentum
      does not move it on odd steps).
    ada_weight: scale of the schedule lambda_p.
    landmark_loss_kind: 'l1' or 'l2'.
    nme_normalisation: 'inter_pupil' or 'inter_ocular' for the logged training NME.
    augment: the device augmentation's settings; None or disabled: none (the images are only
      scaled to the network's input range).

  Returns:
    The step function. `rng` is the run's step key (the same at every step); the step splits it
    into a model key, folded with the step number, and the augmentation's base key.
  """
  if regulariser not in settings_lib.REGULARISERS:
    raise ValueError(f"regulariser: expected none/laf/tucker/tt, got {regulariser!r}")
  if ada_mode not in settings_lib.ADA_MODES:
    raise ValueError(f"ada.mode: expected 'grl' or 'alternating', got {ada_mode!r}")
  kinds = tuple(tasks_lib.get(t) for t in model.tasks)
  if ada and len(kinds) != 2:
    raise ValueError("ADA needs exactly two tasks")
  options = tasks_lib.LossOptions(landmark_loss=landmark_loss_kind,
                                  nme_normalisation=nme_normalisation)
  augment = augment or settings_lib.AugmentSettings(enabled=False)
  augment_kwargs = dict(tasks=model.tasks, enabled=augment.enabled,
                        landmark_augment=augment.landmark_augment(),
                        expression_flip=augment.expression_flip)

  def loss_fn(params, batch_stats, batch, step, rng):
    features, outputs, new_stats = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch["images"], train=True,
        rng=jax.random.fold_in(rng, 2))  # the dropout key (read only by trunks with dropout)
    terms = {}
    loss = jnp.zeros((), jnp.float32)
    for t, kind in enumerate(kinds):
      task_loss, task_terms = kind.loss(outputs[t].astype(jnp.float32), batch[kind.batch_key],
                                        options)
      terms.update(task_terms)
      loss += task_loss
    if regulariser != "none":
      penalty = trace_norm.trace_norm_penalty(
          model.shareable_kernels(params), kind=regulariser, strength=strength, gammas=gammas,
          method=svd_method, key=jax.random.fold_in(rng, 1))
      terms["trace_norm_penalty"] = penalty
      loss += penalty
    if ada:
      progress = step.astype(jnp.float32) / max(num_steps, 1)
      lam = ada_weight * adversarial.grl_lambda(progress)
      disc = params["discriminator"]
      fa, fb = features[0], features[1]
      if ada_mode == "grl":
        ada_loss = adversarial.domain_adversarial_loss(disc, fa, fb, lam)
        terms["domain_ce"] = ada_loss
        loss += ada_loss
      else:
        disc_turn = (step % 2 == 0).astype(jnp.float32)
        domain_ce = adversarial.discriminator_loss(
            disc, jax.lax.stop_gradient(fa), jax.lax.stop_gradient(fb))
        confusion = adversarial.feature_confusion_loss(disc, fa, fb)
        terms["domain_ce"] = domain_ce
        loss += disc_turn * domain_ce + (1.0 - disc_turn) * lam * confusion
      terms["grl_lambda"] = lam
    terms["loss"] = loss
    return loss, (terms, new_stats)

  def train_step(state, batch, rng):
    step = state["step"]
    model_rng, data_rng = jax.random.split(rng)
    batch = device_augment.augment_batch(batch, data_rng, step, **augment_kwargs)
    step_rng = jax.random.fold_in(model_rng, step)
    grads, (terms, new_stats) = jax.grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"], batch, step, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    terms["grad_norm"] = optax.tree.norm(grads)
    new_state = {"step": step + 1, "params": params, "batch_stats": new_stats,
                 "opt_state": opt_state}
    return new_state, terms

  return train_step


def train_step_for(model, tx, compute: settings_lib.ComputeSettings):
  """`make_train_step` with a run's compute settings."""
  reg, ada = compute.regulariser, compute.ada
  return make_train_step(
      model, tx, num_steps=compute.num_steps, regulariser=reg.kind, strength=reg.strength,
      gammas=reg.gammas, svd_method=reg.method, ada=ada.enabled, ada_mode=ada.mode,
      ada_weight=ada.weight, landmark_loss_kind=compute.losses.landmark_loss,
      nme_normalisation=compute.losses.nme_normalisation, augment=compute.augment)
