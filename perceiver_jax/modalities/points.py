"""The 'points' modality: point clouds [B, P, 3] through
`models.preprocessors.PointCloudPreprocessor`.

Its fields of `config.model` (`default_config`): `input_shape` (P, 3) and the section
`points`: the 3-D Fourier features of each point's xyz (`fourier.*`, with one
`max_resolution` entry per axis). The paper's ModelNet40 input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from perceiver_jax.models import position_encoding
from perceiver_jax.models import preprocessors

SECTION = "points"


def default_config() -> ml_collections.ConfigDict:
  """The modality's fields of `config.model`: 2,048 points, 64 bands up to frequency 1120.

  Bands run from 1 to max_resolution / 2, so max_resolution is 2 x 1120 per axis.
  """
  return ml_collections.ConfigDict(
    dict(
      input_shape=(2048, 3),
      points=dict(
        fourier=dict(
          num_bands=64, max_resolution=(2240, 2240, 2240), concat_pos=True, sine_only=False
        ),
      ),
    )
  )


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, P, C]: xyz, then their Fourier features."""
  fourier = cfg.points.fourier
  return cfg.input_shape[-1] + position_encoding.num_fourier_channels(
    3, fourier.num_bands, fourier.concat_pos, fourier.sine_only
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  shape, resolution = tuple(cfg.input_shape), tuple(cfg.points.fourier.max_resolution)
  if len(shape) != 2 or shape[-1] != 3:
    raise ValueError(
      f"config.model.input_shape={shape!r}: a point cloud model needs (num_points, 3)"
    )
  if len(resolution) != 3:
    raise ValueError(
      f"config.model.points.fourier.max_resolution={resolution!r}: a point cloud needs one "
      "entry per axis (x, y, z)"
    )


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1) -> jax.Array:
  """Zero point clouds [batch_size, P, 3]."""
  return jnp.zeros((batch_size, *cfg.input_shape), jnp.float32)


def modality_sizes(cfg: ml_collections.ConfigDict) -> None:
  """None: one input array, no per-modality sizes for the decoder's query."""
  del cfg
  return None


def build_preprocessor(cfg: ml_collections.ConfigDict) -> preprocessors.PointCloudPreprocessor:
  """The `point_cloud_preprocessor`; call inside a Haiku transform."""
  fourier = cfg.points.fourier
  return preprocessors.PointCloudPreprocessor(
    fourier_kwargs={**fourier, "max_resolution": tuple(fourier.max_resolution)}
  )
