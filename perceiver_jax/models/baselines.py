"""The Perceiver paper's baselines (Table 2), fed exactly the Perceiver's input array.

Each baseline takes the array the image preprocessor builds, [B, M, C]: pixels (or
patches) with their Fourier features attached and, for the permuted experiment, already
permuted. It lays the M elements back out on the H x W grid they came from, in the order
they arrive. With permuted inputs a convolution therefore sees scrambled neighbourhoods
while the Fourier features still travel with their pixels, as in the paper.

  ConvNetClassifier      a ResNet-style ConvNet: a 3x3 stem, stages of residual blocks
                         (two 3x3 convs with BatchNorm, the first of a stage strided), global
                         mean pool, linear head.
  TransformerClassifier  a pre-LN Transformer encoder over tokens. With patch_size p > 1 it
                         is a ViT: p x p patches of the grid, each flattened and linearly
                         embedded. With p = 1 every input element is a token (the paper's
                         Transformer on downsampled pixels; the downsampling is the
                         preprocessor's `spatial_downsample`). Mean over tokens, then a
                         LayerNorm and a linear head.

Neither adds position information of its own: the Fourier features are their positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.models import attention
from perceiver_jax.models import precision
from perceiver_jax.models import preprocessors

ARCHITECTURES = ("perceiver", "convnet", "vit", "transformer")


def to_grid(inputs: jax.Array, grid: Sequence[int]) -> jax.Array:
  """[B, H * W, C] -> [B, H, W, C], in the order the elements arrive."""
  height, width = grid
  batch, num_inputs, channels = inputs.shape
  if num_inputs != height * width:
    raise ValueError(f"{num_inputs} inputs do not fill a {height}x{width} grid")
  return inputs.reshape(batch, height, width, channels)


def _batch_norm(name: str, scale_init: hk.initializers.Initializer | None = None):
  """`hk.BatchNorm`, its statistics computed in float32 whatever the compute dtype."""
  return precision.in_float32(
    hk.BatchNorm(True, True, decay_rate=0.9, scale_init=scale_init, name=name)
  )


class _ResidualBlock(hk.Module):
  def __init__(self, channels: int, stride: int, name: str | None = None):
    super().__init__(name=name)
    self._channels = channels
    self._stride = stride

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    shortcut = x
    if self._stride > 1 or x.shape[-1] != self._channels:
      shortcut = hk.Conv2D(
        self._channels, 1, stride=self._stride, with_bias=False, name="shortcut_conv"
      )(x)
      shortcut = _batch_norm("shortcut_batchnorm")(shortcut, is_training)
    y = hk.Conv2D(self._channels, 3, stride=self._stride, with_bias=False, name="conv_1")(x)
    y = jax.nn.relu(_batch_norm("batchnorm_1")(y, is_training))
    y = hk.Conv2D(self._channels, 3, with_bias=False, name="conv_2")(y)
    # The last BatchNorm of a block starts at zero scale, so each block starts as identity.
    y = _batch_norm("batchnorm_2", scale_init=jnp.zeros)(y, is_training)
    return jax.nn.relu(y + shortcut)


class ConvNetClassifier(hk.Module):
  """A ResNet-style ConvNet over the input array laid out on its grid."""

  def __init__(
    self,
    num_classes: int,
    grid: Sequence[int],
    stage_channels: Sequence[int] = (32, 64, 128),
    blocks_per_stage: int = 1,
    name: str = "convnet",
  ):
    super().__init__(name=name)
    self._num_classes = num_classes
    self._grid = tuple(grid)
    self._stage_channels = tuple(stage_channels)
    self._blocks_per_stage = blocks_per_stage

  def __call__(self, inputs: jax.Array, *, is_training: bool) -> jax.Array:
    """[B, M, C] -> logits [B, num_classes]."""
    x = to_grid(inputs, self._grid)
    x = hk.Conv2D(self._stage_channels[0], 3, with_bias=False, name="stem_conv")(x)
    x = jax.nn.relu(_batch_norm("stem_batchnorm")(x, is_training))
    for stage, channels in enumerate(self._stage_channels):
      for block in range(self._blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        x = _ResidualBlock(channels, stride, name=f"stage_{stage}_block_{block}")(
          x, is_training=is_training
        )
    return hk.Linear(self._num_classes, name="logits")(jnp.mean(x, axis=(1, 2)))


class TransformerClassifier(hk.Module):
  """A pre-LN Transformer encoder over patches (ViT) or single input elements."""

  def __init__(
    self,
    num_classes: int,
    grid: Sequence[int],
    num_channels: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    patch_size: int = 1,
    widening_factor: int = 4,
    dropout_prob: float = 0.0,
    name: str = "transformer",
  ):
    super().__init__(name=name)
    self._num_classes = num_classes
    self._grid = tuple(grid)
    self._num_channels = num_channels
    self._num_layers = num_layers
    self._num_heads = num_heads
    self._patch_size = patch_size
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob

  def __call__(self, inputs: jax.Array, *, is_training: bool) -> jax.Array:
    """[B, M, C] -> logits [B, num_classes]."""
    x = inputs
    if self._patch_size > 1:
      x = preprocessors.space_to_depth(to_grid(inputs, self._grid), self._patch_size)
      x = x.reshape(x.shape[0], -1, x.shape[-1])
    x = hk.Linear(self._num_channels, name="embed")(x)
    for i in range(self._num_layers):
      x = attention.SelfAttention(
        num_heads=self._num_heads,
        widening_factor=self._widening_factor,
        dropout_prob=self._dropout_prob,
        name=f"self_attention_{i}",
      )(x, is_training=is_training)
    final_norm = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="final_norm")
    x = precision.in_float32(final_norm)(x)
    return hk.Linear(self._num_classes, name="logits")(jnp.mean(x, axis=1))
