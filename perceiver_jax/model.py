"""Builds a Perceiver (or a baseline) from a model config (`configs/*.py`, `registry`).

The model section of a config (`config.model`) declares every field below; nothing has a
default in code. Each axis of variation is dispatched once, through one table:
  modality               'image', 'points', 'audio_video', 'audio_video_label', 'text' or
                         'flow': the adapter in
                         `perceiver_jax.modalities` that validates its section, sizes and
                         builds the preprocessor (image: `input_shape` and `input.*`; points:
                         `input_shape` and `points.*`; audio_video: `audio_video.*`;
                         audio_video_label: `audio_video_label.*`; text:
                         `input_shape` and `text.*`; flow: `input_shape` and `flow.*`). A
                         preprocessor that also returns an input mask [B, M] (text: padding)
                         masks those inputs as keys of the encoder's cross-attend and, for a
                         decoder whose queries follow the inputs, as queries of the decoder.
  architecture           'perceiver', or a baseline fed the same input array (`baselines`):
                         'convnet', 'vit', 'transformer', configured by `baseline.*`; the
                         encoder and decoder fields are then unused.
  decoder.type           'classification' (Perceiver IO query decoder), 'projection' (mean
                         over latents + Linear, the original Perceiver) or 'embedding' (one
                         query per input, logits through the text modality's input embedding:
                         the language model) or 'sentence' (one query, then a 2-layer tanh
                         MLP of the input width: the GLUE head, [B, num_classes]) or 'flow'
                         (one query per pixel, the inputs themselves: flow [B, H, W, 2] of
                         modality 'flow') or 'multimodal' (the video autoencoder's: queries of
                         every modality of 'audio_video_label' decoded together, a dict of
                         outputs per modality, `models.multimodal`): `DECODERS`.
                         decoder.qk_channels 0: derived. decoder.mask_padded_queries:
                         mask the queries of padded inputs (decoders whose queries follow
                         the inputs).
  num_classes            output classes.
  num_latents, num_latent_channels, num_blocks, num_self_attends_per_block,
  num_cross_attends, cross_attend_placement, share_cross_attend_weights,
  share_latent_block_weights, *_heads, *_qk_channels, *_v_channels (0: derived),
  *_widening_factor, dropout_*, latent_init_scale  the encoder.
  encoder_name           the encoder's module name: 'perceiver_encoder' in the releases but
                         the video autoencoder's, 'encoder'.
  attention_chunk_size   0 for plain cross-attention, else the key chunk size.
  remat                  rematerialise every block in the backward pass.
  compute_dtype          'float32' or 'bfloat16': the dtype the encoder and decoder compute
                         in; parameters stay float32 (`precision`).
  activation             the MLPs' GELU: 'gelu_tanh' (the release) or 'gelu_exact'
                         (transformers' port): `attention.ACTIVATIONS`.

Top-level module names are those of the official release (`image_preprocessor`,
`perceiver_encoder`, `classification_decoder`), so its checkpoints load as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax import modalities
from perceiver_jax.models import attention
from perceiver_jax.models import baselines
from perceiver_jax.models import decoders
from perceiver_jax.models import encoder as encoder_lib
from perceiver_jax.models import flow as flow_lib
from perceiver_jax.models import input_array
from perceiver_jax.models import precision


def _or_none(value: int) -> int | None:
  """Configs use 0 for 'derive from the inputs' so that the field stays an int."""
  return value or None


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, M, C], computed from the config."""
  return modalities.get(cfg.modality).input_channels(cfg)


def _classification_decoder(cfg: ml_collections.ConfigDict, preprocessor) -> hk.Module:
  del preprocessor
  return decoders.ClassificationDecoder(
    num_classes=cfg.num_classes,
    num_z_channels=cfg.num_latent_channels,
    num_heads=cfg.decoder.num_heads,
    qk_channels=_or_none(cfg.decoder.qk_channels),
    use_query_residual=cfg.decoder.use_query_residual,
    trainable_kwargs={"init_scale": cfg.decoder.query_init_scale},
  )


