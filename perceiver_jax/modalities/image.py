"""The 'image' modality: images [B, H, W, C] through `models.preprocessors.ImagePreprocessor`.

Its fields of `config.model` (`default_config`): `input_shape` (H, W, C) and the section
`input`: how pixels become input elements (`prep_type`, `spatial_downsample`, `num_channels`,
`conv_after_patching`, `conv_padding`), their position encoding (`position_encoding_type`
'fourier' or 'trainable', `fourier.*`, `trainable.*`, `project_pos_dim`,
`concat_or_add_pos`) and an
optional fixed permutation of the input elements (`permute_pixels`, `permutation_seed`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from perceiver_jax.models import position_encoding
from perceiver_jax.models import preprocessors

SECTION = "input"
POSITION_ENCODINGS = ("fourier", "trainable")


def default_config() -> ml_collections.ConfigDict:
  """The modality's fields of `config.model`: ImageNet pixels with 2-D Fourier features."""
  return ml_collections.ConfigDict(
    dict(
      input_shape=(224, 224, 3),
      input=dict(
        prep_type="pixels",  # one of preprocessors.PREP_TYPES
        spatial_downsample=1,
        num_channels=64,  # conv / conv1x1 / patches_linear output width
        position_encoding_type="fourier",
        # max_resolution () means "the index dims of the input array".
        fourier=dict(num_bands=64, max_resolution=(224, 224), concat_pos=True, sine_only=False),
        trainable=dict(num_channels=258, init_scale=0.02),
        project_pos_dim=-1,  # > 0: a Linear projects the position encoding to this width
        concat_or_add_pos="concat",
        conv_after_patching=False,
        conv_padding="same",  # prep 'conv': preprocessors.CONV_PADDINGS
        permute_pixels=False,
        permutation_seed=0,
      ),
    )
  )


def input_grid(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """The (rows, columns) of the image grid the input elements come from: every prep type
  (strided pixels, patches, the SAME-padded conv stems) divides each side by
  `spatial_downsample`, rounding up; a conv stem padded as transformers' is a little smaller
  (`preprocessors.conv_stem_size`)."""
  height, width = cfg.input_shape[:2]
  down = cfg.input.spatial_downsample
  if cfg.input.prep_type == "conv" and cfg.input.conv_padding != "same":
    sides = []
    for side in (height, width):
      for _ in range(round(math.log(down, 4))):
        side = preprocessors.conv_stem_size(side, cfg.input.conv_padding)
      sides.append(side)
    return tuple(sides)
  return -(-height // down), -(-width // down)


def fourier_kwargs(fourier: ml_collections.ConfigDict) -> dict:
  """`position_encoding.fourier_position_encoding` keywords from a `fourier` section
  (max_resolution () becomes None: the index dims of the input array)."""
  return {**fourier, "max_resolution": tuple(fourier.max_resolution) or None}


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, M, C], computed from the config."""
  inp = cfg.input
  image_channels = cfg.input_shape[-1]
  if inp.prep_type in ("conv", "conv1x1"):
    features = inp.num_channels
  elif inp.prep_type == "patches":
    features = (
      inp.num_channels if inp.conv_after_patching else inp.spatial_downsample**2 * image_channels
    )
  else:
    features = image_channels
  if inp.project_pos_dim > 0:
    pos = inp.project_pos_dim
  elif inp.position_encoding_type == "fourier":
    pos = position_encoding.num_fourier_channels(
      len(cfg.input_shape) - 1, inp.fourier.num_bands, inp.fourier.concat_pos, inp.fourier.sine_only
    )
  else:
    pos = inp.trainable.num_channels
  return features + pos if inp.concat_or_add_pos == "concat" else features


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  inp = cfg.input

  def fail(field, value, message):
    raise ValueError(f"config.model.{field}={value!r}: {message}")

  if len(cfg.input_shape) != 3:
    fail("input_shape", tuple(cfg.input_shape), "an image model needs (height, width, channels)")
  if inp.prep_type not in preprocessors.PREP_TYPES:
    fail("input.prep_type", inp.prep_type, f"expected one of {preprocessors.PREP_TYPES}")
  if inp.conv_padding not in preprocessors.CONV_PADDINGS:
    fail("input.conv_padding", inp.conv_padding, f"expected one of {preprocessors.CONV_PADDINGS}")
  if inp.position_encoding_type not in POSITION_ENCODINGS:
    fail(
      "input.position_encoding_type",
      inp.position_encoding_type,
      "expected 'fourier' or 'trainable'",
    )
  height, width = cfg.input_shape[:2]
  sd = inp.spatial_downsample
  if inp.prep_type == "patches" and (height % sd or width % sd):
    fail("input.spatial_downsample", sd, f"does not divide the image size {height}x{width}")


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1) -> jax.Array:
  """Zero images [batch_size, H, W, C]."""
  return jnp.zeros((batch_size, *cfg.input_shape), jnp.float32)


def modality_sizes(cfg: ml_collections.ConfigDict) -> None:
  """None: one input array, no per-modality sizes for the decoder's query."""
  del cfg
  return None


def build_preprocessor(cfg: ml_collections.ConfigDict) -> preprocessors.ImagePreprocessor:
  """The `image_preprocessor`; call inside a Haiku transform."""
  inp = cfg.input
  return preprocessors.ImagePreprocessor(
    prep_type=inp.prep_type,
    spatial_downsample=inp.spatial_downsample,
    num_channels=inp.num_channels,
    position_encoding_type=inp.position_encoding_type,
    fourier_kwargs=fourier_kwargs(inp.fourier),
    trainable_kwargs=dict(inp.trainable),
    project_pos_dim=inp.project_pos_dim,
    concat_or_add_pos=inp.concat_or_add_pos,
    conv_after_patching=inp.conv_after_patching,
    permutation_seed=inp.permutation_seed if inp.permute_pixels else None,
    conv_padding=inp.conv_padding,
  )
