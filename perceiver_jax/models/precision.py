"""Mixed precision: parameters stored and updated in float32, computation in bfloat16.

`config.model.compute_dtype` selects it. With 'bfloat16', `model.build_model` runs the
encoder and decoder inside `compute_in(jnp.bfloat16)`:
  * every parameter and state entry is created in float32, whatever the dtype of the
    module's inputs (from which Haiku modules take it), so the parameter tree, the
    checkpoints and the optimizer are those of a float32 model;
  * every floating-point parameter is cast to bfloat16 where it is read, so the matmuls
    run in bfloat16, and the gradients flow back through the cast to float32.
The reductions that bfloat16 would spoil stay in float32 where they are computed:
attention logits and softmax (`attention_kernels.attend_kv`), LayerNorm statistics
(`attention_kernels.layer_norm`, and `in_float32` around `hk.LayerNorm`) and BatchNorm statistics
(`in_float32`). The preprocessor runs before, in float32, and `model.build_model` returns
float32 logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator

import haiku as hk
import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def _is_float(dtype) -> bool:
  return jnp.issubdtype(dtype, jnp.floating)


def _create_in_float32(next_creator, shape, dtype, init, context):
  del context
  return next_creator(shape, jnp.float32 if _is_float(dtype) else dtype, init)


@contextlib.contextmanager
def compute_in(dtype) -> Iterator[None]:
  """Inside a Haiku transform: float32 parameters and state, read as `dtype`.

  float32 changes nothing, so a float32 model runs exactly as without this context.
  """
  if dtype == jnp.float32:
    yield
    return

  def cast(next_getter, value, context):
    del context
    return next_getter(value.astype(dtype) if _is_float(value.dtype) else value)

  with hk.custom_creator(_create_in_float32, state=True), hk.custom_getter(cast):
    yield


def in_float32(layer: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """`layer(x, ...)` computed on float32 `x`, its output cast back to `x`'s dtype.

  For normalisation layers (`hk.LayerNorm`, `hk.BatchNorm`), whose statistics bfloat16
  cannot hold: `x - mean` and a mean of squares minus a squared mean lose most of their
  significant digits in bfloat16's eight bits.
  """

  def apply(x: jax.Array, *args, **kwargs) -> jax.Array:
    return layer(x.astype(jnp.float32), *args, **kwargs).astype(x.dtype)

  return apply


# Matrix products in bfloat16. XLA:CPU runs a bfloat16 x bfloat16 product whose result is
# float32 on the CPU's bfloat16 units (AMX and AVX512-BF16 where present: 1.3-1.6 TFLOP/s
# on this project's 2-core Xeon, 5x its float32 products), but one whose result is bfloat16
# in float32 (240 GFLOP/s, slower than float32 itself). So every product of the bfloat16
# path accumulates in float32 and is rounded to bfloat16 afterwards, in the forward pass
# and in the backward pass (`_bf16_dot`'s rule), which plain autodiff would run on float32
# cotangents. The README's "Performance" has the measurements.


def _contract_last(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., K] . w [K, N] -> [..., N] in float32."""
  return jnp.dot(x, w, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _bf16_dot(x: jax.Array, w: jax.Array) -> jax.Array:
  return _contract_last(x, w).astype(x.dtype)


def _bf16_dot_fwd(x, w):
  return _bf16_dot(x, w), (x, w)


def _bf16_dot_bwd(residuals, grad):
  x, w = residuals
  grad = grad.astype(x.dtype)
  d_x = _contract_last(grad, w.T).astype(x.dtype)
  lead = tuple(range(x.ndim - 1))
  d_w = jax.lax.dot_general(
    x, grad, ((lead, lead), ((), ())), preferred_element_type=jnp.float32
  ).astype(w.dtype)
  return d_x, d_w


_bf16_dot.defvjp(_bf16_dot_fwd, _bf16_dot_bwd)


def dot(x: jax.Array, w: jax.Array) -> jax.Array:
  """`x @ w` for x [..., K] and a weight matrix w [K, N]: in bfloat16 with float32
  accumulation when both are bfloat16 (see above), otherwise `jnp.dot` itself."""
  if x.dtype == jnp.bfloat16 and w.dtype == jnp.bfloat16:
    return _bf16_dot(x, w)
  return jnp.dot(x, w)


def einsum(spec: str, a: jax.Array, b: jax.Array, out_dtype=None) -> jax.Array:
  """`jnp.einsum(spec, a, b)` accumulated in float32 and returned as `out_dtype` (by
  default `a`'s dtype): bfloat16 operands run on the bfloat16 units (see above); float32
  operands give exactly `jnp.einsum`'s result."""
  out = jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
  return out.astype(out_dtype or a.dtype)


class Linear(hk.Linear):
  """`hk.Linear` (the same parameters, names and initialisers) whose product is `dot`."""

  def __call__(self, inputs: jax.Array, *, precision=None) -> jax.Array:
    if inputs.dtype != jnp.bfloat16:
      return super().__call__(inputs, precision=precision)
    input_size = self.input_size = inputs.shape[-1]
    w_init = self.w_init or hk.initializers.TruncatedNormal(stddev=1.0 / input_size**0.5)
    w = hk.get_parameter("w", [input_size, self.output_size], inputs.dtype, init=w_init)
    out = dot(inputs, w)
    if self.with_bias:
      out = out + hk.get_parameter("b", [self.output_size], inputs.dtype, init=self.b_init)
    return out