def _projection_decoder(cfg: ml_collections.ConfigDict, preprocessor) -> hk.Module:
  del preprocessor
  return decoders.ProjectionDecoder(num_classes=cfg.num_classes)


def _embedding_decoder(cfg: ml_collections.ConfigDict, preprocessor):
  """The language model's head; `preprocessor` must own an `embedding_matrix` (text)."""
  return decoders.EmbeddingTiedDecoder(
    embedding_matrix=lambda: preprocessor.embedding_matrix,
    vocab_size=cfg.num_classes,
    num_outputs=cfg.input_shape[0],
    query_channels=input_channels(cfg),
    num_heads=cfg.decoder.num_heads,
    qk_channels=_or_none(cfg.decoder.qk_channels),
    query_init_scale=cfg.decoder.query_init_scale,
  )


def _sentence_decoder(cfg: ml_collections.ConfigDict, preprocessor) -> hk.Module:
  """The GLUE head: one query, hidden width = query width = the input width (768 released)."""
  del preprocessor
  width = input_channels(cfg)
  return decoders.SentenceDecoder(
    num_outputs=cfg.num_classes,
    query_channels=width,
    hidden_channels=width,
    num_heads=cfg.decoder.num_heads,
    qk_channels=_or_none(cfg.decoder.qk_channels),
    use_query_residual=cfg.decoder.use_query_residual,
    query_init_scale=cfg.decoder.query_init_scale,
  )


def _multimodal_decoder(cfg: ml_collections.ConfigDict, preprocessor):
  """The video autoencoder's decoder (`models.multimodal`), built by its modality's adapter
  from `audio_video_label.queries`."""
  del preprocessor
  return modalities.audio_video_label.build_decoder(cfg)


def _flow_decoder(cfg: ml_collections.ConfigDict, preprocessor) -> hk.Module:
  """Optical flow: the inputs are the queries; flow in pixels [B, H, W, num_classes]."""
  del preprocessor
  return flow_lib.FlowDecoder(
    output_image_shape=modalities.flow.image_shape(cfg),
    num_z_channels=cfg.num_latent_channels,
    output_num_channels=cfg.num_classes,
    rescale_factor=cfg.flow.rescale_factor,
    output_scale=cfg.flow.output_scale,
    use_query_residual=cfg.decoder.use_query_residual,
    zero_init_output=cfg.flow.zero_init_output,
    num_heads=cfg.decoder.num_heads,
    qk_channels=_or_none(cfg.decoder.qk_channels),
  )


# decoder.type -> builder `(cfg, preprocessor)` of a decoder with `decoder_query(...)` and
# `(query, z, *, is_training, query_mask=None)`; the preprocessor is the modality's (built in
# the same transform), for decoders that share its parameters.
DECODERS: dict[str, Callable[[ml_collections.ConfigDict, object], object]] = {
  "classification": _classification_decoder,
  "projection": _projection_decoder,
  "embedding": _embedding_decoder,
  "sentence": _sentence_decoder,
  "flow": _flow_decoder,
  "multimodal": _multimodal_decoder,
}


def build_encoder(cfg: ml_collections.ConfigDict) -> encoder_lib.PerceiverEncoder:
  """The encoder (`perceiver_encoder`, or `cfg.encoder_name`); call inside a Haiku transform."""
  return encoder_lib.PerceiverEncoder(
    num_latents=cfg.num_latents,
    num_latent_channels=cfg.num_latent_channels,
    num_blocks=cfg.num_blocks,
    num_self_attends_per_block=cfg.num_self_attends_per_block,
    num_cross_attends=cfg.num_cross_attends,
    cross_attend_placement=cfg.cross_attend_placement,
    share_cross_attend_weights=cfg.share_cross_attend_weights,
    share_latent_block_weights=cfg.share_latent_block_weights,
    num_cross_attend_heads=cfg.num_cross_attend_heads,
    num_self_attend_heads=cfg.num_self_attend_heads,
    cross_attend_qk_channels=_or_none(cfg.cross_attend_qk_channels),
    cross_attend_v_channels=_or_none(cfg.cross_attend_v_channels),
    self_attend_qk_channels=_or_none(cfg.self_attend_qk_channels),
    self_attend_v_channels=_or_none(cfg.self_attend_v_channels),
    cross_attend_widening_factor=cfg.cross_attend_widening_factor,
    self_attend_widening_factor=cfg.self_attend_widening_factor,
    dropout_prob=cfg.dropout_prob,
    dropout_attn_prob=cfg.dropout_attn_prob,
    latent_init_scale=cfg.latent_init_scale,
    attention_chunk_size=_or_none(cfg.attention_chunk_size),
    remat=cfg.remat,
    name=cfg.encoder_name,
  )


