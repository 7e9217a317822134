"""Builds a Perceiver from a model config (`configs/*.py`, `perceiver_jax.registry`).

The model section of a config (`config.model`) has these fields:
  modality               'image' (default), 'points' or 'audio_video'.
  input_shape            one example without the batch axis: (H, W, C) for images,
                         (P, 3) for point clouds.
  num_classes            output classes.
  input.*                image preprocessing (`preprocessors.ImagePreprocessor`); for
                         'points' only `input.fourier` is used
                         (`preprocessors.PointCloudPreprocessor`).
  audio_video.*          audio, video and multimodal inputs (`audio_video`), whose own
                         functions build, size and validate them.
  num_latents, num_latent_channels, num_blocks, num_self_attends_per_block,
  num_cross_attends, cross_attend_placement, share_cross_attend_weights,
  share_latent_block_weights, *_heads, *_widening_factor, dropout_*  the encoder.
  attention_chunk_size   0 for plain cross-attention, else the key chunk size.
  remat                  rematerialise every block in the backward pass.
  compute_dtype          'float32' (default) or 'bfloat16': the dtype the encoder and
                         decoder compute in; parameters stay float32 (`precision`).
  decoder.type           'classification' (Perceiver IO query decoder) or
                         'projection' (mean over latents + Linear, the original Perceiver).
  architecture           'perceiver' (default), or a baseline fed the same input array
                         (`baselines`): 'convnet', 'vit', 'transformer', configured by
                         `baseline.*`; the encoder and decoder fields are then unused.

Top-level module names are those of the official release (`image_preprocessor`,
`perceiver_encoder`, `classification_decoder`), so its checkpoints load as they are.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.models import baselines
from perceiver_jax.models import decoders
from perceiver_jax.models import encoder as encoder_lib
from perceiver_jax.models import position_encoding
from perceiver_jax.models import precision
from perceiver_jax.models import preprocessors

DECODER_TYPES = ("classification", "projection")
MODALITIES = ("image", "points", "audio_video")


def modality(cfg: ml_collections.ConfigDict) -> str:
  """The input modality; configs saved before the field existed are image models."""
  return cfg.get("modality", "image")


def architecture(cfg: ml_collections.ConfigDict) -> str:
  return cfg.get("architecture", "perceiver")


def compute_dtype(cfg: ml_collections.ConfigDict) -> str:
  """The dtype of the computation; configs saved before the field existed are float32."""
  return cfg.get("compute_dtype", "float32")


def input_grid(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """The (rows, columns) of the image grid the input elements come from: every prep type
  (strided pixels, patches, the SAME-padded conv stems) divides each side by
  `spatial_downsample`, rounding up."""
  height, width = cfg.input_shape[:2]
  down = cfg.input.spatial_downsample
  return -(-height // down), -(-width // down)


def _audio_video():
  from perceiver_jax.models import audio_video  # noqa: PLC0415 (only these models need it)

  return audio_video


def _or_none(value: int) -> int | None:
  """Configs use 0 for 'derive from the inputs' so that the field stays an int."""
  return value or None


def _position_kwargs(cfg: ml_collections.ConfigDict) -> tuple[dict, dict]:
  fourier = dict(cfg.fourier)
  fourier["max_resolution"] = tuple(fourier["max_resolution"]) or None
  return fourier, dict(cfg.trainable)


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, M, C], computed from the config."""
  if modality(cfg) == "audio_video":
    return _audio_video().input_channels(cfg)
  inp = cfg.input
  if modality(cfg) == "points":
    return cfg.input_shape[-1] + position_encoding.num_fourier_channels(
      3, inp.fourier.num_bands, inp.fourier.concat_pos, inp.fourier.sine_only
    )
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


