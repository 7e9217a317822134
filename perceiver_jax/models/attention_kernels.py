"""The attention kernels: softmax attention (plain and chunked), LayerNorm, a gradient barrier.

Pure functions without parameters; the Haiku modules in `attention.py` call them.

Shape glossary:
  B: batch.  N: query (output) index dim, e.g. the latents.  M: key/value index dim,
  e.g. the input array (50,176 pixels on ImageNet).  H: heads.  D: channels per head.
"""

from __future__ import annotations

import math

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax import fusion
from perceiver_jax.models import precision


def _masked_value(dtype) -> float:
  # float16 cannot hold -1e30; every other float type can.
  return -1e4 if dtype == jnp.float16 else -1e30


def _softmax_weights(q, k, mask):
  """softmax(q k^T) over the keys, in float32: [B, H, N, M]."""
  # float32 logits and softmax, whatever the compute dtype of q, k and v.
  logits = jnp.einsum("bnhd,bmhd->bhnm", q, k, preferred_element_type=jnp.float32)
  if mask is not None:
    logits = jnp.where(mask[:, None], logits, _masked_value(q.dtype))
  return jax.nn.softmax(logits, axis=-1)


@jax.custom_vjp
def _softmax_attention(q, k, v, mask):
  """softmax(q k^T) v without dropout: q [B, N, H, Dk], k [B, M, H, Dk], v [B, M, H, Dv],
  mask [B, N, M] or None -> [B, N, H, Dv].

  The same function as autodiff of `_softmax_weights`, with the backward pass written
  out: the softmax gradient needs the row sums of dP * P over the M keys, which equal the
  row sums of dO * O over the Dv channels (the FlashAttention identity), a far smaller
  reduction for cross-attention into long inputs.
  """
  return _softmax_attention_fwd(q, k, v, mask)[0]


def _softmax_attention_fwd(q, k, v, mask):
  weights = _softmax_weights(q, k, mask)
  out = precision.einsum("bhnm,bmhd->bnhd", weights.astype(v.dtype), v)
  return out, (q, k, v, mask, weights, out)


def _softmax_attention_bwd(residuals, d_out):
  q, k, v, mask, weights, out = residuals
  d_v = precision.einsum("bhnm,bnhd->bmhd", weights.astype(d_out.dtype), d_out)
  d_weights = jnp.einsum("bnhd,bmhd->bhnm", d_out, v, preferred_element_type=jnp.float32)
  row = jnp.einsum("bnhd,bnhd->bhn", d_out, out, preferred_element_type=jnp.float32)
  d_logits = weights * (d_weights - row[..., None])  # [B, H, N, M]
  if mask is not None:  # masked logits are constants (rows without any key have weights)
    d_logits = jnp.where(mask[:, None], d_logits, 0.0)
  d_q = precision.einsum("bhnm,bmhd->bnhd", d_logits.astype(k.dtype), k)
  d_k = precision.einsum("bhnm,bnhd->bmhd", d_logits.astype(q.dtype), q)
  return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def _attend_plain(q, k, v, mask, dropout_rate, rng):
  """Materialises the full [B, H, N, M] attention matrix."""
  if dropout_rate == 0.0:
    return _softmax_attention(q, k, v, mask)
  weights = hk.dropout(rng, dropout_rate, _softmax_weights(q, k, mask).astype(v.dtype))
  return jnp.einsum("bhnm,bmhd->bnhd", weights, v)  # [B, N, H, Dv]


def _attend_chunked(q, kv_inputs, kv_fn, mask, dropout_rate, rng, chunk_size):
  """Online-softmax attention that visits the key/value axis in chunks.

  Keys and values are made chunk by chunk by `kv_fn` from `kv_inputs` (a pytree of
  [B, M, ...] arrays), so neither the [B, H, N, M] logits nor, when `kv_fn` projects
  raw inputs, full-length keys and values ever exist. A loop visits the M // chunk_size
  full chunks, slicing them from the inputs in place; a last, shorter step takes the
  remainder, so nothing is padded, copied or masked. Each step is rematerialised: the
  backward pass stores only the running (max, normaliser, accumulator) per chunk.
  """
  batch, num_q, heads, _ = q.shape
  num_kv = jax.tree_util.tree_leaves(kv_inputs)[0].shape[1]
  num_full, remainder = divmod(num_kv, chunk_size)
  masked_value = _masked_value(q.dtype)

  def take(start, size):
    """Keys, values and mask of inputs [start, start + size)."""
    part = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=1), kv_inputs)
    k_c, v_c = kv_fn(part)  # [B, size, H, D]
    mask_c = None if mask is None else jax.lax.dynamic_slice_in_dim(mask, start, size, axis=2)
    return k_c, v_c, mask_c

  def update(carry, index, size):
    running_max, normaliser, acc = carry
    k_c, v_c, mask_c = take(index * chunk_size, size)
    logits = jnp.einsum("bnhd,bchd->bhnc", q, k_c, preferred_element_type=jnp.float32)
    if mask_c is not None:
      logits = jnp.where(mask_c.astype(bool)[:, None], logits, masked_value)
    # The result does not depend on the running max, so no gradient flows through it.
    new_max = jax.lax.stop_gradient(jnp.maximum(running_max, logits.max(axis=-1)))
    probs = jnp.exp(logits - new_max[..., None])  # [B, H, N, size]
    correction = jnp.exp(running_max - new_max)
    normaliser = normaliser * correction + probs.sum(axis=-1)
    if dropout_rate > 0.0:
      # Dropout of normalised weights equals dropout of the unnormalised ones
      # divided by the (undropped) normaliser.
      keep = jax.random.bernoulli(jax.random.fold_in(rng, index), 1.0 - dropout_rate, probs.shape)
      probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    acc = acc * correction[..., None] + jnp.einsum(
      "bhnc,bchd->bhnd", probs.astype(v_c.dtype), v_c, preferred_element_type=jnp.float32
    )
    return new_max, normaliser, acc

  v_shape = jax.eval_shape(lambda: take(0, 1))[1].shape
  carry = (
    jnp.full((batch, heads, num_q), -jnp.inf, jnp.float32),
    jnp.zeros((batch, heads, num_q), jnp.float32),
    jnp.zeros((batch, heads, num_q, v_shape[-1]), jnp.float32),
  )
  full_step = jax.checkpoint(lambda carry, index: (update(carry, index, chunk_size), None))
  carry, _ = jax.lax.scan(full_step, carry, jnp.arange(num_full))
  if remainder:
    carry = jax.checkpoint(update, static_argnums=(2,))(carry, num_full, remainder)
  _, normaliser, acc = carry
  out = acc / normaliser[..., None]  # [B, H, N, Dv]
  return out.transpose(0, 2, 1, 3).astype(q.dtype)  # [B, N, H, Dv]


