"""The Table 2 baselines (perceiver_jax/models/baselines.py) and their registry variants."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax import losses
from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.modalities import image
from perceiver_jax.models import baselines

FMNIST = [
  "fmnist_perceiver_ff",
  "fmnist_perceiver_learned",
  "fmnist_convnet_ff",
  "fmnist_vit_ff",
  "fmnist_transformer_ff",
]


def _perturbed(params, scale=0.05, seed=3):
  """Every weight moved off its initial value (zero-initialised heads give zero logits)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  noise = [scale * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
  return jax.tree.unflatten(treedef, [x + n for x, n in zip(leaves, noise, strict=True)])


def _logits(cfg, params, state, images):
  logits, _ = model.build_model(cfg).apply(params, state, None, images, is_training=False)
  return np.asarray(logits)


def _init(cfg, images):
  params, state = model.build_model(cfg).init(jax.random.PRNGKey(0), images, is_training=True)
  return _perturbed(params), state


@pytest.mark.parametrize("name", FMNIST)
def test_variant_builds_and_classifies(name):
  cfg = registry.get_model_config(name)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 1))
  params, state = _init(cfg, images)
  logits = _logits(cfg, params, state, images)
  assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
  assert model.input_channels(cfg) == 1 + 2 * (2 * 8) + 2  # a pixel and its 8-band features


def test_input_grids():
  assert image.input_grid(registry.get_model_config("fmnist_convnet_ff")) == (28, 28)
  assert image.input_grid(registry.get_model_config("fmnist_transformer_ff")) == (14, 14)
  assert image.input_grid(registry.get_model_config("io_conv")) == (56, 56)


def _permuted(cfg):
  cfg = cfg.copy_and_resolve_references()
  cfg.input.permute_pixels = True
  return cfg


def test_transformer_ignores_the_order_of_its_tokens():
  """No position information besides the features each pixel carries: permuting the pixels
  (after the features are attached) leaves the logits unchanged."""
  cfg = registry.get_model_config("fmnist_transformer_ff")
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 1))
  params, state = _init(cfg, images)
  np.testing.assert_allclose(
    _logits(_permuted(cfg), params, state, images),
    _logits(cfg, params, state, images),
    rtol=1e-4,
    atol=1e-5,
  )


@pytest.mark.parametrize("name", ["fmnist_convnet_ff", "fmnist_vit_ff"])
def test_convnet_and_vit_see_the_permutation(name):
  """Convolutions and patches group neighbouring elements: a permutation changes them."""
  cfg = registry.get_model_config(name)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 1))
  params, state = _init(cfg, images)
  plain = _logits(cfg, params, state, images)
  permuted = _logits(_permuted(cfg), params, state, images)
  assert np.abs(plain - permuted).max() > 1e-3


def test_to_grid_keeps_the_arrival_order():
  inputs = jnp.arange(2 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 1)
  grid = baselines.to_grid(inputs, (2, 3))
  np.testing.assert_array_equal(grid[0, 1, :, 0], [3, 4, 5])
  with pytest.raises(ValueError, match="6 inputs do not fill a 4x2 grid"):
    baselines.to_grid(inputs, (4, 2))


def test_validation_names_field_and_value():
  cfg = registry.get_model_config("fmnist_vit_ff")
  cfg.baseline.patch_size = 5
  with pytest.raises(ValueError, match=r"config.model.baseline.patch_size=5: does not divide"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("fmnist_convnet_ff")
  cfg.architecture = "mlp"
  with pytest.raises(ValueError, match=r"config.model.architecture='mlp': expected one of"):
    model.validate_model_config(cfg)


@pytest.mark.parametrize(
  "name, learning_rate", [("fmnist_convnet_ff", 1e-3), ("fmnist_vit_ff", 3e-4)]
)
def test_a_few_steps_fit_a_fixed_batch(name, learning_rate):
  """Training works through BatchNorm state (ConvNet) and attention (ViT): the loss falls."""
  cfg = registry.get_model_config(name)
  forward = model.build_model(cfg)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(16, 28, 28, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 16))
  params, state = forward.init(jax.random.PRNGKey(0), images, is_training=True)
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  def loss_fn(params, state):
    logits, state = forward.apply(params, state, None, images, is_training=True)
    return losses.softmax_cross_entropy(logits, labels), state

  @jax.jit
  def step(params, state, opt_state):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, loss

  history = []
  for _ in range(20):
    params, state, opt_state, loss = step(params, state, opt_state)
    history.append(float(loss))
  assert history[-1] < 0.75 * history[0], history
