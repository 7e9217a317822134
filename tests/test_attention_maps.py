"""perceiver_jax/tools/attention_maps.py: recorded cross-attention weights and their image maps."""

import jax
import numpy as np

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.tools import attention_maps


def _setup(permuted=False):
  cfg = registry.get_model_config("fmnist_perceiver_ff")
  cfg.input.permute_pixels = permuted
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 1))
  params, state = model.build_model(cfg).init(jax.random.PRNGKey(0), images, is_training=True)
  return cfg, params, state, images


def test_weights_are_a_softmax_over_the_inputs_per_cross_attend():
  cfg, params, state, images = _setup()
  weights = attention_maps.cross_attention_weights(cfg, params, state, images)
  assert len(weights) == cfg.num_cross_attends == 2
  for w in weights:
    assert w.shape == (2, cfg.num_cross_attend_heads, cfg.num_latents, 784)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-5)
  # The recording leaves the model's outputs as they were.
  forward = model.build_model(cfg)
  logits, _ = forward.apply(params, state, None, images, is_training=False)
  assert np.all(np.isfinite(logits))


def test_maps_of_a_permuted_model_are_unpermuted_back_onto_the_grid():
  """Cross-attention is equivariant to the order of the inputs: the same parameters on
  permuted pixels give the same maps once they are put back on the image grid."""
  cfg, params, state, images = _setup()
  cfg_perm, *_ = _setup(permuted=True)
  plain = attention_maps.cross_attention_weights(cfg, params, state, images)[0]
  permuted = attention_maps.cross_attention_weights(cfg_perm, params, state, images)[0]
  assert not np.allclose(plain, permuted)
  np.testing.assert_allclose(
    attention_maps.to_grid_maps(permuted, cfg_perm),
    attention_maps.to_grid_maps(plain, cfg),
    rtol=1e-4,
    atol=1e-7,
  )
