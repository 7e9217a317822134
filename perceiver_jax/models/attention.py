"""Multi-head attention and the Perceiver's cross- and self-attention blocks (Haiku modules).

The parameter-free kernels they run (softmax attention, whole or in chunks, LayerNorm, the
gradient barrier) are in `attention_kernels.py`.

Shape glossary:
  B: batch.  N: query (output) index dim, e.g. the latents.  M: key/value index dim,
  e.g. the input array (50,176 pixels on ImageNet).  H: heads.  D: channels per head.

Module and parameter names follow the official Perceiver IO release so that its
checkpoints load unchanged: inside `attention` the four Linear layers are created
in the order Q (`linear`), K (`linear_1`), V (`linear_2`), output (`linear_3`);
`CrossAttention` creates `layer_norm` (query), `layer_norm_1` (key/value),
`attention`, `layer_norm_2` and `mlp`; `SelfAttention` creates `layer_norm`,
`attention`, `layer_norm_1` and `mlp`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.models import attention_kernels
from perceiver_jax.models import input_array
from perceiver_jax.models import precision


def _split_heads(x: jax.Array, num_heads: int) -> jax.Array:
  """[B, T, C] -> [B, T, H, C // H]."""
  *lead, channels = x.shape
  return x.reshape(*lead, num_heads, channels // num_heads)


class _LinearParams(hk.Module):
  """Creates the `w`, `b` of a Linear layer for use inside a scan, where modules cannot run.

  Same names, shapes and initialisers as `hk.Linear` with a variance-scaling `w_init`.
  """

  def __init__(self, output_size: int, init_scale: float, name: str = "linear"):
    super().__init__(name=name)
    self._output_size = output_size
    self._init_scale = init_scale

  def __call__(self, input_size: int, dtype) -> tuple[jax.Array, jax.Array]:
    w_init = hk.initializers.VarianceScaling(self._init_scale)
    w = hk.get_parameter("w", [input_size, self._output_size], dtype, init=w_init)
    b = hk.get_parameter("b", [self._output_size], dtype, init=jnp.zeros)
    return w, b


class _LayerNormParams(hk.Module):
  """Creates the `scale`, `offset` of an `hk.LayerNorm` for use inside a scan."""

  def __init__(self, name: str = "layer_norm"):
    super().__init__(name=name)

  def __call__(self, channels: int, dtype) -> tuple[jax.Array, jax.Array]:
    scale = hk.get_parameter("scale", [channels], dtype, init=jnp.ones)
    offset = hk.get_parameter("offset", [channels], dtype, init=jnp.zeros)
    return scale, offset


def _linear(channels: int, init_scale: float, with_bias: bool = True) -> hk.Linear:
  return precision.Linear(
    channels, with_bias=with_bias, w_init=hk.initializers.VarianceScaling(init_scale)
  )


def _dropout(x: jax.Array, rate: float) -> jax.Array:
  return hk.dropout(hk.next_rng_key(), rate, x) if rate > 0.0 else x


def _layer_norm() -> Callable[[jax.Array], jax.Array]:
  """`hk.LayerNorm` over the last axis; its statistics are computed in float32."""
  return precision.in_float32(hk.LayerNorm(axis=-1, create_scale=True, create_offset=True))


class Attention(hk.Module):
  """Multi-head attention with Q/K/V and output projections."""

  def __init__(
    self,
    num_heads: int = 8,
    init_scale: float = 1.0,
    with_final_bias: bool = True,
    final_init_scale_multiplier: float = 1.0,
    dropout_prob: float = 0.0,
    qk_channels: int | None = None,
    v_channels: int | None = None,
    output_channels: int | None = None,
    chunk_size: int | None = None,
    name: str | None = None,
  ):
    super().__init__(name=name)
    self._num_heads = num_heads
    self._init_scale = init_scale
    self._with_final_bias = with_final_bias
    self._final_init_scale = final_init_scale_multiplier * init_scale
    self._dropout_prob = dropout_prob
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._output_channels = output_channels
    self._chunk_size = chunk_size

  def __call__(
    self,
    inputs_q: jax.Array,
    inputs_kv: jax.Array | input_array.InputArray,
    attention_mask: jax.Array | None = None,
    *,
    is_training: bool,
    kv_layer_norm: tuple[jax.Array, jax.Array] | None = None,
    kv_cache: dict | None = None,
  ) -> jax.Array:
    """[B, N, Cq], [B, M, Ckv], mask [B, N, M] -> [B, N, output_channels].

    `kv_layer_norm`: optional (scale, offset) of a LayerNorm applied to `inputs_kv`
    before the K/V projections. It is applied here, chunk by chunk on the chunked
    path, so that no normalised or projected copy of a long input is kept.

    `kv_cache`: optional dict shared by calls with the same weights and the same
    `inputs_kv` within one trace (the encoder's weight-shared cross-attends). The first
    call stores its full-length keys and values there and later calls reuse them, so
    their projections and their weight gradients are computed once, not once per call.
    Ignored on the chunked path, which never holds full-length keys and values.
    """
    qk_channels = self._qk_channels or inputs_q.shape[-1]
    v_channels = self._v_channels or qk_channels
    output_channels = self._output_channels or v_channels
    for what, channels in (("qk_channels", qk_channels), ("v_channels", v_channels)):
      if channels % self._num_heads:
        raise ValueError(f"{what}={channels} is not divisible by num_heads={self._num_heads}")
    # Creation order fixes the names: Q `linear`, K `linear_1`, V `linear_2`, out `linear_3`.
    q = _linear(qk_channels, self._init_scale)(inputs_q)  # [B, N, qk]
    kv_channels, dtype = inputs_kv.shape[-1], inputs_kv.dtype
    wk, bk = _LinearParams(qk_channels, self._init_scale)(kv_channels, dtype)
    wv, bv = _LinearParams(v_channels, self._init_scale)(kv_channels, dtype)
    heads = self._num_heads
    # An `InputArray` is built here, from its parts or from the chunk of them attended to.
    kv_parts, build = input_array.parts_and_build(inputs_kv)

    def keys_and_values(parts):  # -> [B, m, H, qk / H], [B, m, H, v / H]
      x = build(parts)  # [B, m, Ckv]
      if kv_layer_norm is not None:
        x = attention_kernels.layer_norm(x, *kv_layer_norm)
      return (
        _split_heads(precision.dot(x, wk) + bk, heads),
        _split_heads(precision.dot(x, wv) + bv, heads),
      )

    if kv_cache is not None and not attention_kernels.is_chunked(
      self._chunk_size, inputs_kv.shape[1]
    ):
      if "keys_values" not in kv_cache:
        kv_cache["keys_values"] = keys_and_values(kv_parts)
      kv_parts, keys_and_values = kv_cache["keys_values"], lambda kv: kv

    rate = self._dropout_prob if is_training else 0.0
    result = attention_kernels.attend_kv(
      _split_heads(q, heads),
      kv_parts,
      keys_and_values,
      attention_mask,
      dropout_rate=rate,
      rng=hk.next_rng_key() if rate > 0.0 else None,
      chunk_size=self._chunk_size,
    )  # [B, N, v]
    return _linear(output_channels, self._final_init_scale, self._with_final_bias)(result)


# The MLP's nonlinearity (`config.model.activation`): the release's tanh approximation of
# GELU, or the exact (erf) GELU of transformers' port (its `hidden_act='gelu'`).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
}
_activation = ["gelu_tanh"]


@contextlib.contextmanager
def mlp_activation(name: str) -> Iterator[None]:
  """Inside it, every `MLP` built uses `ACTIVATIONS[name]` (`model.build_model` sets it from
  the config). A context rather than an argument of every block and decoder: it changes the
  numerics, never the parameter tree."""
  if name not in ACTIVATIONS:
    raise ValueError(f"activation {name!r}: expected one of {tuple(ACTIVATIONS)}")
  _activation.append(name)
  try:
    yield
  finally:
    _activation.pop()


class MLP(hk.Module):
  """Linear -> GELU (tanh approximation; `mlp_activation` chooses) -> Linear -> dropout."""

  def __init__(
    self,
    widening_factor: int = 4,
    dropout_prob: float = 0.0,
    init_scale: float = 1.0,
    name: str | None = None,
  ):
    super().__init__(name=name)
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._init_scale = init_scale
    self._activation = ACTIVATIONS[_activation[-1]]

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    channels = x.shape[-1]
    x = _linear(self._widening_factor * channels, self._init_scale)(x)
    x = self._activation(x)
    x = _linear(channels, self._init_scale)(x)
    return _dropout(x, self._dropout_prob if is_training else 0.0)


class _AttentionBlock(hk.Module):
  """Settings shared by the cross- and self-attention blocks."""

  def __init__(
    self,
    num_heads: int = 8,
    init_scale: float = 1.0,
    with_final_bias: bool = True,
    final_init_scale_multiplier: float = 1.0,
    dropout_prob: float = 0.0,
    dropout_attn_prob: float = 0.0,
    widening_factor: int = 4,
    qk_channels: int | None = None,
    v_channels: int | None = None,
    name: str | None = None,
  ):
    super().__init__(name=name)
    self._attention_kwargs = dict(
      num_heads=num_heads,
      init_scale=init_scale,
      with_final_bias=with_final_bias,
      final_init_scale_multiplier=final_init_scale_multiplier,
      dropout_prob=dropout_attn_prob,
    )
    self._dropout_prob = dropout_prob
    self._init_scale = init_scale
    self._widening_factor = widening_factor
    self._qk_channels = qk_channels
    self._v_channels = v_channels


def _residual_mlp(block: _AttentionBlock, x: jax.Array, is_training: bool) -> jax.Array:
  """`x + MLP(LN(x))`. A function, not a method: methods would add a Haiku name scope."""
  rate = block._dropout_prob if is_training else 0.0
  mlp = MLP(block._widening_factor, rate, block._init_scale)
  return attention_kernels.gradient_barrier(x + mlp(_layer_norm()(x), is_training=is_training))


class CrossAttention(_AttentionBlock):
  """Cross-attention block: queries attend to a (usually much longer) key/value array.

  `a = Attn(LN(q), LN(kv))`, `x = q + a` (or `a` without the query residual), then
  `x = x + MLP(LN(x))`. Q/K/V are as wide as the key/value input by default
  (`shape_for_attn='kv'`); the output projection returns to the query width.
  Takes the `_AttentionBlock` settings as keywords, with a widening factor of 1.
  """

  def __init__(
    self,
    *,
    widening_factor: int = 1,
    shape_for_attn: str = "kv",
    use_query_residual: bool = True,
    chunk_size: int | None = None,
    **block_kwargs,
  ):
    super().__init__(widening_factor=widening_factor, **block_kwargs)
    if shape_for_attn not in ("q", "kv"):
      raise ValueError(f"shape_for_attn must be 'q' or 'kv', got {shape_for_attn!r}")
    self._shape_for_attn = shape_for_attn
    self._use_query_residual = use_query_residual
    self._chunk_size = chunk_size

  def __call__(
    self,
    inputs_q: jax.Array,
    inputs_kv: jax.Array | input_array.InputArray,
    attention_mask: jax.Array | None = None,
    *,
    is_training: bool,
    kv_cache: dict | None = None,
  ) -> jax.Array:
    """[B, N, Cq], [B, M, Ckv], mask [B, N, M] -> [B, N, Cq].

    `kv_cache`: see `Attention`; one dict per weight set and input array.
    """
    output_channels = inputs_q.shape[-1]
    qk_channels = self._qk_channels or (
      inputs_kv.shape[-1] if self._shape_for_attn == "kv" else output_channels
    )
    q = _layer_norm()(inputs_q)
    # The key/value LayerNorm (`layer_norm_1`) runs inside the attention, chunk by chunk.
    kv_layer_norm = _LayerNormParams()(inputs_kv.shape[-1], inputs_kv.dtype)
    attention = Attention(
      **self._attention_kwargs,
      qk_channels=qk_channels,
      v_channels=self._v_channels or qk_channels,
      output_channels=output_channels,
      chunk_size=self._chunk_size,
    )(
      q,
      inputs_kv,
      attention_mask,
      is_training=is_training,
      kv_layer_norm=kv_layer_norm,
      kv_cache=kv_cache,
    )
    attention = _dropout(attention, self._dropout_prob if is_training else 0.0)
    x = inputs_q + attention if self._use_query_residual else attention
    return _residual_mlp(self, x, is_training)


class SelfAttention(_AttentionBlock):
  """Pre-LN (GPT-2 style) Transformer block over the latents.

  Takes the `_AttentionBlock` settings as keywords (widening factor 4 by default).
  """

  def __call__(
    self,
    inputs: jax.Array,
    attention_mask: jax.Array | None = None,
    *,
    is_training: bool,
  ) -> jax.Array:
    """[B, N, C], mask [B, N, N] -> [B, N, C]."""
    x = _layer_norm()(inputs)
    attention = Attention(
      **self._attention_kwargs,
      qk_channels=self._qk_channels,
      v_channels=self._v_channels,
      output_channels=inputs.shape[-1],
    )(x, x, attention_mask, is_training=is_training)
    x = inputs + _dropout(attention, self._dropout_prob if is_training else 0.0)
    return _residual_mlp(self, x, is_training)
