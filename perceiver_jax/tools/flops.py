"""FLOP counts of a model config: analytic (matrix multiplies) and from XLA's cost analysis.

FLOPs are counted as in the papers' and most MFU reports: matrix multiplies only, a
multiply and an add counted separately (2 per multiply-accumulate); a training step is 3x
the forward pass (the backward pass computes the gradient of each product with respect to
both of its operands). Elementwise work (softmax, LayerNorm, GELU, added position encodings)
is left out; XLA's cost analysis, reported beside it, counts it. A text model's byte embedding
is a lookup (no multiplies); its logits through the transposed embedding are a matmul.
"""

from __future__ import annotations

import math

import jax
import ml_collections

from perceiver_jax import model as model_lib
from perceiver_jax.modalities import flow
from perceiver_jax.modalities import image
from perceiver_jax.models import encoder as encoder_lib
from perceiver_jax.models import position_encoding


def _block_flops(num_q, num_kv, q_width, kv_width, qk, v, out_width, widening) -> int:
  """Forward FLOPs of one attention block (Q/K/V/output projections, QK^T, AV, MLP)."""
  projections = num_q * q_width * qk + num_kv * kv_width * (qk + v) + num_q * v * out_width
  attention = num_q * num_kv * (qk + v)
  mlp = 2 * num_q * out_width * widening * out_width
  return 2 * (projections + attention + mlp)


