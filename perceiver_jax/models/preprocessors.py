"""Image input processing: images -> the Perceiver's input array [B, M, C].

`prep_type` selects how pixels become input elements, as in the official release:
  * 'pixels': every pixel (after optional striding by `spatial_downsample`).
  * 'patches': space-to-depth patches of `spatial_downsample` x `spatial_downsample`,
    optionally followed by a Linear (`patches_linear`).
  * 'conv': 7x7 stride-2 conv to `num_channels`, BatchNorm, ReLU, 3x3 stride-2 max pool
    (224x224x3 -> 56x56x64 for `spatial_downsample=4`).
  * 'conv1x1': a 1x1 conv to `num_channels` with stride `spatial_downsample`.
Optical flow (`FlowPreprocessor`): 3x3 patches of a frame pair (`flow_patches`), then
'patches' with a `patches_linear`, as the release builds its flow input.
Position encodings (Fourier or trainable, optionally projected) are then concatenated
to (or added to) the features. With `permutation_seed` set, one fixed permutation of
the input elements is applied after the position encodings are attached (the
permuted-ImageNet experiment): every image is permuted the same way.
"""

from __future__ import annotations

import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.models import input_array
from perceiver_jax.models import position_encoding
from perceiver_jax.models import precision

PREP_TYPES = ("pixels", "patches", "conv", "conv1x1")


def space_to_depth(images: jax.Array, block: int) -> jax.Array:
  """[B, H, W, C] -> [B, H / block, W / block, block * block * C], rows of a patch first."""
  batch, height, width, channels = images.shape
  if height % block or width % block:
    raise ValueError(f"image size {height}x{width} is not divisible by patch size {block}")
  x = images.reshape(batch, height // block, block, width // block, block, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, height // block, width // block, block * block * channels)


def fixed_permutation(num_elements: int, seed: int) -> np.ndarray:
  """The one permutation of `num_elements` input elements used for every example."""
  return np.random.default_rng(seed).permutation(num_elements)


# How the conv stem pads: 'same' is Haiku's SAME for the conv and the max pool (the release:
# 224 -> 112 -> 56); 'transformers' pads the 7x7 conv by 3 on every side and the max pool not
# at all, as transformers' port does (224 -> 112 -> 55).
CONV_PADDINGS = ("same", "transformers")


def conv_stem_size(size: int, padding: str) -> int:
  """Output side of one conv stem layer (7x7/2 conv, 3x3/2 max pool) for an input side."""
  if padding == "same":
    conv = math.ceil(size / 2)
    return math.ceil(conv / 2)
  conv = (size + 2 * 3 - 7) // 2 + 1
  return (conv - 3) // 2 + 1


class Conv2DDownsample(hk.Module):
  """Conv stem: `num_layers` x (7x7/2 conv, BatchNorm, ReLU, 3x3/2 max pool), padded as
  `padding` (`CONV_PADDINGS`) says."""

  def __init__(
    self,
    num_layers: int = 1,
    num_channels: int = 64,
    bn_decay_rate: float = 0.9,
    padding: str = "same",
    name: str | None = None,
  ):
    super().__init__(name=name)
    if padding not in CONV_PADDINGS:
      raise ValueError(f"padding must be one of {CONV_PADDINGS}, got {padding!r}")
    self._padding = padding
    self.layers = []
    self.batchnorms = []
    for _ in range(num_layers):
      self.layers.append(
        hk.Conv2D(
          num_channels,
          kernel_shape=7,
          stride=2,
          with_bias=False,
          padding="SAME" if padding == "same" else ((3, 3), (3, 3)),
          name="conv",
        )
      )
      self.batchnorms.append(
        hk.BatchNorm(
          create_scale=True, create_offset=True, decay_rate=bn_decay_rate, name="batchnorm"
        )
      )

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    for conv, batchnorm in zip(self.layers, self.batchnorms, strict=True):
      x = conv(x)
      x = batchnorm(x, is_training=is_training)
      x = jax.nn.relu(x)
      pool_padding = "SAME" if self._padding == "same" else "VALID"
      x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding=pool_padding)
    return x


