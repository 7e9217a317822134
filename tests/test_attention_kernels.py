"""Tests for perceiver_jax/models/attention_kernels.py."""

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from perceiver_jax.models import attention_kernels


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
  out = attention_kernels.attend(q, k, v, mask, chunk_size=chunk_size)
  assert out.shape == (2, 5, 6)
  numerics.assert_close_to_scale(out, _numpy_attend(q, k, v, mask), rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_bfloat16_attention_has_float32_logits(chunk_size):
  """Logits of about 50: rounded to bfloat16 (steps of 0.25) they would move the
  weights by up to 25% (max error 0.09 here); computed in float32 from the bfloat16 q
  and k, only the casts of the weights and the output to bfloat16 remain (0.008)."""
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(jax.random.PRNGKey(0)))
  q = q * 25.0
  out = attention_kernels.attend(q, k, v, chunk_size=chunk_size)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), _numpy_attend(q, k, v, None), atol=0.03)


def test_layer_norm_statistics_are_float32():
  """Equal to the float32 LayerNorm rounded once: with bfloat16 statistics, `x - mean`
  of inputs near 100 would keep only about two significant digits."""
  x = (100.0 + jax.random.normal(jax.random.PRNGKey(0), (4, 64))).astype(jnp.bfloat16)
  scale = jax.random.uniform(jax.random.PRNGKey(1), (64,))
  offset = jnp.full((64,), 0.5)
  out = attention_kernels.layer_norm(x, scale, offset)
  assert out.dtype == jnp.bfloat16
  expected = attention_kernels.layer_norm(x.astype(jnp.float32), scale, offset).astype(jnp.bfloat16)
  np.testing.assert_array_equal(out, expected)


def test_fully_masked_query_rows_output_zeros():
  q, k, v = _qkv(jax.random.PRNGKey(0))
  mask = _mask_with_empty_rows(jax.random.PRNGKey(1))
  for chunk_size in (None, 8):
    out = attention_kernels.attend(q, k, v, mask, chunk_size=chunk_size)
    np.testing.assert_array_equal(out[0, 1], 0.0)
    np.testing.assert_array_equal(out[1, 4], 0.0)
    assert np.abs(np.asarray(out[0, 0])).sum() > 0


def test_chunked_equals_plain_with_large_inputs_and_gradients():
  """Chunked and plain paths agree in float32, values and gradients, to 1e-5 of their
  scale; leaving out one chunk of 128 keys moves them by 0.4 to 0.9 of it."""
  q, k, v = _qkv(jax.random.PRNGKey(2), batch=2, num_q=16, num_kv=1000, heads=1, dk=32, dv=32)
  mask = jax.random.bernoulli(jax.random.PRNGKey(3), 0.9, (2, 16, 1000)).at[1, 3].set(False)

  def loss(q, k, v, chunk_size):
    out = attention_kernels.attend(q, k, v, mask, chunk_size=chunk_size)
    return jnp.sum(out * jnp.cos(out))

  plain = attention_kernels.attend(q, k, v, mask)
  chunked = attention_kernels.attend(q, k, v, mask, chunk_size=128)
  numerics.assert_close_to_scale(chunked, plain, rtol=1e-5, what="values")
  grads_plain = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, None)
  grads_chunked = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, 128)
  for name, a, b in zip("qkv", grads_chunked, grads_plain, strict=True):
    numerics.assert_close_to_scale(a, b, rtol=1e-5, what=f"gradient of {name}")


def test_chunked_attention_never_builds_full_logits():
  """The compiled chunked path holds no [B, H, N, M] buffer; the plain path does."""
  q, k, v = _qkv(jax.random.PRNGKey(0), batch=1, num_q=128, num_kv=16384, heads=1, dk=8, dv=8)

  def temp_bytes(chunk_size):
    fn = jax.jit(lambda q, k, v: attention_kernels.attend(q, k, v, chunk_size=chunk_size))
    return fn.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

  full_logits = 128 * 16384 * 4
  assert temp_bytes(None) >= full_logits
  assert temp_bytes(512) < full_logits / 2


def test_attention_dropout_needs_rng_and_scales_weights():
  q, k, v = _qkv(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="needs an rng"):
    attention_kernels.attend(q, k, v, dropout_rate=0.5)
  # Dropout is unbiased: averaged over many keys, the output approaches the no-dropout one.
  keys = jax.random.split(jax.random.PRNGKey(1), 256)
  expected = attention_kernels.attend(q, k, v)
  for chunk in (None, 8):
    outs = jax.jit(
      jax.vmap(
        lambda r, chunk=chunk: attention_kernels.attend(
          q, k, v, dropout_rate=0.3, rng=r, chunk_size=chunk
        )
      )
    )(keys)
    assert not np.allclose(outs[0], outs[1])
    np.testing.assert_allclose(outs.mean(axis=0), expected, atol=0.1)


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

  ours = jax.grad(loss(attention_kernels._softmax_attention), argnums=(0, 1, 2))(q, k, v)
  reference = jax.grad(loss(_autodiff_attention), argnums=(0, 1, 2))(q, k, v)
  for name, a, b in zip("qkv", ours, reference, strict=True):
    numerics.assert_close_to_scale(a, b, rtol=1e-5, what=f"gradient of {name}")
  out = attention_kernels._softmax_attention(q, k, v, mask)
  numerics.assert_close_to_scale(out, _autodiff_attention(q, k, v, mask), rtol=1e-5)


def test_gradient_barrier_is_the_identity_with_a_cpu_boundary():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))

  def loss(x, barrier):
    y = jnp.tanh(x) * 3.0
    return jnp.sum(jnp.sin(attention_kernels.gradient_barrier(y) if barrier else y))

  np.testing.assert_array_equal(jax.grad(loss)(x, True), jax.grad(loss)(x, False))
  np.testing.assert_array_equal(attention_kernels.gradient_barrier(x), x)
  with_barrier = jax.jit(jax.grad(loss), static_argnums=1).lower(x, True).compile().as_text()
  without = jax.jit(jax.grad(loss), static_argnums=1).lower(x, False).compile().as_text()
  # On CPU the backward pass goes through a conditional, which fusion cannot cross.
  assert "conditional(" in with_barrier and "conditional(" not in without
  nan = jax.grad(lambda x: jnp.sum(attention_kernels.gradient_barrier(x) * jnp.nan))(x)
  assert np.isnan(nan).all()