def _preprocessor_flops(cfg: ml_collections.ConfigDict) -> int:
  """Forward FLOPs of an image preprocessor's convolutions and position projection, or of
  the flow preprocessor's Linear of each pixel's 3x3 neighbourhood in both frames."""
  if cfg.modality == "flow":
    return 2 * num_inputs(cfg) * 2 * 9 * cfg.input_shape[-1] * cfg.flow.num_channels
  if cfg.modality != "image":
    return 0
  inp = cfg.input
  height, width, channels = cfg.input_shape
  rows, cols = image.input_grid(cfg)
  flops = 0
  if inp.prep_type == "conv":
    # 7x7 stride-2 conv from the pixels (then a stride-2 max pool) per factor of 4.
    size, in_channels = (height, width), channels
    for _ in range(int(round(math.log(inp.spatial_downsample, 4)))):
      size = (-(-size[0] // 2), -(-size[1] // 2))
      flops += 2 * size[0] * size[1] * 49 * in_channels * inp.num_channels
      size = (-(-size[0] // 2), -(-size[1] // 2))
      in_channels = inp.num_channels
  elif inp.prep_type == "conv1x1":
    flops += 2 * rows * cols * channels * inp.num_channels
  elif inp.prep_type == "patches" and inp.conv_after_patching:
    flops += 2 * rows * cols * inp.spatial_downsample**2 * channels * inp.num_channels
  if inp.project_pos_dim > 0:
    if inp.position_encoding_type == "fourier":
      pos = position_encoding.num_fourier_channels(
        2, inp.fourier.num_bands, inp.fourier.concat_pos, inp.fourier.sine_only
      )
    else:
      pos = inp.trainable.num_channels
    flops += 2 * rows * cols * pos * inp.project_pos_dim
  return flops


def num_inputs(cfg: ml_collections.ConfigDict) -> int:
  """M, the number of elements of the encoder's input array [B, M, C] (image, points, text
  bytes, or a flow model's pixels of one frame)."""
  if cfg.modality in ("points", "text"):
    return cfg.input_shape[0]
  if cfg.modality == "flow":
    height, width = flow.image_shape(cfg)
    return height * width
  rows, cols = image.input_grid(cfg)
  return rows * cols


def forward_flops(cfg: ml_collections.ConfigDict) -> int | None:
  """Matrix-multiply FLOPs of one example's forward pass; None where not counted
  (ConvNet and ViT baselines, audio/video models)."""
  if cfg.modality == "audio_video" or cfg.architecture in ("convnet", "vit"):
    return None
  inputs, in_width = num_inputs(cfg), model_lib.input_channels(cfg)
  flops = _preprocessor_flops(cfg)
  if cfg.architecture == "transformer":
    base = cfg.baseline
    width = base.num_channels
    flops += 2 * inputs * in_width * width
    layer = _block_flops(inputs, inputs, width, width, width, width, width, base.widening_factor)
    return flops + base.num_layers * layer + 2 * width * cfg.num_classes
  latents, width = cfg.num_latents, cfg.num_latent_channels
  cross_qk = cfg.cross_attend_qk_channels or in_width
  cross_v = cfg.cross_attend_v_channels or cross_qk
  cross = _block_flops(
    latents, inputs, width, in_width, cross_qk, cross_v, width, cfg.cross_attend_widening_factor
  )
  # Cross-attends that share weights see the same inputs, so their keys and values are
  # the same: the encoder computes them, and their gradients, once per weight set.
  key_value = 2 * inputs * in_width * (cross_qk + cross_v)
  num_sets = (
    encoder_lib.cross_attend_weight_index(cfg.num_cross_attends - 1, cfg.share_cross_attend_weights)
    + 1
  )
  flops -= (cfg.num_cross_attends - num_sets) * key_value
  self_qk = cfg.self_attend_qk_channels or width
  self_v = cfg.self_attend_v_channels or self_qk
  latent = _block_flops(
    latents, latents, width, width, self_qk, self_v, width, cfg.self_attend_widening_factor
  )
  flops += cfg.num_cross_attends * cross
  flops += cfg.num_blocks * cfg.num_self_attends_per_block * latent
  return flops + _decoder_flops(cfg, inputs, in_width)


def _decoder_flops(cfg: ml_collections.ConfigDict, inputs: int, in_width: int) -> int:
  """Forward FLOPs of a Perceiver's decoder on latents [N, D] (`inputs` x `in_width`: the
  encoder's input array, whose width the text decoders' queries have).

  classification  one D-wide query cross-attends (qk = decoder.qk_channels or D, v = qk),
                  then a Linear to the classes.
  projection      the mean over the latents (no multiplies), then a Linear to the classes.
  embedding       one query per input byte (L x C) cross-attends (v = C, no output Linear),
                  then logits through the transposed embedding: [L, C] x [C, vocab].
  sentence        one C-wide query cross-attends, then Linear C -> C, tanh, Linear C -> classes.
  flow            one query per pixel, the encoder's inputs themselves (M x C), cross-attends
                  (qk = v = decoder.qk_channels or D, output C wide), then a Linear C -> 2.
  """
  latents, width = cfg.num_latents, cfg.num_latent_channels
  qk, outputs = cfg.decoder.qk_channels or width, cfg.num_classes
  if cfg.decoder.type == "classification":
    return _block_flops(1, latents, width, width, qk, qk, width, 1) + 2 * width * outputs
  if cfg.decoder.type == "projection":
    return 2 * width * outputs
  if cfg.decoder.type == "embedding":
    cross = _block_flops(inputs, latents, in_width, width, qk, in_width, in_width, 1)
    return cross + 2 * inputs * in_width * outputs
  if cfg.decoder.type == "sentence":
    cross = _block_flops(1, latents, in_width, width, qk, in_width, in_width, 1)
    return cross + 2 * in_width * in_width + 2 * in_width * outputs
  if cfg.decoder.type == "flow":
    cross = _block_flops(inputs, latents, in_width, width, qk, qk, in_width, 1)
    return cross + 2 * inputs * in_width * outputs
  raise ValueError(f"config.model.decoder.type={cfg.decoder.type!r}: no FLOP count for it")


def train_flops(cfg: ml_collections.ConfigDict) -> int | None:
  """Matrix-multiply FLOPs of one example's training step: forward + backward = 3 x forward."""
  forward = forward_flops(cfg)
  return None if forward is None else 3 * forward


def xla_flops(compiled: jax.stages.Compiled) -> float | None:
  """The FLOPs of a compiled program by XLA's cost analysis (None where it gives none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return float(cost["flops"]) if cost and "flops" in cost else None


def xla_forward_flops(cfg: ml_collections.ConfigDict) -> float | None:
  """XLA's FLOPs of one example's inference forward pass; nothing is initialised."""
  forward = model_lib.build_model(cfg)
  params, state = model_lib.param_shapes(cfg)
  compiled = (
    jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
    .lower(params, state, model_lib.dummy_inputs(cfg, 1))
    .compile()
  )
  return xla_flops(compiled)
