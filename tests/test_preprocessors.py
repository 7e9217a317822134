"""Tests for perceiver_jax/models/preprocessors.py: the image input paths."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.models import input_array
from perceiver_jax.models import preprocessors


def test_space_to_depth_groups_each_patch():
  images = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  patches = preprocessors.space_to_depth(images, 2)
  assert patches.shape == (2, 2, 3, 12)
  # Patch (1, 2) of example 1 holds pixels rows 2-3, columns 4-5, row-major, channels last.
  expected = np.asarray(images[1, 2:4, 4:6, :]).reshape(-1)
  np.testing.assert_array_equal(patches[1, 1, 2], expected)
  with pytest.raises(ValueError, match="image size 4x6 is not divisible by patch size 4"):
    preprocessors.space_to_depth(images, 4)


def _preprocess(images, is_training=True, **kwargs):
  fn = hk.transform_with_state(
    lambda x: preprocessors.ImagePreprocessor(**kwargs)(x, is_training=is_training)
  )
  params, state = fn.init(jax.random.PRNGKey(0), images)
  (inputs, without_pos), new_state = fn.apply(params, state, None, images)
  return params, state, new_state, input_array.dense(inputs), without_pos


def test_pixels_with_fourier_features():
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
  fourier = dict(num_bands=4, max_resolution=(8, 8), concat_pos=True, sine_only=False)
  params, _, _, inputs, without_pos = _preprocess(
    images, prep_type="pixels", spatial_downsample=1, fourier_kwargs=fourier
  )
  assert params == {}
  assert inputs.shape == (2, 64, 3 + 18)
  np.testing.assert_array_equal(inputs[..., :3], images.reshape(2, 64, 3))
  np.testing.assert_array_equal(without_pos, images.reshape(2, 64, 3))
  np.testing.assert_array_equal(inputs[0, 0, 3:5], [-1.0, -1.0])  # first pixel at (-1, -1)
  np.testing.assert_array_equal(inputs[0, -1, 3:5], [1.0, 1.0])  # last pixel at (+1, +1)


def test_pixels_spatial_downsample_strides():
  images = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 8, 3))
  *_, inputs, _ = _preprocess(
    images, prep_type="pixels", spatial_downsample=2, fourier_kwargs=dict(num_bands=2)
  )
  np.testing.assert_array_equal(inputs[..., :3], images[:, ::2, ::2].reshape(1, 16, 3))


def test_patches_with_linear():
  images = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 8, 3))
  params, _, _, inputs, _ = _preprocess(
    images,
    prep_type="patches",
    spatial_downsample=4,
    num_channels=16,
    conv_after_patching=True,
    fourier_kwargs=dict(num_bands=2),
  )
  assert params["image_preprocessor/patches_linear"]["w"].shape == (48, 16)
  assert inputs.shape == (1, 4, 16 + 10)


def test_conv_stem_shapes_and_batchnorm_state():
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
  params, state, new_state, inputs, _ = _preprocess(
    images, prep_type="conv", spatial_downsample=4, num_channels=8, fourier_kwargs=dict(num_bands=4)
  )
  assert params["image_preprocessor/~/conv2_d_downsample/~/conv"]["w"].shape == (7, 7, 3, 8)
  assert inputs.shape == (2, 8 * 8, 8 + 18)  # 32 -> conv/2 -> pool/2 = 8
  assert np.all(np.asarray(inputs[..., :8]) >= 0)  # ReLU before the pool
  ema = "image_preprocessor/~/conv2_d_downsample/~/batchnorm/~/mean_ema"
  assert int(new_state[ema]["counter"]) == int(state[ema]["counter"]) + 1
  assert not np.allclose(new_state[ema]["hidden"], state[ema]["hidden"])


def test_conv_requires_a_power_of_four():
  with pytest.raises(ValueError, match="power of 4, got 2"):
    _preprocess(jnp.ones((1, 8, 8, 3)), prep_type="conv", spatial_downsample=2)


def test_add_requires_equal_widths():
  with pytest.raises(ValueError, match="position encoding width 18 to equal the input width 3"):
    _preprocess(
      jnp.ones((1, 8, 8, 3)),
      prep_type="pixels",
      spatial_downsample=1,
      concat_or_add_pos="add",
      fourier_kwargs=dict(num_bands=4),
    )


def test_fixed_permutation_is_seeded_and_shared_by_all_examples():
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 3))
  kwargs = dict(prep_type="pixels", spatial_downsample=1, fourier_kwargs=dict(num_bands=2))
  *_, plain, _ = _preprocess(images, **kwargs)
  *_, permuted, _ = _preprocess(images, permutation_seed=3, **kwargs)
  perm = preprocessors.fixed_permutation(16, 3)
  assert not np.array_equal(perm, np.arange(16))
  np.testing.assert_array_equal(permuted, plain[:, perm])  # positions travel with their pixels
  np.testing.assert_array_equal(perm, preprocessors.fixed_permutation(16, 3))


def test_perceiver_is_invariant_to_the_pixel_permutation():
  """Paper Table 2: with position features attached first, the Perceiver sees the same set."""
  cfg = registry.get_model_config("testing")
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, *cfg.input_shape))
  forward = model.build_model(cfg)
  params, state = forward.init(jax.random.PRNGKey(1), images, is_training=True)
  cfg.input.permute_pixels = True
  permuted = model.build_model(cfg)
  logits, _ = forward.apply(params, state, None, images, is_training=False)
  logits_permuted, _ = permuted.apply(params, state, None, images, is_training=False)
  np.testing.assert_allclose(logits, logits_permuted, atol=1e-5)