def is_chunked(chunk_size: int | None, num_kv: int) -> bool:
  """Whether `attend_kv` visits `num_kv` keys in chunks rather than all at once."""
  return chunk_size is not None and chunk_size < num_kv


def attend_kv(
  q: jax.Array,
  kv_inputs,
  kv_fn,
  mask: jax.Array | None = None,
  *,
  dropout_rate: float = 0.0,
  rng: jax.Array | None = None,
  chunk_size: int | None = None,
) -> jax.Array:
  """Attention whose keys and values `kv_fn(kv_inputs) -> (k, v)` computes.

  With chunking, `kv_fn` runs on one chunk of `kv_inputs` (a pytree of [B, M, ...]
  arrays) at a time, so projections of a long input are never held in full.

  Args:
    q: [B, N, H, Dk] queries.
    kv_inputs: pytree of [B, M, ...] arrays.
    kv_fn: maps (a chunk of) `kv_inputs` to keys [B, m, H, Dk] and values [B, m, H, Dv].
    mask: optional [B, N, M], true (or 1) where query n may attend to key m. Masked
      logits are replaced by -1e30; a query row with no allowed key outputs zeros.
    dropout_rate: dropout on the attention weights; needs `rng` when positive.
    rng: PRNG key for dropout.
    chunk_size: if set and smaller than M, visit the keys in chunks of this size
      with an online softmax instead of materialising [B, H, N, M] logits.

  Returns:
    [B, N, H * Dv].
  """
  if dropout_rate > 0.0 and rng is None:
    raise ValueError(f"attention dropout {dropout_rate} needs an rng key")
  q = q * (1.0 / math.sqrt(q.shape[-1]))
  num_kv = jax.tree_util.tree_leaves(kv_inputs)[0].shape[1]
  if is_chunked(chunk_size, num_kv):
    out = _attend_chunked(q, kv_inputs, kv_fn, mask, dropout_rate, rng, chunk_size)
  else:
    out = _attend_plain(q, *kv_fn(kv_inputs), mask, dropout_rate, rng)
  if mask is not None:
    # Rows with every key masked would otherwise average all values uniformly.
    any_key = jnp.any(mask.astype(bool), axis=-1)  # [B, N]
    out = jnp.where(any_key[:, :, None, None], out, jnp.zeros_like(out))
  return out.reshape(*out.shape[:2], -1)


def attend(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  mask: jax.Array | None = None,
  *,
  dropout_rate: float = 0.0,
  rng: jax.Array | None = None,
  chunk_size: int | None = None,
) -> jax.Array:
  """Scaled dot-product attention over heads: q [B, N, H, Dk], k [B, M, H, Dk],
  v [B, M, H, Dv] -> [B, N, H * Dv]. Arguments as for `attend_kv`."""
  return attend_kv(
    q, (k, v), lambda kv: kv, mask, dropout_rate=dropout_rate, rng=rng, chunk_size=chunk_size
  )


def layer_norm(x: jax.Array, scale: jax.Array, offset: jax.Array, eps: float = 1e-5) -> jax.Array:
  """LayerNorm over the last axis, computed as `hk.LayerNorm` computes it, in float32;
  the result has `x`'s dtype."""
  y = x.astype(jnp.float32)
  mean = jnp.mean(y, axis=-1, keepdims=True)
  variance = jnp.var(y, axis=-1, keepdims=True)
  return (scale * jax.lax.rsqrt(variance + eps) * (y - mean) + offset).astype(x.dtype)


def _gradient_barrier_bwd(_, grad):
  return (fusion.cpu_barrier(grad),)


@jax.custom_vjp
def _cpu_gradient_barrier(x: jax.Array) -> jax.Array:
  return x


_cpu_gradient_barrier.defvjp(lambda x: (x, None), _gradient_barrier_bwd)


def gradient_barrier(x: jax.Array) -> jax.Array:
  """The identity, whose gradient XLA:CPU materialises rather than fusing it onward.

  Without it, XLA:CPU fuses the elementwise backward pass of the residual stream (the
  LayerNorm and residual gradients) across all blocks into single kernels, one per
  consumer: each weight gradient then recomputes the chain from the loss down to its own
  block, in a transposed layout. Placed at the end of every block, it bounds each such
  kernel to one block (README, "Performance", has the measurements). Other
  platforms do not fuse this way and get the plain identity.
  """
  return jax.lax.platform_dependent(x, cpu=_cpu_gradient_barrier, default=lambda x: x)
