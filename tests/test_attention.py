"""Tests for perceiver_jax/models/attention.py."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.models import attention


def _qkv(key, batch=2, num_q=5, num_kv=37, heads=2, dk=4, dv=3):
  kq, kk, kv = jax.random.split(key, 3)
  q = jax.random.normal(kq, (batch, num_q, heads, dk))
  k = jax.random.normal(kk, (batch, num_kv, heads, dk))
  v = jax.random.normal(kv, (batch, num_kv, heads, dv))
  return q, k, v


def _numpy_attend(q, k, v, mask):
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(np.asarray(mask)[:, None], logits, -1e30)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhnm,bmhd->bnhd", weights, v)
  if mask is not None:
    out = np.where(np.asarray(mask).any(-1)[:, :, None, None], out, 0.0)
  return out.reshape(*out.shape[:2], -1)


def _mask_with_empty_rows(key, batch=2, num_q=5, num_kv=37):
  mask = jax.random.bernoulli(key, 0.6, (batch, num_q, num_kv))
  return mask.at[0, 1].set(False).at[1, 4].set(False)  # two queries see no key


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 8, 16, 37, 64])
def test_attend_matches_numpy_reference(use_mask, chunk_size):
  q, k, v = _qkv(jax.random.PRNGKey(0))
  mask = _mask_with_empty_rows(jax.random.PRNGKey(1)) if use_mask else None
  out = attention.attend(q, k, v, mask, chunk_size=chunk_size)
  assert out.shape == (2, 5, 6)
  np.testing.assert_allclose(out, _numpy_attend(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_bfloat16_attention_has_float32_logits(chunk_size):
  """Logits of about 50: rounded to bfloat16 (steps of 0.25) they would move the
  weights by up to 25% (max error 0.09 here); computed in float32 from the bfloat16 q
  and k, only the casts of the weights and the output to bfloat16 remain (0.008)."""
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(jax.random.PRNGKey(0)))
  q = q * 25.0
  out = attention.attend(q, k, v, chunk_size=chunk_size)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), _numpy_attend(q, k, v, None), atol=0.03)


def test_layer_norm_statistics_are_float32():
  """Equal to the float32 LayerNorm rounded once: with bfloat16 statistics, `x - mean`
  of inputs near 100 would keep only about two significant digits."""
  x = (100.0 + jax.random.normal(jax.random.PRNGKey(0), (4, 64))).astype(jnp.bfloat16)
  scale = jax.random.uniform(jax.random.PRNGKey(1), (64,))
  offset = jnp.full((64,), 0.5)
  out = attention.layer_norm(x, scale, offset)
  assert out.dtype == jnp.bfloat16
  expected = attention.layer_norm(x.astype(jnp.float32), scale, offset).astype(jnp.bfloat16)
  np.testing.assert_array_equal(out, expected)


def test_fully_masked_query_rows_output_zeros():
  q, k, v = _qkv(jax.random.PRNGKey(0))
  mask = _mask_with_empty_rows(jax.random.PRNGKey(1))
  for chunk_size in (None, 8):
    out = attention.attend(q, k, v, mask, chunk_size=chunk_size)
    np.testing.assert_array_equal(out[0, 1], 0.0)
    np.testing.assert_array_equal(out[1, 4], 0.0)
    assert np.abs(np.asarray(out[0, 0])).sum() > 0


def test_chunked_equals_plain_with_large_inputs_and_gradients():
  """Chunked and plain paths agree to < 1e-5 in float32, values and gradients."""
  q, k, v = _qkv(jax.random.PRNGKey(2), batch=2, num_q=16, num_kv=1000, heads=1, dk=32, dv=32)
  mask = jax.random.bernoulli(jax.random.PRNGKey(3), 0.9, (2, 16, 1000)).at[1, 3].set(False)

  def loss(q, k, v, chunk_size):
    out = attention.attend(q, k, v, mask, chunk_size=chunk_size)
    return jnp.sum(out * jnp.cos(out))

  plain = attention.attend(q, k, v, mask)
  chunked = attention.attend(q, k, v, mask, chunk_size=128)
  assert float(jnp.max(jnp.abs(plain - chunked))) < 1e-5
  grads_plain = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, None)
  grads_chunked = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, 128)
  for a, b in zip(grads_plain, grads_chunked, strict=True):
    assert float(jnp.max(jnp.abs(a - b))) < 1e-5


def test_chunked_attention_never_builds_full_logits():
  """The compiled chunked path holds no [B, H, N, M] buffer; the plain path does."""
  q, k, v = _qkv(jax.random.PRNGKey(0), batch=1, num_q=128, num_kv=16384, heads=1, dk=8, dv=8)

  def temp_bytes(chunk_size):
    fn = jax.jit(lambda q, k, v: attention.attend(q, k, v, chunk_size=chunk_size))
    return fn.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

  full_logits = 128 * 16384 * 4
  assert temp_bytes(None) >= full_logits
  assert temp_bytes(512) < full_logits / 2


def test_attention_dropout_needs_rng_and_scales_weights():
  q, k, v = _qkv(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="needs an rng"):
    attention.attend(q, k, v, dropout_rate=0.5)
  # Dropout is unbiased: averaged over many keys, the output approaches the no-dropout one.
  keys = jax.random.split(jax.random.PRNGKey(1), 256)
  expected = attention.attend(q, k, v)
  for chunk in (None, 8):
    outs = jax.jit(
      jax.vmap(
        lambda r, chunk=chunk: attention.attend(q, k, v, dropout_rate=0.3, rng=r, chunk_size=chunk)
      )
    )(keys)
    assert not np.allclose(outs[0], outs[1])
    np.testing.assert_allclose(outs.mean(axis=0), expected, atol=0.1)


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


def _autodiff_attention(q, k, v, mask):
  """The attention core written plainly, differentiated by JAX."""
  logits = jnp.einsum("bnhd,bmhd->bhnm", q, k)
  if mask is not None:
    logits = jnp.where(mask[:, None], logits, -1e30)
  return jnp.einsum("bhnm,bmhd->bnhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize("use_mask", [False, True])
def test_written_out_attention_gradient_equals_autodiff(use_mask):
  q, k, v = _qkv(jax.random.PRNGKey(3))
  mask = _mask_with_empty_rows(jax.random.PRNGKey(4)) if use_mask else None
  cotangent = jax.random.normal(jax.random.PRNGKey(5), (2, 5, 2, 3))

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v, mask) * cotangent)

  ours = jax.grad(loss(attention._softmax_attention), argnums=(0, 1, 2))(q, k, v)
  reference = jax.grad(loss(_autodiff_attention), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ours, reference, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    attention._softmax_attention(q, k, v, mask), _autodiff_attention(q, k, v, mask), atol=1e-6
  )


def test_gradient_barrier_is_the_identity_with_a_cpu_boundary():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))

  def loss(x, barrier):
    y = jnp.tanh(x) * 3.0
    return jnp.sum(jnp.sin(attention.gradient_barrier(y) if barrier else y))

  np.testing.assert_array_equal(jax.grad(loss)(x, True), jax.grad(loss)(x, False))
  np.testing.assert_array_equal(attention.gradient_barrier(x), x)
  with_barrier = jax.jit(jax.grad(loss), static_argnums=1).lower(x, True).compile().as_text()
  without = jax.jit(jax.grad(loss), static_argnums=1).lower(x, False).compile().as_text()
  # On CPU the backward pass goes through a conditional, which fusion cannot cross.
  assert "conditional(" in with_barrier and "conditional(" not in without
  nan = jax.grad(lambda x: jnp.sum(attention.gradient_barrier(x) * jnp.nan))(x)
  assert np.isnan(nan).all()
