"""Adversarial domain alignment (ADA): gradient reversal, its schedule, the domain discriminator.

A discriminator predicts which dataset a penultimate feature comes from; it minimises the
domain cross-entropy while the feature extractors maximise it. With the gradient-reversal layer
both happen in one backward pass of ``domain_adversarial_loss``: the discriminator parameters get
the ordinary gradient of the cross-entropy, the features get ``-lambda`` times it (Ganin &
Lempitsky, 2015). For alternating updates, ``discriminator_loss`` (no reversal) trains the
discriminator on fixed features and ``feature_confusion_loss`` trains the extractors against a
fixed discriminator.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@jax.custom_vjp
def _reverse(x, lam):
  del lam
  return x


def _reverse_fwd(x, lam):
  return x, lam


def _reverse_bwd(lam, g):
  # lam is a schedule value, not a parameter: it gets no gradient.
  return (-lam.astype(g.dtype) * g, jnp.zeros_like(lam))


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: jax.Array, lam) -> jax.Array:
  """Identity in the forward pass; multiplies the incoming gradient by ``-lam`` backwards.

  Args:
    x: any array (the features).
    lam: scalar weight of the reversed gradient; pass an array under jit (a traced schedule
      value), so changing it does not recompile.

  Returns:
    ``x`` unchanged.
  """
  return _reverse(x, jnp.asarray(lam, jnp.float32))


def grl_lambda(progress) -> jax.Array:
  """Ganin's schedule ``lambda_p = 2 / (1 + exp(-10 p)) - 1`` of the reversal weight.

  Args:
    progress: training progress p in [0, 1] (step / total steps).

  Returns:
    lambda_p: 0 at p = 0, rising smoothly towards 1 (0.9866 at p = 0.5, 0.99991 at p = 1).
  """
  p = jnp.asarray(progress, jnp.float32)
  return 2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0


class Discriminator(nn.Module):
  """Domain classifier MLP: features -> 128 -> 64 -> 2 logits with ReLU (512-128-64-2 on ResNet-34).

  Attributes:
    hidden: widths of the hidden layers.
    num_domains: number of datasets to tell apart.
  """
  hidden: Sequence[int] = (128, 64)
  num_domains: int = 2

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = features.astype(jnp.float32)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_domains, name="logits")(x)


def domain_labels(batch_a: int, batch_b: int) -> jax.Array:
  """Dataset identity labels: 0 for the first batch, 1 for the second."""
  return jnp.concatenate([jnp.zeros((batch_a,), jnp.int32), jnp.ones((batch_b,), jnp.int32)])


def discriminator_loss(disc_params, features_a: jax.Array, features_b: jax.Array, *,
                       discriminator: nn.Module | None = None) -> jax.Array:
  """Mean softmax cross-entropy of the dataset identity, without gradient reversal.

  The discriminator's own objective; for alternating updates call it on
  ``jax.lax.stop_gradient`` features.

  Args:
    disc_params: the discriminator's ``params`` collection.
    features_a: features of dataset 0, (B_a, D).
    features_b: features of dataset 1, (B_b, D).
    discriminator: the module (default ``Discriminator()``).

  Returns:
    Scalar cross-entropy (log 2 = 0.693 for a discriminator that cannot tell the datasets apart).
  """
  disc = discriminator if discriminator is not None else Discriminator()
  features = jnp.concatenate([features_a, features_b], axis=0)
  logits = disc.apply({"params": disc_params}, features)
  labels = domain_labels(features_a.shape[0], features_b.shape[0])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def domain_adversarial_loss(disc_params, features_a: jax.Array, features_b: jax.Array,
                            lam: jax.Array, *, discriminator: nn.Module | None = None) -> jax.Array:
  """Domain cross-entropy on gradient-reversed features (minimise it jointly with the task losses).

  The discriminator parameters receive the gradient of the cross-entropy (they learn to tell the
  datasets apart), the features receive ``-lam`` times it (the extractors learn to confuse it).

  Args:
    disc_params: the discriminator's ``params`` collection.
    features_a: features of dataset 0, (B_a, D).
    features_b: features of dataset 1, (B_b, D).
    lam: reversal weight, e.g. ``grl_lambda(step / total_steps)`` (an array).
    discriminator: the module (default ``Discriminator()``).

  Returns:
    Scalar cross-entropy.
  """
  return discriminator_loss(disc_params, gradient_reversal(features_a, lam),
                            gradient_reversal(features_b, lam), discriminator=discriminator)


def feature_confusion_loss(disc_params, features_a: jax.Array, features_b: jax.Array, *,
                           discriminator: nn.Module | None = None) -> jax.Array:
  """The extractors' objective for alternating updates: minus the domain cross-entropy.

  The discriminator parameters are held fixed (stop_gradient), so this only moves the features.

  Args:
    disc_params: the discriminator's ``params`` collection.
    features_a: features of dataset 0, (B_a, D).
    features_b: features of dataset 1, (B_b, D).
    discriminator: the module (default ``Discriminator()``).

  Returns:
    Scalar ``-cross_entropy``.
  """
  return -discriminator_loss(jax.lax.stop_gradient(disc_params), features_a, features_b,
                             discriminator=discriminator)