def validate_model_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""

  def fail(field, message):
    raise ValueError(f"config.model.{field}={cfg_value(field)!r}: {message}")

  def cfg_value(field):
    value = cfg
    for part in field.split("."):
      value = value[part]
    return value

  kind = modality(cfg)
  if kind not in MODALITIES:
    fail("modality", f"expected one of {MODALITIES}")
  if architecture(cfg) not in baselines.ARCHITECTURES:
    fail("architecture", f"expected one of {baselines.ARCHITECTURES}")
  if architecture(cfg) != "perceiver":
    _validate_baseline(cfg, fail)
  if compute_dtype(cfg) not in precision.COMPUTE_DTYPES:
    fail("compute_dtype", f"expected one of {precision.COMPUTE_DTYPES}")
  if kind == "audio_video":
    _audio_video().validate(cfg)
  elif kind == "points":
    if len(cfg.input_shape) != 2 or cfg.input_shape[-1] != 3:
      fail("input_shape", "a point cloud model needs (num_points, 3)")
    if len(cfg.input.fourier.max_resolution) != 3:
      fail("input.fourier.max_resolution", "a point cloud needs one entry per axis (x, y, z)")
  else:
    if cfg.input.prep_type not in preprocessors.PREP_TYPES:
      fail("input.prep_type", f"expected one of {preprocessors.PREP_TYPES}")
    if cfg.input.position_encoding_type not in ("fourier", "trainable"):
      fail("input.position_encoding_type", "expected 'fourier' or 'trainable'")
  if cfg.decoder.type not in DECODER_TYPES:
    fail("decoder.type", f"expected one of {DECODER_TYPES}")
  if cfg.cross_attend_placement not in encoder_lib.CROSS_ATTEND_PLACEMENTS:
    fail("cross_attend_placement", f"expected one of {encoder_lib.CROSS_ATTEND_PLACEMENTS}")
  for field in ("num_latents", "num_latent_channels", "num_blocks", "num_cross_attends"):
    if cfg[field] < 1:
      fail(field, "must be at least 1")
  if cfg.cross_attend_placement == "interleaved" and cfg.num_cross_attends > cfg.num_blocks:
    fail("num_cross_attends", f"more interleaved cross-attends than num_blocks={cfg.num_blocks}")
  if cfg.num_latent_channels % cfg.num_self_attend_heads:
    fail(
      "num_latent_channels", f"not divisible by num_self_attend_heads={cfg.num_self_attend_heads}"
    )
  kv_width = input_channels(cfg)
  qk = cfg.cross_attend_qk_channels or kv_width
  if qk % cfg.num_cross_attend_heads:
    fail(
      "num_cross_attend_heads",
      f"cross-attend qk channels {qk} (input width {kv_width}) are not divisible by it",
    )
  if (cfg.cross_attend_v_channels or qk) % cfg.num_cross_attend_heads:
    fail(
      "cross_attend_v_channels",
      f"not divisible by num_cross_attend_heads={cfg.num_cross_attend_heads}",
    )
  if cfg.attention_chunk_size < 0:
    fail("attention_chunk_size", "must be 0 (plain attention) or positive")
  for field in ("dropout_prob", "dropout_attn_prob"):
    if not 0.0 <= cfg[field] < 1.0:
      fail(field, "must be in [0, 1)")
  if kind == "image":
    height, width = cfg.input_shape[:2]
    sd = cfg.input.spatial_downsample
    if cfg.input.prep_type == "patches" and (height % sd or width % sd):
      fail("input.spatial_downsample", f"does not divide the image size {height}x{width}")


def _validate_baseline(cfg: ml_collections.ConfigDict, fail) -> None:
  if modality(cfg) != "image":
    fail("architecture", "the baselines take image inputs only")
  rows, cols = input_grid(cfg)
  if architecture(cfg) == "convnet":
    return
  if cfg.baseline.num_channels % cfg.baseline.num_heads:
    fail("baseline.num_channels", f"not divisible by num_heads={cfg.baseline.num_heads}")
  patch = cfg.baseline.patch_size if architecture(cfg) == "vit" else 1
  if patch < 1 or rows % patch or cols % patch:
    fail("baseline.patch_size", f"does not divide the {rows}x{cols} input grid")


def _build_baseline(cfg: ml_collections.ConfigDict):
  base = cfg.baseline
  if architecture(cfg) == "convnet":
    return baselines.ConvNetClassifier(
      cfg.num_classes,
      input_grid(cfg),
      stage_channels=tuple(base.stage_channels),
      blocks_per_stage=base.blocks_per_stage,
    )
  return baselines.TransformerClassifier(
    cfg.num_classes,
    input_grid(cfg),
    num_channels=base.num_channels,
    num_layers=base.num_layers,
    num_heads=base.num_heads,
    patch_size=base.patch_size if architecture(cfg) == "vit" else 1,
    widening_factor=base.widening_factor,
    dropout_prob=cfg.dropout_prob,
    name=architecture(cfg),
  )


def _build_preprocessor(cfg: ml_collections.ConfigDict):
  kind = modality(cfg)
  if kind == "audio_video":
    return _audio_video().build_preprocessor(cfg)
  fourier, trainable = _position_kwargs(cfg.input)
  if kind == "points":
    return preprocessors.PointCloudPreprocessor(fourier_kwargs=fourier)
  return preprocessors.ImagePreprocessor(
    prep_type=cfg.input.prep_type,
    spatial_downsample=cfg.input.spatial_downsample,
    num_channels=cfg.input.num_channels,
    position_encoding_type=cfg.input.position_encoding_type,
    fourier_kwargs=fourier,
    trainable_kwargs=trainable,
    project_pos_dim=cfg.input.project_pos_dim,
    concat_or_add_pos=cfg.input.concat_or_add_pos,
    conv_after_patching=cfg.input.conv_after_patching,
    permutation_seed=cfg.input.permutation_seed if cfg.input.permute_pixels else None,
  )


