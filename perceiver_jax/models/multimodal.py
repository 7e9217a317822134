"""The multimodal decoder of Perceiver IO's video autoencoder: one decoder for every modality.

Each modality has its own queries, built by its own query decoder: Fourier features of the
output position for video pixels and audio patches (a `BasicDecoder` with Fourier queries),
one learned query for the label (a `ClassificationDecoder`, whose query alone is used). Each
modality's queries are padded to a common width with a learned `<modality>_padding` (the
widest query plus `min_padding_size`), concatenated along the output axis in sorted order of
the modality names, and decoded together by one cross-attend (`multimodal_decoder/~/basic_decoder`)
to features [B, O, C]. Per-modality postprocessors then turn each modality's features into its
outputs: audio samples (`AudioPostprocessor`), RGB values (`ProjectionPostprocessor`) and class
logits (`ClassificationPostprocessor`).

A call decodes a subset of the output points of each modality (`subsampled_points`), so that
memory does not grow with the clip: a random subset in training, consecutive chunks when a
whole clip is reconstructed. Output positions always follow the subsampled mapping of the
release (index i of n -> -1 + 2 i / n), also when every point is decoded at once.

Module names are those of the release (`multimodal_decoder/~decoder_query/<modality>_padding`,
`classification_decoder/~/basic_decoder/~/trainable_position_encoding`, `audio_postprocessor`,
`projection_postprocessor`, `classification_postprocessor`).

Shapes: z [B, N, D] latents; O_m output points of modality m; queries [B, sum O_m, Cq].
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.models import decoders
from perceiver_jax.models import position_encoding
from perceiver_jax.models import precision

Points = Mapping[str, jax.Array | None]


class AudioPostprocessor(hk.Module):
  """Decoder features of audio patches -> their samples: [B, O, C] -> [B, O, samples_per_patch]."""

  def __init__(self, samples_per_patch: int, name: str | None = None):
    super().__init__(name=name)
    self._samples_per_patch = samples_per_patch

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return precision.Linear(self._samples_per_patch)(inputs)


class MultimodalDecoder(hk.Module):
  """Per-modality queries, padded to one width, decoded by one cross-attend.

  `query_decoders` maps each modality to an object whose `decoder_query(inputs,
  subsampled_points=...)` gives its queries [B, O_m, C_m]; they are only asked for queries.
  The remaining arguments are those of the shared `BasicDecoder`.
  """

  def __init__(
    self,
    query_decoders: Mapping[str, object],
    *,
    output_num_channels: int,
    min_padding_size: int = 2,
    num_heads: int = 1,
    qk_channels: int | None = None,
    use_query_residual: bool = False,
    name: str = "multimodal_decoder",
  ):
    super().__init__(name=name)
    self._query_decoders = dict(query_decoders)
    self._min_padding_size = min_padding_size
    self.decoder = decoders.BasicDecoder(
      output_num_channels=output_num_channels,
      output_index_dims=(1,),  # unused: the queries come from `decoder_query`
      position_encoding_type="none",
      num_heads=num_heads,
      qk_channels=qk_channels,
      use_query_residual=use_query_residual,
    )

  def decoder_query(self, inputs: jax.Array, subsampled_points: Points) -> jax.Array:
    """Queries [B, sum O_m, width] of every modality's points (sorted by modality name)."""
    queries = {
      m: self._query_decoders[m].decoder_query(inputs, subsampled_points=subsampled_points.get(m))
      for m in sorted(self._query_decoders)
    }
    width = max(q.shape[-1] for q in queries.values()) + self._min_padding_size
    padded = []
    for modality, query in queries.items():
      batch, num, channels = query.shape
      padding = position_encoding.TrainablePositionEncoding(
        1, num_channels=width - channels, init_scale=0.02, name=f"{modality}_padding"
      )(None)  # [1, width - C_m]
      padding = jnp.broadcast_to(padding.astype(query.dtype), (batch, num, width - channels))
      padded.append(jnp.concatenate([query, padding], axis=-1))
    return jnp.concatenate(padded, axis=1)

  def __call__(self, query: jax.Array, z: jax.Array, *, is_training: bool) -> jax.Array:
    """query [B, O, width], z [B, N, D] -> features [B, O, output_num_channels]."""
    return self.decoder(query, z, is_training=is_training)


class MultimodalAutoencodingDecoder:
  """The autoencoder's decoder and postprocessors, used like every decoder of `model.py`.

  A plain object, so that its parts are top-level modules as in the release: `decoder` (a
  `MultimodalDecoder`), `postprocessors` {modality: features [B, O_m, C] -> outputs}.
  `num_points` {modality: points of its whole output}; a modality with 1 point (the label) is
  never subsampled. `decoder_query` takes `subsampled_points` {modality: [O_m] or [B, O_m]
  flat indices} (a modality left out, or None, decodes all its points) and remembers the
  counts, which the call that follows uses to split the features by modality.

  Outputs: {modality: postprocessed outputs}, e.g. audio [B, O_a, samples_per_patch], image
  [B, O_i, 3], label [B, num_classes].
  """

  def __init__(
    self,
    decoder: MultimodalDecoder,
    postprocessors: Mapping[str, Callable[[jax.Array], jax.Array]],
    num_points: Mapping[str, int],
  ):
    self.decoder = decoder
    self._postprocessors = dict(postprocessors)
    self._num_points = dict(num_points)
    self._sizes: dict[str, int] | None = None

  def points(self, subsampled_points: Points | None) -> dict[str, jax.Array | None]:
    """Every modality's indices: the given ones, or all of its points (None for one point)."""
    subsampled_points = dict(subsampled_points or {})
    unknown = sorted(set(subsampled_points) - set(self._num_points))
    if unknown:
      raise ValueError(
        f"subsampled_points for {unknown}; the modalities are {sorted(self._num_points)}"
      )
    points = {}
    for modality, count in self._num_points.items():
      given = subsampled_points.get(modality)
      if count == 1 and given is not None:
        raise ValueError(f"modality {modality!r} has one output point; it is not subsampled")
      points[modality] = None if count == 1 else jnp.arange(count) if given is None else given
    return points

  def decoder_query(
    self,
    inputs: jax.Array,
    modality_sizes: dict[str, int] | None = None,
    inputs_without_pos: jax.Array | None = None,
    subsampled_points: Points | None = None,
  ) -> jax.Array:
    """The queries [B, sum O_m, width] of the chosen points of every modality."""
    del modality_sizes, inputs_without_pos  # autoencoding: queries are positions only
    points = self.points(subsampled_points)
    self._sizes = {m: 1 if p is None else p.shape[-1] for m, p in sorted(points.items())}
    return self.decoder.decoder_query(inputs, points)

  def __call__(
    self,
    query: jax.Array,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> dict[str, jax.Array]:
    """query [B, O, width], z [B, N, D] -> {modality: outputs}."""
    del query_mask  # every query is a real output point
    if self._sizes is None:
      raise ValueError("call decoder_query first: it chooses the output points")
    features = self.decoder(query, z, is_training=is_training)  # [B, O, C]
    outputs, start = {}, 0
    for modality, size in self._sizes.items():
      outputs[modality] = self._postprocessors[modality](features[:, start : start + size])
      start += size
    return outputs
