"""Decoders: turn the final latents into outputs.

* `ProjectionDecoder`: mean over the latents, then one Linear (the original Perceiver head).
* `BasicDecoder`: output queries (learned or Fourier, optionally a subsample of the
  output points) cross-attend to the latents, then a Linear (Perceiver IO).
* `ClassificationDecoder`: a `BasicDecoder` with one learned query, returning [B, classes].
* `SentenceDecoder`: one learned query cross-attends to the latents, then a 2-layer tanh MLP
  to [B, num_outputs]: the language model's GLUE head (class logits, or 1 regression score).
  Both share the one-query delegation (`_OneQueryDecoder`); they differ in what follows it.
* `EmbeddingTiedDecoder`: one learned query per input position, then logits through the
  transposed input embedding plus a bias (`EmbeddingDecoder`): the language model's head.
* `ClassificationPostprocessor` / `ProjectionPostprocessor`: the official release's
  postprocessors, for decoders that output features rather than logits.

Every decoder is used the same way, as in the official release: first
`query = decoder.decoder_query(inputs, modality_sizes=None, inputs_without_pos=None,
subsampled_points=None)` builds the output queries from what the decoder needs (None for
`ProjectionDecoder`, which has none), then `decoder(query, z, *, is_training,
query_mask=None)` decodes the latents.

Shapes: inputs [B, M, C] the encoder's input array; z [B, N, D] latents; queries [B, O, Cq]
for O output points.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.models import attention
from perceiver_jax.models import position_encoding
from perceiver_jax.models import precision

# How a `BasicDecoder` builds its queries: learned, Fourier features of the output grid, or
# not at all ('none': the caller builds them, as the multimodal decoder does).
POSITION_ENCODING_TYPES = ("trainable", "fourier", "none")


class BasicDecoder(hk.Module):
  """Cross-attention from output queries to the latents, then an output Linear."""

  def __init__(
    self,
    output_num_channels: int,
    output_index_dims: Sequence[int],
    position_encoding_type: str = "trainable",
    num_z_channels: int = 1024,
    num_heads: int = 1,
    qk_channels: int | None = None,
    v_channels: int | None = None,
    use_query_residual: bool = False,
    output_w_init: hk.initializers.Initializer | None = None,
    concat_preprocessed_input: bool = False,
    final_project: bool = True,
    trainable_kwargs: dict | None = None,
    fourier_kwargs: dict | None = None,
    name: str | None = None,
  ):
    super().__init__(name=name)
    if position_encoding_type not in POSITION_ENCODING_TYPES:
      raise ValueError(
        f"decoder position_encoding_type must be one of {POSITION_ENCODING_TYPES}, got "
        f"{position_encoding_type!r}"
      )
    self._output_num_channels = output_num_channels
    self._output_index_dims = tuple(output_index_dims)
    self._position_encoding_type = position_encoding_type
    self._num_heads = num_heads
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._use_query_residual = use_query_residual
    self._output_w_init = output_w_init
    self._concat_preprocessed_input = concat_preprocessed_input
    self._final_project = final_project
    self._fourier_kwargs = dict(fourier_kwargs or {})
    if position_encoding_type == "trainable":
      kwargs = {"num_channels": num_z_channels, **(trainable_kwargs or {})}
      self.output_pos_enc = position_encoding.TrainablePositionEncoding(
        int(np.prod(self._output_index_dims)), **kwargs
      )

  def decoder_query(
    self,
    inputs: jax.Array,
    modality_sizes: dict[str, int] | None = None,
    inputs_without_pos: jax.Array | None = None,
    subsampled_points: jax.Array | None = None,
  ) -> jax.Array:
    """Output queries [B, O, Cq] for the encoder's inputs [B, M, C].

    `subsampled_points` ([O] flat indices into `output_index_dims`, or [B, O] for a
    different subset per example) selects a subset of the output points, as when decoding a
    random sample of pixels. With
    `concat_preprocessed_input`, `inputs_without_pos` [B, O, C'] (one per output point)
    is concatenated before the position queries. `modality_sizes` is unused here: it is
    part of the interface for decoders over several modalities.
    """
    del modality_sizes
    batch_size = inputs.shape[0]
    if self._position_encoding_type == "none":
      raise ValueError("a decoder with position_encoding_type='none' is given its queries")
    if self._position_encoding_type == "trainable":
      query = self.output_pos_enc(batch_size)  # [B, prod(output_index_dims), Cq]
      if subsampled_points is not None and subsampled_points.ndim == 2:
        query = jnp.take_along_axis(query, subsampled_points[:, :, None], axis=1)
      elif subsampled_points is not None:
        query = query[:, subsampled_points]
    else:
      pos = None
      if subsampled_points is not None:
        coords = jnp.stack(jnp.unravel_index(subsampled_points, self._output_index_dims), axis=-1)
        # The release maps index i to -1 + 2 i / n here (not the grid's
        # -1 + 2 i / (n - 1)); kept so decoded outputs match its checkpoints.
        pos = -1.0 + 2.0 * coords / jnp.asarray(self._output_index_dims, jnp.float32)
        pos = jnp.broadcast_to(pos, (batch_size, *pos.shape[-2:]))  # [B, O, d]
      query = position_encoding.fourier_position_encoding(
        self._output_index_dims, batch_size, pos=pos, **self._fourier_kwargs
      )
    if self._concat_preprocessed_input:
      if inputs_without_pos is None:
        raise ValueError("concat_preprocessed_input needs inputs_without_pos")
      query = jnp.concatenate([inputs_without_pos, query], axis=-1)
    return query

  def __call__(
    self,
    query: jax.Array,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> jax.Array:
    """query [B, O, Cq], z [B, N, D], query_mask [B, O] -> [B, O, output_num_channels]."""
    attention_mask = None
    if query_mask is not None:
      attention_mask = jnp.broadcast_to(
        query_mask[:, :, None].astype(bool), (*query.shape[:2], z.shape[1])
      )  # [B, O, N]
    output = attention.CrossAttention(
      num_heads=self._num_heads,
      widening_factor=1,
      shape_for_attn="kv",
      use_query_residual=self._use_query_residual,
      qk_channels=self._qk_channels,
      v_channels=self._v_channels,
    )(query, z, attention_mask, is_training=is_training)
    if self._final_project:
      output = precision.Linear(
        self._output_num_channels, w_init=self._output_w_init, name="output"
      )(output)
    return output


class _OneQueryDecoder(hk.Module):
  """The decoders with one output for the whole input: a `BasicDecoder` with one learned query
  (`output_index_dims=(1,)`) cross-attends to the latents, giving that query's features
  [B, C]. Subclasses pass the `BasicDecoder`'s arguments up; one that adds layers after it
  does so in its own `__call__` (Haiku would prefix the names of modules built in any other
  method with `~<method>`, changing the parameter paths).
  """

  def __init__(self, name: str | None, **basic_decoder_kwargs):
    super().__init__(name=name)
    self.decoder = BasicDecoder(output_index_dims=(1,), **basic_decoder_kwargs)

  def decoder_query(
    self,
    inputs: jax.Array,
    modality_sizes: dict[str, int] | None = None,
    inputs_without_pos: jax.Array | None = None,
    subsampled_points: jax.Array | None = None,
  ) -> jax.Array:
    """The one learned query [B, 1, Cq]."""
    return self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos, subsampled_points)

  def __call__(
    self,
    query: jax.Array,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> jax.Array:
    """query [B, 1, Cq], z [B, N, D], query_mask [B, 1] -> the query's features [B, C]."""
    return self.decoder(query, z, is_training=is_training, query_mask=query_mask)[:, 0, :]


class ClassificationDecoder(_OneQueryDecoder):
  """One learned query cross-attends to the latents; the `BasicDecoder`'s output Linear gives
  logits [B, num_classes]. `decoder_kwargs` are the other `BasicDecoder` arguments."""

  def __init__(self, num_classes: int, name: str | None = None, **decoder_kwargs):
    super().__init__(name, output_num_channels=num_classes, **decoder_kwargs)


class SentenceDecoder(_OneQueryDecoder):
  """One learned query cross-attends to the latents (no output Linear), then Linear ->
  tanh -> Linear: [B, N, D] -> [B, num_outputs] (the paper's GLUE head).

  Modules: `sentence_decoder/~/basic_decoder` (query and cross-attention),
  `sentence_decoder/hidden` [Cq, hidden_channels] and `sentence_decoder/output`.
  """

  def __init__(
    self,
    num_outputs: int,
    query_channels: int,
    hidden_channels: int,
    num_heads: int,
    qk_channels: int | None = None,
    use_query_residual: bool = False,
    query_init_scale: float = 0.02,
    name: str = "sentence_decoder",
  ):
    super().__init__(
      name,
      output_num_channels=query_channels,
      num_z_channels=query_channels,
      num_heads=num_heads,
      qk_channels=qk_channels,
      v_channels=query_channels,
      use_query_residual=use_query_residual,
      final_project=False,
      trainable_kwargs={"init_scale": query_init_scale},
    )
    self._num_outputs = num_outputs
    self._hidden_channels = hidden_channels

  def __call__(
    self,
    query: jax.Array,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> jax.Array:
    """query [B, 1, Cq], z [B, N, D] -> [B, num_outputs]."""
    features = super().__call__(query, z, is_training=is_training, query_mask=query_mask)
    hidden = jnp.tanh(precision.Linear(self._hidden_channels, name="hidden")(features))  # [B, H]
    return precision.Linear(self._num_outputs, name="output")(hidden)


class EmbeddingDecoder(hk.Module):
  """Logits from features through a transposed embedding matrix: [B, O, D] -> [B, O, V]."""

  def __init__(self, vocab_size: int, name: str = "embedding_decoder"):
    super().__init__(name=name)
    self._vocab_size = vocab_size

  def __call__(self, features: jax.Array, embedding_matrix: jax.Array) -> jax.Array:
    """features [B, O, D], embedding_matrix [V, D] -> logits [B, O, V] (plus a learned bias)."""
    bias = hk.get_parameter("bias", [self._vocab_size], init=jnp.zeros)
    matrix = embedding_matrix.astype(features.dtype)
    return jnp.einsum("bod,vd->bov", features, matrix) + bias.astype(features.dtype)


class EmbeddingTiedDecoder:
  """A `BasicDecoder` with one learned query per input position (no output Linear, no query
  residual), then logits through the input embedding (`EmbeddingDecoder`): [B, L, V].

  A plain object, so that `basic_decoder` and `embedding_decoder` are top-level modules as in
  the released language model. `embedding_matrix` is a function returning the input
  embedding [V, D], called when decoding (the preprocessor owns that parameter). Its queries
  follow the inputs, so the model passes the input mask as `query_mask`.
  """

  queries_follow_inputs = True

  def __init__(
    self,
    embedding_matrix: Callable[[], jax.Array],
    vocab_size: int,
    num_outputs: int,
    query_channels: int,
    num_heads: int,
    qk_channels: int | None = None,
    query_init_scale: float = 0.02,
  ):
    self._embedding_matrix = embedding_matrix
    self.decoder = BasicDecoder(
      output_num_channels=query_channels,
      output_index_dims=(num_outputs,),
      num_z_channels=query_channels,
      num_heads=num_heads,
      qk_channels=qk_channels,
      v_channels=query_channels,
      use_query_residual=False,
      final_project=False,
      trainable_kwargs={"init_scale": query_init_scale},
      name="basic_decoder",
    )
    self.embedding_decoder = EmbeddingDecoder(vocab_size)

  def decoder_query(
    self,
    inputs: jax.Array,
    modality_sizes: dict[str, int] | None = None,
    inputs_without_pos: jax.Array | None = None,
    subsampled_points: jax.Array | None = None,
  ) -> jax.Array:
    """One learned query per input position [B, L, D] (or [B, O, D] for O subsampled)."""
    return self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos, subsampled_points)

  def __call__(
    self,
    query: jax.Array,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> jax.Array:
    """query [B, L, D], z [B, N, Dz], query_mask [B, L] -> logits [B, L, V]."""
    features = self.decoder(query, z, is_training=is_training, query_mask=query_mask)
    return self.embedding_decoder(features, self._embedding_matrix())


class ProjectionDecoder(hk.Module):
  """Mean over the latent index dimension, then a Linear: [B, N, D] -> [B, num_classes]."""

  def __init__(
    self,
    num_classes: int,
    w_init: hk.initializers.Initializer | None = None,
    name: str | None = None,
  ):
    super().__init__(name=name)
    self.final_layer = precision.Linear(
      num_classes, w_init=w_init or hk.initializers.Constant(0.0), name="logits"
    )

  def decoder_query(
    self,
    inputs: jax.Array,
    modality_sizes: dict[str, int] | None = None,
    inputs_without_pos: jax.Array | None = None,
    subsampled_points: jax.Array | None = None,
  ) -> None:
    """No query: the latents are pooled."""
    del inputs, modality_sizes, inputs_without_pos, subsampled_points

  def __call__(
    self,
    query: None,
    z: jax.Array,
    *,
    is_training: bool,
    query_mask: jax.Array | None = None,
  ) -> jax.Array:
    """z [B, N, D] -> logits [B, num_classes]; `query` and `query_mask` are unused."""
    del query, is_training, query_mask
    return self.final_layer(jnp.mean(z, axis=1))


class ClassificationPostprocessor(hk.Module):
  """Linear on decoder features, logits of the first output point: [B, O, C] -> [B, K]."""

  def __init__(self, num_classes: int, name: str | None = None):
    super().__init__(name=name)
    self._num_classes = num_classes

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return precision.Linear(self._num_classes)(inputs)[:, 0, :]


class ProjectionPostprocessor(hk.Module):
  """Linear on decoder features: [B, O, C] -> [B, O, num_outputs]."""

  def __init__(self, num_outputs: int, name: str | None = None):
    super().__init__(name=name)
    self._num_outputs = num_outputs

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return precision.Linear(self._num_outputs)(inputs)