def _perceiver(cfg: ml_collections.ConfigDict, preprocessor):
  """Encoder then decoder: `(inputs, inputs_without_pos, input_mask, modality_sizes,
  subsampled_points, *, is_training) -> the decoder's outputs`."""
  encoder = build_encoder(cfg)
  decoder = DECODERS[cfg.decoder.type](cfg, preprocessor)
  # A decoder with one query per input element masks the padded ones as queries too.
  queries_follow_inputs = getattr(decoder, "queries_follow_inputs", False)

  def apply(
    inputs, inputs_without_pos, input_mask, modality_sizes, subsampled_points, *, is_training
  ):
    z = encoder.latents(inputs.shape[0])  # [B, N, D]
    z = encoder(inputs, z, is_training=is_training, input_mask=input_mask)  # [B, N, D]
    query = decoder.decoder_query(
      input_array.dense(inputs),  # built only where a decoder's query reads it
      modality_sizes=modality_sizes,
      inputs_without_pos=inputs_without_pos,
      subsampled_points=subsampled_points,
    )  # [B, O, Cq], or None for a pooling decoder
    query_mask = None
    if queries_follow_inputs and cfg.decoder.mask_padded_queries and input_mask is not None:
      query_mask = input_mask if subsampled_points is None else input_mask[:, subsampled_points]
    return decoder(query, z, is_training=is_training, query_mask=query_mask)

  return apply


def _baseline(cfg: ml_collections.ConfigDict, preprocessor):
  """A baseline of `baselines` over the image input array [B, M, C] -> logits [B, K]."""
  del preprocessor
  base, grid = cfg.baseline, modalities.image.input_grid(cfg)
  if cfg.architecture == "convnet":
    classifier = baselines.ConvNetClassifier(
      cfg.num_classes,
      grid,
      stage_channels=tuple(base.stage_channels),
      blocks_per_stage=base.blocks_per_stage,
    )
  else:
    classifier = baselines.TransformerClassifier(
      cfg.num_classes,
      grid,
      num_channels=base.num_channels,
      num_layers=base.num_layers,
      num_heads=base.num_heads,
      patch_size=base.patch_size if cfg.architecture == "vit" else 1,
      widening_factor=base.widening_factor,
      dropout_prob=cfg.dropout_prob,
      name=cfg.architecture,
    )

  def apply(
    inputs, inputs_without_pos, input_mask, modality_sizes, subsampled_points, *, is_training
  ):
    del inputs_without_pos, input_mask, modality_sizes  # image inputs: no mask
    if subsampled_points is not None:
      raise ValueError(f"the {cfg.architecture} baseline has no output points to subsample")
    return classifier(input_array.dense(inputs), is_training=is_training)

  return apply


# architecture -> builder `(cfg, preprocessor)` of `(inputs, inputs_without_pos, input_mask,
# modality_sizes, subsampled_points, *, is_training) -> outputs`.
ARCHITECTURES = {name: _baseline for name in baselines.ARCHITECTURES} | {"perceiver": _perceiver}


def _fail(cfg: ml_collections.ConfigDict, field: str, message: str):
  value = cfg
  for part in field.split("."):
    value = value[part]
  raise ValueError(f"config.model.{field}={value!r}: {message}")


