"""The 'flow' modality: frame pairs [B, 2, H, W, 3] in [-1, 1] for optical flow.

Through `models.preprocessors.FlowPreprocessor`: each pixel's 3x3 neighbourhood in both
frames (54 values for RGB, zeros outside the image), a Linear `patches_linear` to
`flow.num_channels` (64 released), then 2-D Fourier features of the pixel grid (`flow.fourier`:
64 bands up to max resolution 368 x 496, raw positions concatenated): 322 channels per pixel
for the released model, one input element per pixel of the first frame.

Its fields of `config.model` (`default_config`): `input_shape` (2, H, W, C), the frame pair
without the batch axis, and the section `flow`: `num_channels`, `fourier.*` and
`rescale_factor`, what the flow decoder (`models.flow.FlowDecoder`, decoder.type 'flow')
divides its output projection by (100 released), and `output_scale`, what it then multiplies
by (20: the release's colab multiplies the model's output by 20), so that the model's outputs
are flow in pixels everywhere in this project (training targets, metrics, the CLI).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from perceiver_jax.models import position_encoding
from perceiver_jax.models import preprocessors

SECTION = "flow"


def default_config() -> ml_collections.ConfigDict:
  """The modality's fields of `config.model`: the release's 368 x 496 RGB frame pairs."""
  return ml_collections.ConfigDict(
    dict(
      input_shape=(2, 368, 496, 3),
      flow=dict(
        num_channels=64,  # patches_linear output width
        # max_resolution () means "the pixel grid of the frames".
        fourier=dict(num_bands=64, max_resolution=(368, 496), concat_pos=True, sine_only=False),
        rescale_factor=100.0,
        output_scale=20.0,  # pixels per unit of the released model's output
        # The output Linear starts at zero (the release: an untrained model predicts no flow);
        # False: Haiku's default initialisation.
        zero_init_output=True,
      ),
    )
  )


def image_shape(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """The (height, width) of the frames: the grid of input elements and of the output flow."""
  return tuple(cfg.input_shape[1:3])


def _fourier_kwargs(cfg: ml_collections.ConfigDict) -> dict:
  fourier = cfg.flow.fourier
  return {**fourier, "max_resolution": tuple(fourier.max_resolution) or image_shape(cfg)}


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, H W, C]: 64 + 258 = 322 released."""
  fourier = cfg.flow.fourier
  return cfg.flow.num_channels + position_encoding.num_fourier_channels(
    2, fourier.num_bands, fourier.concat_pos, fourier.sine_only
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""

  def fail(field, value, message):
    raise ValueError(f"config.model.{field}={value!r}: {message}")

  shape = tuple(cfg.input_shape)
  if len(shape) != 4 or shape[0] != 2 or min(shape) < 1:
    fail("input_shape", shape, "a flow model needs a frame pair (2, height, width, channels)")
  if cfg.flow.num_channels < 1:
    fail("flow.num_channels", cfg.flow.num_channels, "must be at least 1")
  if cfg.flow.fourier.num_bands < 1:
    fail("flow.fourier.num_bands", cfg.flow.fourier.num_bands, "must be at least 1")
  if len(cfg.flow.fourier.max_resolution) not in (0, 2):
    fail(
      "flow.fourier.max_resolution",
      tuple(cfg.flow.fourier.max_resolution),
      "expected (height, width), or () for the frame size",
    )
  if not cfg.flow.rescale_factor > 0:
    fail("flow.rescale_factor", cfg.flow.rescale_factor, "must be positive")
  if not cfg.flow.output_scale > 0:
    fail("flow.output_scale", cfg.flow.output_scale, "must be positive")


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1) -> jax.Array:
  """Zero frame pairs [batch_size, 2, H, W, C]."""
  return jnp.zeros((batch_size, *cfg.input_shape), jnp.float32)


def modality_sizes(cfg: ml_collections.ConfigDict) -> None:
  """None: one input array, no per-modality sizes for the decoder's query."""
  del cfg
  return None


def build_preprocessor(cfg: ml_collections.ConfigDict) -> preprocessors.FlowPreprocessor:
  """The flow input (`image_preprocessor/patches_linear`); call inside a Haiku transform."""
  return preprocessors.FlowPreprocessor(
    num_channels=cfg.flow.num_channels, fourier_kwargs=_fourier_kwargs(cfg)
  )
