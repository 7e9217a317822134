"""Tests for perceiver_jax/models/attention.py."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.models import attention


def _apply_block(block_fn, *inputs, is_training=False, rng=None):
  fn = hk.transform(block_fn)
  params = fn.init(jax.random.PRNGKey(0), *inputs)
  return params, fn.apply(params, rng, *inputs)


def test_cross_attention_shapes_names_and_eval_without_rng():
  q = jnp.ones((2, 8, 32))
  kv = jax.random.normal(jax.random.PRNGKey(1), (2, 50, 12))

  def block(q, kv):
    return attention.CrossAttention(num_heads=1, dropout_prob=0.1)(q, kv, is_training=False)

  params, out = _apply_block(block, q, kv)
  assert out.shape == (2, 8, 32)
  shapes = {k: {n: p.shape for n, p in v.items()} for k, v in params.items()}
  assert shapes["cross_attention/attention/linear"]["w"] == (32, 12)  # Q: query -> kv width
  assert shapes["cross_attention/attention/linear_1"]["w"] == (12, 12)  # K
  assert shapes["cross_attention/attention/linear_2"]["w"] == (12, 12)  # V
  assert shapes["cross_attention/attention/linear_3"]["w"] == (12, 32)  # output
  assert shapes["cross_attention/layer_norm"]["scale"] == (32,)  # query LN
  assert shapes["cross_attention/layer_norm_1"]["scale"] == (12,)  # kv LN
  assert shapes["cross_attention/mlp/linear"]["w"] == (32, 32)  # widening factor 1


def test_cross_attention_without_query_residual_differs_by_the_query():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 16))
  kv = jax.random.normal(jax.random.PRNGKey(1), (1, 9, 16))

  def block(residual):
    def fn(q, kv):
      return attention.CrossAttention(num_heads=2, use_query_residual=residual)(
        q, kv, is_training=False
      )

    return hk.transform(fn)

  params = block(True).init(jax.random.PRNGKey(0), q, kv)
  with_res = block(True).apply(params, None, q, kv)
  without = block(False).apply(params, None, q, kv)
  # x = q + a vs x = a; both then add MLP(LN(x)), so only the LN-invariant part cancels.
  assert not np.allclose(with_res, without)


def test_self_attention_training_dropout_needs_rng_only_when_active():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))

  def fn(x, is_training):
    return attention.SelfAttention(num_heads=4, dropout_prob=0.2)(x, is_training=is_training)

  t = hk.transform(fn)
  params = t.init(jax.random.PRNGKey(0), x, True)
  eval_out = t.apply(params, None, x, False)
  train_a = t.apply(params, jax.random.PRNGKey(1), x, True)
  train_b = t.apply(params, jax.random.PRNGKey(2), x, True)
  assert not np.allclose(train_a, train_b)
  with pytest.raises(ValueError):
    t.apply(params, None, x, True)
  assert eval_out.shape == x.shape


def test_heads_must_divide_channels():
  def fn(x):
    return attention.SelfAttention(num_heads=3)(x, is_training=False)

  with pytest.raises(ValueError, match="qk_channels=16 is not divisible by num_heads=3"):
    hk.transform(fn).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 16)))
