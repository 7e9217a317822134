"""Tests for perceiver_jax/models/input_array.py: the input array held as pixels and positions."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.models import input_array
from perceiver_jax.models import position_encoding

FOURIER = dict(num_bands=5, max_resolution=(4, 6), concat_pos=True, sine_only=False)


def _array(batch=2):
  content = jax.random.normal(jax.random.PRNGKey(0), (batch, 24, 3))
  positions = position_encoding.grid_positions((4, 6))
  encode = position_encoding.fourier_encoder((4, 6), **FOURIER)
  return input_array.InputArray(content, positions, encode), content


def test_dense_is_the_content_then_the_grid_fourier_features():
  array, content = _array()
  features = position_encoding.fourier_position_encoding((4, 6), 2, **FOURIER)
  expected = np.concatenate([content, features], axis=-1)
  assert array.shape == (2, 24, 3 + 2 + 2 * 2 * 5) == expected.shape
  assert array.dtype == jnp.float32
  np.testing.assert_array_equal(array.dense(), expected)
  np.testing.assert_array_equal(input_array.dense(array), expected)
  plain = jnp.ones((2, 3, 4))
  assert input_array.dense(plain) is plain


def test_a_slice_of_the_parts_builds_that_slice_of_the_array():
  array, _ = _array()
  parts = jax.tree.map(lambda x: x[:, 5:13], array.parts)
  np.testing.assert_array_equal(array.build(parts), array.dense()[:, 5:13])
  parts, build = input_array.parts_and_build(array)
  np.testing.assert_array_equal(build(parts), array.dense())


def test_cast_and_permutation():
  array, _ = _array()
  low = array.astype(jnp.bfloat16)
  assert low.dtype == jnp.bfloat16 and low.dense().dtype == jnp.bfloat16
  np.testing.assert_array_equal(low.dense(), array.dense().astype(jnp.bfloat16))
  perm = np.random.default_rng(0).permutation(24)
  np.testing.assert_array_equal(array.take(perm).dense(), array.dense()[:, perm])


def test_it_passes_through_jit_and_eval_shape_as_a_pytree():
  array, _ = _array()
  out = jax.jit(lambda a: a.astype(jnp.bfloat16))(array)
  assert isinstance(out, input_array.InputArray) and out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out.dense(), array.dense().astype(jnp.bfloat16))
  shapes = jax.eval_shape(lambda a: a, array)
  assert shapes.shape == array.shape == (2, 24, 25)
  assert len(jax.tree_util.tree_leaves(array)) == 2


def test_mismatched_parts_raise():
  _, content = _array()
  positions = position_encoding.grid_positions((4, 5))
  encode = position_encoding.fourier_encoder((4, 5), **FOURIER)
  with pytest.raises(ValueError, match=r"the same M, got \(2, 24, 3\) and \(1, 20, 2\)"):
    input_array.InputArray(content, positions, encode)
  with pytest.raises(ValueError, match=r"got \(2, 24, 3\) and \(20, 2\)"):
    input_array.InputArray(content, positions[0], encode)
  positions = jnp.zeros((3, 24, 2))
  with pytest.raises(ValueError, match="positions of batch 3 for content of batch 2"):
    input_array.InputArray(content, positions, encode)


def _train_step_hlo(cfg, batch=2):
  forward = model.build_model(cfg)
  images = jnp.zeros((batch, *cfg.input_shape))
  params, state = jax.eval_shape(
    lambda: forward.init(jax.random.PRNGKey(0), images[:1], is_training=True)
  )

  def loss(params, state, images):
    logits, _ = forward.apply(params, state, None, images, is_training=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(batch, int)).mean()

  return jax.jit(jax.grad(loss)).lower(params, state, images).compile().as_text()


def test_chunked_training_step_never_holds_the_whole_input_array():
  """The chunked cross-attends build each chunk of the input array from the pixels and
  the positions: no [B, M, C] buffer exists in the compiled step, forward or backward.
  Unchunked, the step holds it (the keys and values of the whole array are made once)."""
  cfg = registry.get_model_config("perceiver_ff")
  cfg.input_shape = (32, 32, 3)  # 1,024 inputs
  cfg.input.fourier.num_bands = 8  # 3 + 2 + 2 * 2 * 8 = 37 channels
  cfg.num_latents, cfg.num_latent_channels = 16, 32
  cfg.num_blocks, cfg.num_self_attends_per_block, cfg.num_cross_attends = 2, 1, 2
  cfg.num_self_attend_heads = 2
  whole = re.compile(r"f32\[2,1024,37\]")
  cfg.attention_chunk_size = 0
  assert whole.search(_train_step_hlo(cfg))
  cfg.attention_chunk_size = 256
  assert not whole.search(_train_step_hlo(cfg))
