"""Parity of the package's forward pass and Fourier features with the NumPy reference.

`tests/reference_numpy.py` is an independent float64 reading of the spec; these tests run
our jitted float32 model on tiny variants of the `testing` config and compare logits.
"""

import functools

import jax
import numpy as np
import pytest
import reference_numpy

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.models import position_encoding

# The model runs in float32 and the reference in float64. With O(1) activations, float32
# rounding (~1e-7 relative) accumulated over the ~10 layers of these tiny models stays
# around 1e-6; a genuine mistake (a wrong LayerNorm, head split, residual or weight set)
# moves logits by O(0.1). 1e-4 separates the two with margin on both sides.
LOGITS_ATOL = 1e-4
# Fourier features are sin/cos of float32 products up to pi * max_resolution / 2 ~ 16.
FEATURES_ATOL = 1e-5

VARIANTS = {
  "classification_query_residual": {},
  "classification_no_query_residual": {"decoder.use_query_residual": False, "decoder.num_heads": 2},
  "projection_interleaved_shared": {
    "num_cross_attends": 3,
    "num_blocks": 3,
    "decoder.type": "projection",
  },
  "unshared": {
    "num_cross_attends": 3,
    "num_blocks": 3,
    "share_cross_attend_weights": False,
    "share_latent_block_weights": False,
  },
  "placement_start": {
    "num_cross_attends": 2,
    "num_blocks": 3,
    "cross_attend_placement": "start",
    "decoder.type": "projection",
  },
  "chunked": {"attention_chunk_size": 100},
  "chunked_remat": {"attention_chunk_size": 100, "remat": True},
}


def tiny_config(overrides: dict):
  cfg = registry.get_model_config("testing")
  for field, value in overrides.items():
    *parents, leaf = field.split(".")
    node = functools.reduce(lambda c, name: c[name], parents, cfg)
    node[leaf] = value
  return cfg


def perturb(params, seed: int = 0):
  """Gives every constant-initialised leaf (LayerNorm scale/offset, biases, the zero
  projection head) random values, so that mistakes in them cannot hide."""
  rng = np.random.default_rng(seed)
  out = {}
  for module in sorted(params):
    out[module] = {}
    for name in sorted(params[module]):
      leaf = np.asarray(params[module][name])
      if np.all(leaf == leaf.flat[0]):
        leaf = leaf + rng.normal(0.0, 0.5, leaf.shape).astype(leaf.dtype)
      out[module][name] = leaf
  return out


def init_perturbed(cfg, seed: int = 0):
  """(params, state) initialised with a fixed key at is_training=True, then perturbed."""
  # Chunking and remat change how the forward pass runs, not the parameters; eager Haiku
  # init under remat is slow, so initialise without them.
  init_cfg = cfg.copy_and_resolve_references()
  init_cfg.attention_chunk_size, init_cfg.remat = 0, False
  forward = model.build_model(init_cfg)
  params, state = forward.init(jax.random.PRNGKey(seed), model.dummy_inputs(cfg), is_training=True)
  return perturb(params, seed), state


def eval_forward(cfg, params, state, images: np.ndarray) -> np.ndarray:
  forward = model.build_model(cfg)
  apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
  return np.asarray(apply(params, state, images))


def random_images(cfg, batch_size: int = 2, seed: int = 1) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch_size, *cfg.input_shape)).astype(np.float32)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_matches_reference(variant):
  cfg = tiny_config(VARIANTS[variant])
  params, state = init_perturbed(cfg)
  images = random_images(cfg)
  ours = eval_forward(cfg, params, state, images)
  expected = reference_numpy.reference_forward(params, cfg, images)
  assert ours.shape == expected.shape == (2, cfg.num_classes)
  assert ours.dtype == np.float32
  # The comparison only means something if the logits vary across classes and images.
  assert np.std(expected) > 0.1
  assert np.max(np.abs(expected[0] - expected[1])) > 1e-2
  diff = np.max(np.abs(ours - expected))
  assert diff < LOGITS_ATOL, f"{variant}: max |ours - reference| = {diff:.3g}"


@pytest.mark.parametrize(
  "concat_pos, sine_only, max_resolution",
  [
    (True, False, None),
    (False, False, (6, 10, 14)),
    (True, True, (6, 10, 14)),
    (False, True, None),
  ],
)
def test_fourier_features_match_reference_3d(concat_pos, sine_only, max_resolution):
  index_dims, num_bands = (3, 4, 5), 3
  ours = position_encoding.fourier_position_encoding(
    index_dims,
    2,
    num_bands,
    max_resolution=max_resolution,
    concat_pos=concat_pos,
    sine_only=sine_only,
  )
  expected = reference_numpy.fourier_features(
    index_dims, num_bands, max_resolution, concat_pos, sine_only
  )
  width = 3 * num_bands * (1 if sine_only else 2) + (3 if concat_pos else 0)
  assert expected.shape == (60, width)
  assert ours.shape == (2, 60, width)
  np.testing.assert_allclose(np.asarray(ours[0]), expected, rtol=0, atol=FEATURES_ATOL)
  np.testing.assert_array_equal(np.asarray(ours[0]), np.asarray(ours[1]))


def test_fourier_features_spec_example():
  """Spec section 5: an 8x8 grid with K=4 gives 18 channels, first row [-1, -1, ...]."""
  ours = np.asarray(position_encoding.fourier_position_encoding((8, 8), 1, 4))[0]
  expected = reference_numpy.fourier_features((8, 8), 4)
  assert ours.shape == expected.shape == (64, 18)
  assert position_encoding.num_fourier_channels(2, 4) == 18
  # Bands are 1, 2, 3, 4 (max_resolution 8, Nyquist 4); at x = -1, sin(-pi f) = 0 and
  # cos(-pi f) = (-1)^f, the same for both dimensions.
  first_row = np.array([-1, -1] + [0] * 8 + [-1, 1, -1, 1] * 2, np.float64)
  np.testing.assert_allclose(expected[0], first_row, atol=1e-12)
  np.testing.assert_allclose(ours[0], first_row, atol=FEATURES_ATOL)
  np.testing.assert_allclose(ours[-1, :2], [1, 1])
  np.testing.assert_allclose(ours, expected, rtol=0, atol=FEATURES_ATOL)