def build_modules(cfg: ml_collections.ConfigDict):
  """Creates (preprocessor, encoder, decoder) modules; call inside a Haiku transform."""
  preprocessor = _build_preprocessor(cfg)
  encoder = encoder_lib.PerceiverEncoder(
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
    cross_attend_widening_factor=cfg.cross_attend_widening_factor,
    self_attend_widening_factor=cfg.self_attend_widening_factor,
    dropout_prob=cfg.dropout_prob,
    dropout_attn_prob=cfg.dropout_attn_prob,
    latent_init_scale=cfg.latent_init_scale,
    attention_chunk_size=_or_none(cfg.attention_chunk_size),
    remat=cfg.remat,
  )
  if cfg.decoder.type == "classification":
    decoder = decoders.ClassificationDecoder(
      num_classes=cfg.num_classes,
      num_z_channels=cfg.num_latent_channels,
      num_heads=cfg.decoder.num_heads,
      use_query_residual=cfg.decoder.use_query_residual,
      trainable_kwargs={"init_scale": cfg.decoder.query_init_scale},
    )
  else:
    decoder = decoders.ProjectionDecoder(num_classes=cfg.num_classes)
  return preprocessor, encoder, decoder


def build_model(cfg: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """Returns `forward(inputs, *, is_training) -> logits [B, num_classes]`.

  `inputs` is images [B, H, W, C], points [B, P, 3], or for 'audio_video' models an array
  or a dict of arrays (see `audio_video`).

  Initialise with `is_training=True` (BatchNorm state needs it). Evaluation with
  dropout off needs no PRNG key: `apply(params, state, None, images, is_training=False)`.

  With `compute_dtype='bfloat16'` the preprocessor still runs in float32 (Fourier features
  of fine positions need it); its outputs are cast to bfloat16, the encoder and decoder
  compute in bfloat16 from float32 parameters (`precision.compute_in`), and the logits are
  returned in float32. The parameters are those of the float32 model.
  """
  validate_model_config(cfg)
  dtype = jnp.dtype(compute_dtype(cfg))

  def forward(raw_inputs, *, is_training: bool) -> jax.Array:
    if architecture(cfg) != "perceiver":
      preprocessor = _build_preprocessor(cfg)
    else:
      preprocessor, encoder, decoder = build_modules(cfg)
    inputs, inputs_without_pos = preprocessor(raw_inputs, is_training=is_training)  # [B, M, C]
    inputs, inputs_without_pos = inputs.astype(dtype), inputs_without_pos.astype(dtype)
    with precision.compute_in(dtype):
      if architecture(cfg) != "perceiver":
        logits = _build_baseline(cfg)(inputs, is_training=is_training)
      else:
        z = encoder.latents(inputs.shape[0])  # [B, N, D]
        z = encoder(inputs, z, is_training=is_training)
        if cfg.decoder.type == "projection":
          logits = decoder(z, is_training=is_training)
        else:
          query = decoder.decoder_query(inputs, inputs_without_pos)  # [B, 1, D]
          logits = decoder(query, z, is_training=is_training)  # [B, num_classes]
    return logits.astype(jnp.float32)

  return hk.transform_with_state(forward)


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1):
  """Zeros shaped like a batch of model inputs (for initialisation and shape checks)."""
  if modality(cfg) == "audio_video":
    return _audio_video().dummy_inputs(cfg, batch_size)
  return jnp.zeros((batch_size, *cfg.input_shape), jnp.float32)


def input_shapes(cfg: ml_collections.ConfigDict):
  """The shape of one example's inputs without the batch axis: a tuple, or a dict of tuples
  keyed by modality for multimodal inputs. The data layer checks its examples against it."""
  return jax.tree.map(lambda x: tuple(x.shape[1:]), dummy_inputs(cfg))


def param_shapes(cfg: ml_collections.ConfigDict) -> tuple[hk.Params, hk.State]:
  """Parameter and state shapes (`jax.ShapeDtypeStruct` leaves) without allocating them."""
  model = build_model(cfg)
  return jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), dummy_inputs(cfg), is_training=True)
  )


def count_params(params: hk.Params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