def _validate_perceiver(cfg: ml_collections.ConfigDict) -> None:
  if cfg.decoder.type not in DECODERS:
    _fail(cfg, "decoder.type", f"expected one of {tuple(DECODERS)}")
  if cfg.decoder.type == "embedding":
    if cfg.modality != "text":
      _fail(cfg, "decoder.type", "ties its logits to the input embedding of modality 'text'")
    if cfg.num_classes != cfg.text.vocab_size:
      _fail(cfg, "num_classes", f"the embedding decoder's logits are the {cfg.text.vocab_size} ids")
  if (cfg.decoder.type == "flow") != (cfg.modality == "flow"):
    _fail(cfg, "decoder.type", "the 'flow' decoder and the 'flow' modality go together")
  if (cfg.decoder.type == "multimodal") != (cfg.modality == "audio_video_label"):
    _fail(
      cfg,
      "decoder.type",
      "the 'multimodal' decoder and the 'audio_video_label' modality go together",
    )
  if not cfg.encoder_name:
    _fail(cfg, "encoder_name", "must name the encoder module")
  if cfg.decoder.qk_channels % cfg.decoder.num_heads:
    _fail(cfg, "decoder.qk_channels", f"not divisible by decoder.num_heads={cfg.decoder.num_heads}")
  if cfg.cross_attend_placement not in encoder_lib.CROSS_ATTEND_PLACEMENTS:
    _fail(cfg, "cross_attend_placement", f"expected one of {encoder_lib.CROSS_ATTEND_PLACEMENTS}")
  for field in ("num_latents", "num_latent_channels", "num_blocks", "num_cross_attends"):
    if cfg[field] < 1:
      _fail(cfg, field, "must be at least 1")
  if cfg.cross_attend_placement == "interleaved" and cfg.num_cross_attends > cfg.num_blocks:
    _fail(
      cfg, "num_cross_attends", f"more interleaved cross-attends than num_blocks={cfg.num_blocks}"
    )
  heads = cfg.num_self_attend_heads
  if (cfg.self_attend_qk_channels or cfg.num_latent_channels) % heads:
    field = "self_attend_qk_channels" if cfg.self_attend_qk_channels else "num_latent_channels"
    _fail(cfg, field, f"not divisible by num_self_attend_heads={heads}")
  if cfg.self_attend_v_channels % heads:
    _fail(cfg, "self_attend_v_channels", f"not divisible by num_self_attend_heads={heads}")
  kv_width = input_channels(cfg)
  qk = cfg.cross_attend_qk_channels or kv_width
  if qk % cfg.num_cross_attend_heads:
    _fail(
      cfg,
      "num_cross_attend_heads",
      f"cross-attend qk channels {qk} (input width {kv_width}) are not divisible by it",
    )
  if (cfg.cross_attend_v_channels or qk) % cfg.num_cross_attend_heads:
    _fail(
      cfg,
      "cross_attend_v_channels",
      f"not divisible by num_cross_attend_heads={cfg.num_cross_attend_heads}",
    )
  if cfg.attention_chunk_size < 0:
    _fail(cfg, "attention_chunk_size", "must be 0 (plain attention) or positive")
  for field in ("dropout_prob", "dropout_attn_prob"):
    if not 0.0 <= cfg[field] < 1.0:
      _fail(cfg, field, "must be in [0, 1)")


def _validate_baseline(cfg: ml_collections.ConfigDict) -> None:
  if cfg.modality != "image":
    _fail(cfg, "architecture", "the baselines take image inputs only")
  if cfg.architecture == "convnet":
    return
  if cfg.baseline.num_channels % cfg.baseline.num_heads:
    _fail(cfg, "baseline.num_channels", f"not divisible by num_heads={cfg.baseline.num_heads}")
  rows, cols = modalities.image.input_grid(cfg)
  patch = cfg.baseline.patch_size if cfg.architecture == "vit" else 1
  if patch < 1 or rows % patch or cols % patch:
    _fail(cfg, "baseline.patch_size", f"does not divide the {rows}x{cols} input grid")


