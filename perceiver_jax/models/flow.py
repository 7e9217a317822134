"""The optical-flow decoder: one query per input pixel, the preprocessed inputs themselves.

`FlowDecoder` (module `flow_decoder`) owns a `BasicDecoder` (`flow_decoder/~/basic_decoder`):
the encoder's inputs [B, H W, C] cross-attend to the latents (no query residual in the
release; `use_query_residual` adds the queries back, giving each pixel's output its own
inputs besides what it reads from the latents), an output
Linear (zero-initialised in the release, so an untrained model predicts zero flow;
`zero_init_output=False` gives it Haiku's default initialisation) gives 2
channels per pixel, divided by `rescale_factor` (100 in the release), multiplied by
`output_scale` (20: the factor the release's colab applies to the model's output) and laid out
as the image grid [B, H, W, 2]: flow in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import haiku as hk
import jax

from perceiver_jax.models import decoders


class FlowDecoder(hk.Module):
  """Decodes latents [B, N, D] at every input pixel: -> flow [B, H, W, output_num_channels]."""

  # The queries are the encoder's inputs: padded inputs (if any) are masked as queries too.
  queries_follow_inputs = True

  def __init__(
    self,
    output_image_shape: Sequence[int],
    num_z_channels: int,
    output_num_channels: int = 2,
    rescale_factor: float = 100.0,
    output_scale: float = 20.0,
    num_heads: int = 1,
    qk_channels: int | None = None,
    use_query_residual: bool = False,
    zero_init_output: bool = True,
    name: str = "flow_decoder",
  ):
    super().__init__(name=name)
    if len(output_image_shape) != 2:
      raise ValueError(f"output_image_shape must be (height, width), got {output_image_shape}")
    if not rescale_factor > 0:
      raise ValueError(f"rescale_factor must be positive, got {rescale_factor}")
    self._image_shape = tuple(output_image_shape)
    if not output_scale > 0:
      raise ValueError(f"output_scale must be positive, got {output_scale}")
    self._rescale_factor = rescale_factor
    self._output_scale = output_scale
    # The query positions are never built (the queries are the inputs): 'fourier' keeps the
    # BasicDecoder free of a trainable query array.
    self.decoder = decoders.BasicDecoder(
      output_num_channels=output_num_channels,
      output_index_dims=self._image_shape,
      position_encoding_type="fourier",
      num_z_channels=num_z_channels,
      num_heads=num_heads,
      qk_channels=qk_channels,
      use_query_residual=use_query_residual,
      output_w_init=hk.initializers.Constant(0.0) if zero_init_output else None,
    )

  def decoder_query(
    self,
    inputs: jax.Array,
    modality_sizes: dict[str, int] | None = None,
    inputs_without_pos: jax.Array | None = None,
    subsampled_points: jax.Array | None = None,
  ) -> jax.Array:
    """The queries [B, H W, C]: the encoder's inputs [B, H W, C] as they are."""
    del modality_sizes, inputs_without_pos
    if subsampled_points is not None:
      raise ValueError("the flow decoder decodes every pixel; subsampled_points is not supported")
    return inputs

  def __call__(
    self,
    query: jax.Array,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> jax.Array:
    """query [B, H W, C], z [B, N, D], query_mask [B, H W] -> flow [B, H, W, channels]."""
    height, width = self._image_shape
    if query.shape[1] != height * width:
      raise ValueError(
        f"the flow decoder expects {height}x{width}={height * width} queries, got {query.shape[1]}"
      )
    preds = self.decoder(query, z, is_training=is_training, query_mask=query_mask)
    preds = preds / self._rescale_factor * self._output_scale
    return preds.reshape(preds.shape[0], height, width, preds.shape[-1])