class ImagePreprocessor(hk.Module):
  """Images [B, H, W, C] -> input array [B, M, C'] with position encodings."""

  def __init__(
    self,
    prep_type: str = "conv",
    spatial_downsample: int = 4,
    num_channels: int = 64,
    position_encoding_type: str = "fourier",
    fourier_kwargs: dict | None = None,
    trainable_kwargs: dict | None = None,
    project_pos_dim: int = -1,
    concat_or_add_pos: str = "concat",
    conv_after_patching: bool = False,
    permutation_seed: int | None = None,
    conv_padding: str = "same",
    name: str = "image_preprocessor",
  ):
    super().__init__(name=name)
    if prep_type not in PREP_TYPES:
      raise ValueError(f"prep_type must be one of {PREP_TYPES}, got {prep_type!r}")
    if concat_or_add_pos not in ("concat", "add"):
      raise ValueError(f"concat_or_add_pos must be 'concat' or 'add', got {concat_or_add_pos!r}")
    self._prep_type = prep_type
    self._spatial_downsample = spatial_downsample
    self._num_channels = num_channels
    self._position_encoding_type = position_encoding_type
    self._fourier_kwargs = fourier_kwargs
    self._trainable_kwargs = trainable_kwargs
    self._project_pos_dim = project_pos_dim
    self._concat_or_add_pos = concat_or_add_pos
    self._conv_after_patching = conv_after_patching
    self._permutation_seed = permutation_seed
    if prep_type == "conv":
      num_layers = round(math.log(spatial_downsample, 4))
      if 4**num_layers != spatial_downsample:
        raise ValueError(
          f"prep_type='conv' needs spatial_downsample a power of 4, got {spatial_downsample}"
        )
      self.convnet = Conv2DDownsample(
        num_layers=num_layers, num_channels=num_channels, padding=conv_padding
      )
    elif prep_type == "conv1x1":
      self.convnet_1x1 = hk.Conv2D(num_channels, kernel_shape=1, stride=spatial_downsample)

  def _build_network_inputs(self, inputs: jax.Array) -> jax.Array | input_array.InputArray:
    """[B, *index_dims, C] -> [B, prod(index_dims), C + C_pos] (or C when added); an
    `InputArray` of the pixels and the grid's positions for concatenated Fourier features."""
    batch_size, *index_dims, channels = inputs.shape
    inputs = inputs.reshape(batch_size, -1, channels)
    if (
      self._position_encoding_type == "fourier"
      and self._project_pos_dim <= 0
      and self._concat_or_add_pos == "concat"
    ):
      # Kept as pixels and positions: each consumer builds the part of it that it needs.
      encode = position_encoding.fourier_encoder(index_dims, **(self._fourier_kwargs or {}))
      return input_array.InputArray(inputs, position_encoding.grid_positions(index_dims), encode)
    pos_enc = position_encoding.build_position_encoding(
      self._position_encoding_type,
      index_dims,
      batch_size,
      fourier_kwargs=self._fourier_kwargs,
      trainable_kwargs=self._trainable_kwargs,
      project_pos_dim=self._project_pos_dim,
    )
    pos_enc = pos_enc.astype(inputs.dtype)
    if self._concat_or_add_pos == "concat":
      return jnp.concatenate([inputs, pos_enc], axis=-1)
    if pos_enc.shape[-1] != channels:
      raise ValueError(
        f"concat_or_add_pos='add' needs the position encoding width {pos_enc.shape[-1]} to "
        f"equal the input width {channels}"
      )
    return inputs + pos_enc

  def __call__(self, images: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """Returns (inputs [B, M, C'], inputs_without_pos [B, M, C]); `inputs` is an
    `input_array.InputArray` where the position encoding is concatenated Fourier features
    (`input_array.dense` makes it a plain array)."""
    if images.ndim != 4:
      raise ValueError(f"ImagePreprocessor expects [B, H, W, C] images, got shape {images.shape}")
    sd = self._spatial_downsample
    if self._prep_type == "conv":
      x = self.convnet(images, is_training=is_training)
    elif self._prep_type == "conv1x1":
      x = self.convnet_1x1(images)
    elif self._prep_type == "patches":
      x = space_to_depth(images, sd)
      if self._conv_after_patching:
        x = precision.Linear(self._num_channels, name="patches_linear")(x)
    else:
      x = images[:, ::sd, ::sd] if sd > 1 else images
    inputs = self._build_network_inputs(x)
    inputs_without_pos = x.reshape(x.shape[0], -1, x.shape[-1])
    if self._permutation_seed is not None:
      perm = fixed_permutation(inputs.shape[1], self._permutation_seed)
      inputs_without_pos = inputs_without_pos[:, perm]
      if isinstance(inputs, input_array.InputArray):
        inputs = inputs.take(perm)
      else:
        inputs = inputs[:, perm]
    return inputs, inputs_without_pos


def flow_patches(frames: jax.Array) -> jax.Array:
  """Each pixel's 3x3 neighbourhood in both frames: [B, 2, H, W, C] -> [B, H, W, 18 C].

  The release's flow input: channels run (frame, row offset, column offset, channel), the
  order of its per-frame 3x3 patch extraction followed by its frames-to-depth step; the
  neighbourhood outside the image is zeros.
  """
  if frames.ndim != 5 or frames.shape[1] != 2:
    raise ValueError(f"flow inputs must be a frame pair [B, 2, H, W, C], got shape {frames.shape}")
  batch, _, height, width, channels = frames.shape
  padded = jnp.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  shifted = [padded[:, :, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
  x = jnp.stack(shifted, axis=4)  # [B, 2, H, W, 9, C]
  x = x.transpose(0, 2, 3, 1, 4, 5)  # [B, H, W, 2, 9, C]
  return x.reshape(batch, height, width, 2 * 9 * channels)


class FlowPreprocessor:
  """Frame pairs [B, 2, H, W, C] -> [B, H W, num_channels + C_ff] (the release's flow input).

  `flow_patches` (18 C values per pixel), then the `image_preprocessor`'s Linear
  `patches_linear` to `num_channels` and 2-D Fourier features of the H x W pixel grid
  (`fourier_kwargs`) concatenated after them. A plain class around an `ImagePreprocessor`,
  so the parameters keep the release's path `image_preprocessor/patches_linear`.
  """

  def __init__(self, num_channels: int, fourier_kwargs: dict):
    self.image = ImagePreprocessor(
      prep_type="patches",
      spatial_downsample=1,
      num_channels=num_channels,
      position_encoding_type="fourier",
      fourier_kwargs=fourier_kwargs,
      conv_after_patching=True,
    )

  def __call__(self, frames: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """Returns (inputs [B, H W, num_channels + C_ff], inputs_without_pos [B, H W, num_channels])."""
    return self.image(flow_patches(frames), is_training=is_training)


class PointCloudPreprocessor(hk.Module):
  """Point clouds [B, P, 3] -> [B, P, 3 + C_ff]: each point's xyz, then Fourier features of it.

  The coordinates serve as both the features and the positions (the Perceiver's ModelNet40
  input): the points are expected in the cube [-1, 1]^3 (`data.modelnet40.normalize`), and
  `fourier_kwargs` (num_bands, max_resolution with one entry per axis, concat_pos,
  sine_only) set the features exactly as for an image grid.
  """

  def __init__(self, fourier_kwargs: dict | None = None, name: str = "point_cloud_preprocessor"):
    super().__init__(name=name)
    self._fourier_kwargs = dict(fourier_kwargs or {})

  def __call__(self, points: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """Returns (inputs [B, P, 3 + C_ff], inputs_without_pos [B, P, 3])."""
    del is_training
    if points.ndim != 3 or points.shape[-1] != 3:
      raise ValueError(f"PointCloudPreprocessor expects [B, P, 3] points, got shape {points.shape}")
    fourier = dict(self._fourier_kwargs)
    if not fourier.get("max_resolution"):
      raise ValueError("PointCloudPreprocessor needs fourier max_resolution, one entry per axis")
    pos_enc = position_encoding.fourier_features(points.astype(jnp.float32), **fourier)
    return jnp.concatenate([points, pos_enc.astype(points.dtype)], axis=-1), points
