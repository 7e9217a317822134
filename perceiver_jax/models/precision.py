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
