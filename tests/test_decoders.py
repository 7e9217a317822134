"""Tests for perceiver_jax/models/decoders.py."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.models import decoders
from perceiver_jax.models import position_encoding


def test_projection_decoder_is_mean_then_linear():
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))

  def decode(z):
    decoder = decoders.ProjectionDecoder(3)
    query = decoder.decoder_query(jnp.ones((2, 7, 4)))
    assert query is None
    return decoder(query, z, is_training=False)

  fn = hk.transform(decode)
  params = fn.init(jax.random.PRNGKey(0), z)
  w = params["projection_decoder/~/logits"]["w"]
  np.testing.assert_array_equal(w, 0.0)  # zero-initialised head
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  expected = z.mean(axis=1) @ params["projection_decoder/~/logits"]["w"]
  expected += params["projection_decoder/~/logits"]["b"]
  np.testing.assert_allclose(fn.apply(params, None, z), expected, atol=1e-5)


def _basic(query_kwargs=None, **kwargs):
  def fn(inputs, z):
    dec = decoders.BasicDecoder(output_num_channels=3, num_z_channels=8, **kwargs)
    query = dec.decoder_query(inputs, **(query_kwargs or {}))
    return query, dec(query, z, is_training=False)

  return hk.transform(fn)


def test_basic_decoder_fourier_queries_on_a_subsample():
  inputs, z = jnp.ones((2, 7, 4)), jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  points = jnp.array([0, 5, 11])
  fourier = dict(num_bands=2, max_resolution=(3, 4))
  fn = _basic(
    position_encoding_type="fourier",
    output_index_dims=(3, 4),
    fourier_kwargs=fourier,
    query_kwargs={"subsampled_points": points},
  )
  params = fn.init(jax.random.PRNGKey(0), inputs, z)
  query, out = fn.apply(params, None, inputs, z)
  assert out.shape == (2, 3, 3)
  # Point 5 of a 3x4 grid is (1, 1); subsampled positions are -1 + 2 i / n.
  pos = np.array([[-1.0, -1.0], [-1 + 2 / 3, -1 + 2 / 4], [-1 + 4 / 3, -1 + 6 / 4]], np.float32)
  expected = position_encoding.fourier_features(jnp.asarray(pos), 2, (3, 4))
  np.testing.assert_allclose(query[0], expected, atol=1e-6)
  assert "basic_decoder/output" in params


def test_basic_decoder_trainable_queries_subsample_and_no_projection():
  inputs, z = jnp.ones((2, 7, 4)), jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  fn = _basic(
    output_index_dims=(6,),
    final_project=False,
    query_kwargs={"subsampled_points": jnp.array([1, 4])},
  )
  params = fn.init(jax.random.PRNGKey(0), inputs, z)
  query, out = fn.apply(params, None, inputs, z)
  pos_embs = params["basic_decoder/~/trainable_position_encoding"]["pos_embs"]
  np.testing.assert_array_equal(query[1], pos_embs[jnp.array([1, 4])])
  assert out.shape == (2, 2, 8)  # the query width, no output Linear
  assert "basic_decoder/output" not in params


def test_basic_decoder_query_mask_zeroes_attention_of_masked_queries():
  z = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 8))
  query = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 8))
  fn = hk.transform(
    lambda q, z, m: decoders.BasicDecoder(3, (3,), num_z_channels=8, final_project=False)(
      q, z, is_training=False, query_mask=m
    )
  )
  mask = jnp.array([[True, False, True]])
  params = fn.init(jax.random.PRNGKey(0), query, z, mask)
  masked = fn.apply(params, None, query, z, mask)
  z_changed = fn.apply(params, None, query, z * 3.0, mask)
  np.testing.assert_allclose(masked[0, 1], z_changed[0, 1], atol=1e-6)  # ignores the latents
  assert not np.allclose(masked[0, 0], z_changed[0, 0])


def test_postprocessors():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6))
  cls = hk.transform(lambda x: decoders.ClassificationPostprocessor(5)(x))
  params = cls.init(jax.random.PRNGKey(0), x)
  lin = params["classification_postprocessor/linear"]
  np.testing.assert_allclose(cls.apply(params, None, x), x[:, 0] @ lin["w"] + lin["b"], atol=1e-5)
  proj = hk.transform(lambda x: decoders.ProjectionPostprocessor(7)(x))
  assert proj.apply(proj.init(jax.random.PRNGKey(0), x), None, x).shape == (2, 4, 7)


def test_subsampled_trainable_queries_are_the_full_queries_at_those_points():
  inputs = jnp.ones((2, 7, 4))
  points = jnp.array([5, 0, 3])

  def queries(inputs):
    dec = decoders.BasicDecoder(output_num_channels=3, output_index_dims=(2, 3), num_z_channels=8)
    return dec.decoder_query(inputs), dec.decoder_query(inputs, subsampled_points=points)

  fn = hk.transform(queries)
  full, sub = fn.apply(fn.init(jax.random.PRNGKey(0), inputs), None, inputs)
  assert full.shape == (2, 6, 8) and sub.shape == (2, 3, 8)
  np.testing.assert_array_equal(sub, full[:, points])


def test_concat_preprocessed_input_puts_the_inputs_before_the_queries():
  inputs, z = jnp.ones((2, 4, 6)), jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  without_pos = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 3))
  fourier = dict(num_bands=2, max_resolution=(4,))
  fn = _basic(
    position_encoding_type="fourier",
    output_index_dims=(4,),
    fourier_kwargs=fourier,
    concat_preprocessed_input=True,
    query_kwargs={"inputs_without_pos": without_pos},
  )
  query, out = fn.apply(fn.init(jax.random.PRNGKey(0), inputs, z), None, inputs, z)
  grid = position_encoding.fourier_position_encoding((4,), 2, **fourier)  # [2, 4, 1 + 4]
  np.testing.assert_array_equal(query[..., :3], without_pos)
  np.testing.assert_allclose(query[..., 3:], grid, atol=1e-6)
  assert query.shape == (2, 4, 3 + 5) and out.shape == (2, 4, 3)


def test_classification_decoder_takes_the_uniform_query_then_decode_calls():
  inputs, z = jnp.ones((2, 7, 4)), jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))

  def decode(inputs, z):
    dec = decoders.ClassificationDecoder(num_classes=3, num_z_channels=8)
    query = dec.decoder_query(inputs, inputs_without_pos=inputs)
    return query, dec(query, z, is_training=False, query_mask=jnp.ones((2, 1), bool))

  fn = hk.transform(decode)
  params = fn.init(jax.random.PRNGKey(0), inputs, z)
  query, logits = fn.apply(params, None, inputs, z)
  pos_embs = params["classification_decoder/~/basic_decoder/~/trainable_position_encoding"]
  np.testing.assert_array_equal(query, jnp.broadcast_to(pos_embs["pos_embs"], (2, 1, 8)))
  assert logits.shape == (2, 3)


def test_projection_postprocessor_is_one_linear_per_point():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6))
  proj = hk.transform(lambda x: decoders.ProjectionPostprocessor(7)(x))
  params = proj.init(jax.random.PRNGKey(0), x)
  lin = params["projection_postprocessor/linear"]
  np.testing.assert_allclose(proj.apply(params, None, x), x @ lin["w"] + lin["b"], atol=1e-5)


def test_sentence_decoder_is_the_one_query_features_then_a_tanh_mlp():
  inputs, z = jnp.ones((2, 7, 4)), jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))

  def decode(inputs, z):
    dec = decoders.SentenceDecoder(num_outputs=3, query_channels=8, hidden_channels=6, num_heads=2)
    query = dec.decoder_query(inputs)
    features = dec.decoder(query, z, is_training=False)  # [B, 1, 8]: no output Linear
    return features, dec(query, z, is_training=False)

  fn = hk.transform(decode)
  params = fn.init(jax.random.PRNGKey(0), inputs, z)
  # The head's paths are the ones GLUE checkpoints and `pretrained.HEAD_MODULES` rely on.
  assert {m for m in params if not m.startswith("sentence_decoder/~/basic_decoder")} == {
    "sentence_decoder/hidden",
    "sentence_decoder/output",
  }
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  features, outputs = fn.apply(params, None, inputs, z)
  hidden, out = params["sentence_decoder/hidden"], params["sentence_decoder/output"]
  expected = jnp.tanh(features[:, 0] @ hidden["w"] + hidden["b"]) @ out["w"] + out["b"]
  assert features.shape == (2, 1, 8) and outputs.shape == (2, 3)
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
