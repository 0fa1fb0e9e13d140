"""Gradient reversal, its schedule, and the domain discriminator losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_flax import adversarial as ada


def test_gradient_reversal_is_identity_forward_and_flips_gradient():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  c = jnp.arange(12.0).reshape(3, 4)
  f = jax.jit(lambda x, lam: jnp.sum(c * ada.gradient_reversal(x, lam)))
  np.testing.assert_array_equal(np.asarray(ada.gradient_reversal(x, jnp.float32(0.7))),
                                np.asarray(x))
  for lam in (0.0, 0.25, 1.0):
    gx, glam = jax.grad(f, argnums=(0, 1))(x, jnp.float32(lam))
    np.testing.assert_allclose(np.asarray(gx), -lam * np.asarray(c), rtol=1e-6)
    assert float(glam) == 0.0
  # Second order: reversing twice is the identity gradient.
  g2 = jax.grad(lambda x: jnp.sum(c * ada.gradient_reversal(ada.gradient_reversal(x, 1.0), 1.0)))(x)
  np.testing.assert_allclose(np.asarray(g2), np.asarray(c))


def test_grl_lambda_schedule():
  p = np.linspace(0.0, 1.0, 11)
  got = np.asarray(ada.grl_lambda(jnp.asarray(p)))
  np.testing.assert_allclose(got, 2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0, rtol=1e-6, atol=1e-7)
  assert got[0] == 0.0
  assert np.all(np.diff(got) > 0)
  assert 0.9999 < got[-1] < 1.0
  np.testing.assert_allclose(float(ada.grl_lambda(0.5)), np.tanh(2.5), rtol=1e-6)


@pytest.fixture(scope="module")
def disc_setup():
  rng = np.random.default_rng(1)
  fa = jnp.asarray(rng.normal(size=(5, 512)), jnp.float32)
  fb = jnp.asarray(rng.normal(size=(3, 512)) + 0.5, jnp.float32)
  params = ada.Discriminator().init(jax.random.key(0), fa)["params"]
  return params, fa, fb


def test_discriminator_architecture(disc_setup):
  params, fa, _ = disc_setup
  shapes = {name: layer["kernel"].shape for name, layer in params.items()}
  assert shapes == {"dense0": (512, 128), "dense1": (128, 64), "logits": (64, 2)}
  assert ada.Discriminator().apply({"params": params}, fa).shape == (5, 2)


def _reference_ce(params, fa, fb):
  # NumPy forward of the 512-128-64-2 MLP and the mean cross-entropy of the dataset identity.
  x = np.concatenate([np.asarray(fa), np.asarray(fb)]).astype(np.float64)
  for name in ("dense0", "dense1"):
    x = np.maximum(x @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"]), 0)
  logits = x @ np.asarray(params["logits"]["kernel"]) + np.asarray(params["logits"]["bias"])
  labels = np.r_[np.zeros(len(fa), int), np.ones(len(fb), int)]
  logz = np.log(np.exp(logits).sum(1))
  return np.mean(logz - logits[np.arange(len(labels)), labels])


def test_adversarial_loss_reverses_feature_gradient_only(disc_setup):
  params, fa, fb = disc_setup
  lam = jnp.float32(0.3)
  adv = jax.jit(jax.value_and_grad(ada.domain_adversarial_loss, argnums=(0, 1, 2)))
  plain = jax.jit(jax.value_and_grad(ada.discriminator_loss, argnums=(0, 1, 2)))
  confusion = jax.jit(jax.value_and_grad(ada.feature_confusion_loss, argnums=(0, 1, 2)))
  v_adv, (gp_adv, ga_adv, gb_adv) = adv(params, fa, fb, lam)
  v, (gp, ga, gb) = plain(params, fa, fb)
  v_conf, (gp_conf, ga_conf, _) = confusion(params, fa, fb)
  np.testing.assert_allclose(float(v), _reference_ce(params, fa, fb), rtol=1e-5)
  np.testing.assert_allclose(float(v_adv), float(v), rtol=1e-6)
  np.testing.assert_allclose(float(v_conf), -float(v), rtol=1e-6)
  # The discriminator learns normally; the features get -lambda times the gradient.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
               gp_adv, gp)
  np.testing.assert_allclose(np.asarray(ga_adv), -0.3 * np.asarray(ga), rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(np.asarray(gb_adv), -0.3 * np.asarray(gb), rtol=1e-5, atol=1e-9)
  assert float(jnp.abs(ga).max()) > 0
  # Alternating mode: the extractor objective leaves the discriminator alone.
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(gp_conf))
  np.testing.assert_allclose(np.asarray(ga_conf), -np.asarray(ga), rtol=1e-5, atol=1e-9)
