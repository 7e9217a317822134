"""The input array [B, M, C], held as its parts: content and the positions it is encoded from.

An image's input array is its pixels (or patches) with the Fourier features of the pixel
grid concatenated after them. The features are the same for every example and are cheap to
compute from the positions, yet held whole they are most of the array: at 224 x 224 with 64
bands per axis, 258 of its 261 channels. Held whole, the array is also kept from the
forward pass to the backward pass, since the cross-attends' key and value weight
gradients read it (ImageNet, batch 2: 105 MB, plus the 104 MB of broadcast features and
the 52 MB of features it was built from while it is made).

An `InputArray` keeps the parts instead: the content [B, M, c] and the positions
[1, M, d] (or [B, M, d]), with the encoding that turns positions into features.
`attention.Attention` builds its keys and values from `parts` with `build`, and a chunked
cross-attend (`attention_kernels.attend_kv` with a chunk size) slices the parts, so each
chunk of the array is built where it is used and none is kept: the training step holds
[B, M, c] + [1, M, d] floats of it, not [B, M, C] (imagenet-long, chunked: the step's
temporaries 297 -> 197 MiB; benchmarks/results.md). Unchunked, the whole array is built,
the same values as before. Everything else (decoders whose queries follow the inputs,
the baselines) takes `dense(inputs)`, a plain array.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


@jax.tree_util.register_pytree_node_class
class InputArray:
  """[B, M, c + e]: `content` [B, M, c], then `encode(positions)` [B or 1, M, e] broadcast
  over the batch, in `dtype`.

  `encode` maps positions [..., m, d] to features [..., m, e] elementwise along m (Fourier
  features), so that encoding a slice of the positions gives that slice of the features.
  A pytree (its leaves: the content and the positions), so it passes through `jax.jit`,
  `jax.eval_shape` and Haiku's transforms like an array.
  """

  def __init__(
    self,
    content: jax.Array,
    positions: jax.Array,
    encode: Callable[[jax.Array], jax.Array],
    dtype=None,
  ):
    if (
      len(content.shape) != 3 or len(positions.shape) != 3 or positions.shape[1] != content.shape[1]
    ):
      raise ValueError(
        f"an input array needs content [B, M, c] and positions [B or 1, M, d] with the same M, "
        f"got {content.shape} and {positions.shape}"
      )
    if positions.shape[0] not in (1, content.shape[0]):
      raise ValueError(
        f"positions of batch {positions.shape[0]} for content of batch {content.shape[0]}"
      )
    self.content, self.positions, self.encode = content, positions, encode
    self.dtype = jnp.dtype(content.dtype if dtype is None else dtype)

  def tree_flatten(self):
    return (self.content, self.positions), (self.encode, self.dtype)

  @classmethod
  def tree_unflatten(cls, aux, children):
    # No checks: the leaves may be whatever a transformation puts there (shapes, tracers).
    array = object.__new__(cls)
    array.content, array.positions = children
    array.encode, array.dtype = aux
    return array

  @property
  def shape(self) -> tuple[int, int, int]:
    """(B, M, c + e)."""
    one = jax.ShapeDtypeStruct((1, 1, self.positions.shape[-1]), self.positions.dtype)
    width = jax.eval_shape(self.encode, one).shape[-1]
    return (*self.content.shape[:2], self.content.shape[-1] + width)

  @property
  def parts(self) -> tuple[jax.Array, jax.Array]:
    """(content, positions): arrays along M, for `build` (whole or a slice of M of each)."""
    return self.content, self.positions

  def build(self, parts: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The input array of (a slice along M of) `parts`: [B, m, C] in `dtype`."""
    content, positions = parts
    features = self.encode(positions)
    features = jnp.broadcast_to(features, (content.shape[0], *features.shape[1:]))
    return jnp.concatenate([content.astype(self.dtype), features.astype(self.dtype)], axis=-1)

  def dense(self) -> jax.Array:
    """The whole array, [B, M, C]."""
    return self.build(self.parts)

  def astype(self, dtype) -> InputArray:
    return InputArray(self.content, self.positions, self.encode, dtype)

  def take(self, indices) -> InputArray:
    """The input elements `indices` (along M) of every example, e.g. a fixed permutation."""
    return InputArray(self.content[:, indices], self.positions[:, indices], self.encode, self.dtype)


def dense(inputs: jax.Array | InputArray) -> jax.Array:
  """`inputs` as a plain array."""
  return inputs.dense() if isinstance(inputs, InputArray) else inputs


def parts_and_build(inputs: jax.Array | InputArray):
  """(a pytree of [B, M, ...] arrays, the function that builds the input array [B, m, C]
  from it or from any slice along M of it) for `inputs`."""
  if isinstance(inputs, InputArray):
    return inputs.parts, inputs.build
  return inputs, lambda x: x