def validate_model_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  modalities.get(cfg.modality).validate(cfg)
  if cfg.architecture not in ARCHITECTURES:
    _fail(cfg, "architecture", f"expected one of {tuple(ARCHITECTURES)}")
  if cfg.compute_dtype not in precision.COMPUTE_DTYPES:
    _fail(cfg, "compute_dtype", f"expected one of {precision.COMPUTE_DTYPES}")
  if cfg.activation not in attention.ACTIVATIONS:
    _fail(cfg, "activation", f"expected one of {tuple(attention.ACTIVATIONS)}")
  if cfg.architecture == "perceiver":
    _validate_perceiver(cfg)
  else:
    _validate_baseline(cfg)


def build_model(cfg: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """Returns `forward(inputs, *, is_training, subsampled_points=None) -> outputs`.

  `inputs` is what the modality's adapter takes: images [B, H, W, C], points [B, P, 3],
  int32 byte ids [B, L] for 'text', frame pairs [B, 2, H, W, 3] for 'flow', or for
  'audio_video' and 'audio_video_label' models a dict of arrays keyed by modality. The outputs
  are the decoder's, in float32: logits [B, num_classes] for the classification, projection
  and sentence decoders, [B, L, num_classes] for the embedding decoder, flow [B, H, W, 2] for
  the flow decoder, and for the multimodal decoder a dict {"audio": [B, O_a, samples per
  patch], "image": [B, O_i, 3], "label": [B, num_classes]}. `subsampled_points` ([O] flat
  output indices; for the multimodal decoder a dict of them per modality, [O] or [B, O])
  goes to the decoder's query.

  Initialise with `is_training=True` (BatchNorm state needs it). Evaluation with
  dropout off needs no PRNG key: `apply(params, state, None, images, is_training=False)`.

  With `compute_dtype='bfloat16'` the preprocessor still runs in float32 (Fourier features
  of fine positions need it); its outputs are cast to bfloat16, the encoder and decoder
  compute in bfloat16 from float32 parameters (`precision.compute_in`), and the outputs are
  returned in float32. The parameters are those of the float32 model.
  """
  validate_model_config(cfg)
  dtype = jnp.dtype(cfg.compute_dtype)
  modality = modalities.get(cfg.modality)
  sizes = modality.modality_sizes(cfg)

  def forward(raw_inputs, *, is_training: bool, subsampled_points=None) -> jax.Array:
    preprocessor = modality.build_preprocessor(cfg)
    network = ARCHITECTURES[cfg.architecture](cfg, preprocessor)
    # [B, M, C], [B, M, C'], and for some modalities an input mask [B, M] (True: attend).
    inputs, inputs_without_pos, *input_mask = preprocessor(raw_inputs, is_training=is_training)
    input_mask = input_mask[0] if input_mask else None
    inputs, inputs_without_pos = inputs.astype(dtype), inputs_without_pos.astype(dtype)
    with precision.compute_in(dtype), attention.mlp_activation(cfg.activation):
      outputs = network(
        inputs, inputs_without_pos, input_mask, sizes, subsampled_points, is_training=is_training
      )
    return jax.tree.map(lambda x: x.astype(jnp.float32), outputs)

  return hk.transform_with_state(forward)


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1):
  """Zeros shaped like a batch of model inputs (for initialisation and shape checks)."""
  return modalities.get(cfg.modality).dummy_inputs(cfg, batch_size)


def input_shapes(cfg: ml_collections.ConfigDict):
  """The shape of one example's inputs without the batch axis: a tuple, or a dict of tuples
  keyed by modality for multimodal inputs. The data layer checks its examples against it."""
  return jax.tree.map(lambda x: tuple(x.shape[1:]), dummy_inputs(cfg))


def output_points(cfg: ml_collections.ConfigDict) -> dict[str, int] | None:
  """Output points per modality of a decoder that decodes chosen points (`subsampled_points`
  of the 'multimodal' decoder); None for the other decoders."""
  if cfg.decoder.type != "multimodal":
    return None
  return modalities.audio_video_label.num_points(cfg)


def param_shapes(cfg: ml_collections.ConfigDict) -> tuple[hk.Params, hk.State]:
  """Parameter and state shapes (`jax.ShapeDtypeStruct` leaves) without allocating them."""
  model = build_model(cfg)
  return jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), dummy_inputs(cfg), is_training=True)
  )


def count_params(params: hk.Params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
