"""Named model variants: `get_model_config(name)` returns the `config.model` section.

ImageNet variants (224x224x3 inputs, 1000 classes):
  perceiver_ff          the Perceiver paper's ImageNet model: 2-D Fourier features, 8
                        interleaved cross-attends (first own weights, the rest shared),
                        8 shared latent blocks of 6 self-attends, mean-pool head. 44.9M.
  perceiver_ff_permuted the same on one fixed permutation of the pixels (paper Table 2).
  perceiver_learned     one cross-attend and a 128-d learned position encoding (Table 2).
  io_fourier            Perceiver IO, 2-D Fourier features on pixels: 48,440,627 params.
  io_conv               Perceiver IO, conv + max-pool stem: 48,646,522 params.
  io_learned            Perceiver IO, 1x1 conv + learned positions: 62,255,848 params.
  modelnet40            the Perceiver paper's ModelNet40 model: 2,048 xyz points as features
                        and positions of 64-band 3-D Fourier features, 2 cross-attends, 2
                        blocks of 6 self-attends, mean-pool head, 40 classes.
  fashion_mnist         a small Perceiver (FF) on 4x4 patches of Fashion-MNIST (default run).
  testing               a tiny model on 32x32x3 inputs for tests.

Language (UTF-8 byte ids, `modality='text'`, logits over the 262 byte ids per position):
  language_perceiver_io the released masked language model: 2,048 bytes, 256 x 1,280
                        latents, 26 self-attends, embedding-tied output: 201,108,230 params.
  mlm_testing           the same layout at tiny widths, 64 bytes, for tests and runlocal.

Optical flow (frame pairs [2, H, W, 3], `modality='flow'`, flow [H, W, 2] per pair):
  optical_flow          the released flow model: 3x3 patches of both frames at 368 x 496,
                        2,048 x 512 latents, 24 self-attends, the inputs as decoder queries:
                        41,057,134 params.
  flow_testing          the same layout at tiny widths on 32 x 48 frames, for tests and runlocal.
  flow_mini             the same layout, small, on 32 x 48 frames, with a query residual in
                        the decoder: the flow-train benchmark; experiments/flow/ trains it
                        at 16 x 24 (configs/flow.py:mini).

Fashion-MNIST pixel models for the paper's Table 2 in miniature: each is fed the same 784
pixels with 2-D Fourier features (8 bands over the 28x28 grid), optionally permuted:
  fmnist_perceiver_ff       the Perceiver on pixels (`fashion_mnist` with prep 'pixels').
  fmnist_perceiver_learned  one cross-attend, a learned 34-d position encoding instead.
  fmnist_convnet_ff         a ResNet-style ConvNet (3 stages, 32/64/128 channels).
  fmnist_vit_ff             a ViT on 4x4 patches of pixels + features (49 tokens).
  fmnist_transformer_ff     a Transformer on 14x14 downsampled pixels: 196 tokens, 2 layers,
                            64 wide.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from perceiver_jax import modalities

_REGISTRY: dict[str, Callable[[], ml_collections.ConfigDict]] = {}


def register(fn: Callable[[], ml_collections.ConfigDict]):
  _REGISTRY[fn.__name__] = fn
  return fn


def names() -> list[str]:
  return sorted(_REGISTRY)


def get_model_config(name: str) -> ml_collections.ConfigDict:
  if name not in _REGISTRY:
    raise ValueError(f"unknown model variant {name!r}; known variants: {', '.join(names())}")
  return _REGISTRY[name]()


def base_config(modality: str, num_classes: int) -> ml_collections.ConfigDict:
  """Every field `model.build_model` reads: the shared architecture fields (the Perceiver IO
  ImageNet model's encoder and decoder, the baselines' section) plus the fields of
  `modality` from its adapter (`perceiver_jax.modalities`)."""
  cfg = ml_collections.ConfigDict(
    dict(
      modality=modality,
      architecture="perceiver",  # or a baseline: "convnet", "vit", "transformer"
      num_classes=num_classes,
      num_latents=512,
      num_latent_channels=1024,
      num_blocks=8,
      num_self_attends_per_block=6,
      num_cross_attends=1,
      cross_attend_placement="interleaved",
      share_cross_attend_weights=True,
      share_latent_block_weights=True,
      num_cross_attend_heads=1,
      num_self_attend_heads=8,
      cross_attend_qk_channels=0,  # 0: the input width
      cross_attend_v_channels=0,  # 0: the qk channels
      self_attend_qk_channels=0,  # 0: num_latent_channels
      self_attend_v_channels=0,  # 0: the qk channels
      cross_attend_widening_factor=1,
      self_attend_widening_factor=1,
      dropout_prob=0.0,
      dropout_attn_prob=0.0,
      latent_init_scale=0.02,
      encoder_name="perceiver_encoder",  # the video autoencoder's is "encoder"
      attention_chunk_size=0,  # 0: plain attention; e.g. 4096 for long inputs
      remat=False,
      compute_dtype="float32",  # or "bfloat16": bfloat16 compute, float32 parameters
      activation="gelu_tanh",  # the MLPs' GELU; "gelu_exact" is transformers' port's
      decoder=dict(
        type="classification",
        num_heads=1,
        qk_channels=0,  # 0: the latent width (the cross-attend's kv input)
        use_query_residual=True,
        query_init_scale=0.02,
        # A decoder whose queries follow the inputs (text): padded inputs' queries are
        # masked (their outputs zeros); transformers' port decodes them like the rest.
        mask_padded_queries=True,
      ),
      # The baselines (architecture != "perceiver"); unused by the Perceiver.
      baseline=dict(
        stage_channels=(32, 64, 128),
        blocks_per_stage=1,
        num_channels=128,
        num_layers=4,
        num_heads=4,
        patch_size=4,
        widening_factor=4,
      ),
    )
  )
  cfg.update(modalities.get(modality).default_config())
  return cfg


def _imagenet_perceiver_io() -> ml_collections.ConfigDict:
  """Perceiver IO on ImageNet with 2-D Fourier features on pixels (the release's config)."""
  return base_config("image", num_classes=1000)


@register
def io_fourier() -> ml_collections.ConfigDict:
  return _imagenet_perceiver_io()


@register
def io_conv() -> ml_collections.ConfigDict:
  cfg = _imagenet_perceiver_io()
  cfg.input.prep_type = "conv"
  cfg.input.spatial_downsample = 4
  cfg.input.num_channels = 64
  cfg.input.fourier.max_resolution = (56, 56)
  return cfg


@register
def io_learned() -> ml_collections.ConfigDict:
  cfg = _imagenet_perceiver_io()
  cfg.input.prep_type = "conv1x1"
  cfg.input.num_channels = 256
  cfg.input.position_encoding_type = "trainable"
  cfg.input.trainable.num_channels = 256
  cfg.input.project_pos_dim = 256
  cfg.decoder.use_query_residual = False
  return cfg


@register
def perceiver_ff() -> ml_collections.ConfigDict:
  cfg = _imagenet_perceiver_io()
  cfg.num_cross_attends = 8
  cfg.decoder.type = "projection"
  return cfg


@register
def perceiver_ff_permuted() -> ml_collections.ConfigDict:
  cfg = perceiver_ff()
  cfg.input.permute_pixels = True
  return cfg


@register
def perceiver_learned() -> ml_collections.ConfigDict:
  cfg = perceiver_ff()
  cfg.num_cross_attends = 1
  cfg.input.position_encoding_type = "trainable"
  cfg.input.trainable.num_channels = 128
  return cfg


@register
def modelnet40() -> ml_collections.ConfigDict:
  """The Perceiver paper's ModelNet40 model.

  Fourier features: 64 bands up to frequency 1120. Bands run from 1 to max_resolution / 2,
  so max_resolution is 2 x 1120 per axis. Two interleaved cross-attends, each with its own
  weights, and 2 weight-shared blocks of 6 self-attends. The latent array (512 x 1024) and
  the attention widths are the ImageNet model's: the paper gives no others for ModelNet40.
  """
  cfg = base_config("points", num_classes=40)
  cfg.num_cross_attends = 2
  cfg.decoder.type = "projection"
  cfg.num_blocks = 2
  cfg.num_self_attends_per_block = 6
  return cfg


@register
def fashion_mnist() -> ml_collections.ConfigDict:
  """The Perceiver layout (interleaved cross-attends, shared weights, mean-pool head) on
  4x4 patches of 28x28x1 Fashion-MNIST (49 inputs), sized to train on a 2-core CPU in
  minutes. `input.prep_type="pixels"` with `spatial_downsample=1` gives 784 pixel inputs."""
  cfg = perceiver_ff()
  cfg.input_shape = (28, 28, 1)
  cfg.num_classes = 10
  cfg.input.prep_type = "patches"
  cfg.input.spatial_downsample = 4
  cfg.input.fourier.num_bands = 8
  cfg.input.fourier.max_resolution = ()  # the input grid: 7x7 patches, or 28x28 pixels
  cfg.num_latents = 32
  cfg.num_latent_channels = 128
  cfg.num_blocks = 2
  cfg.num_self_attends_per_block = 2
  cfg.num_cross_attends = 2
  cfg.num_cross_attend_heads = 5  # the 50 input channels of a patch: 10 per head
  cfg.num_self_attend_heads = 4
  return cfg


@register
def testing() -> ml_collections.ConfigDict:
  cfg = _imagenet_perceiver_io()
  cfg.input_shape = (32, 32, 3)
  cfg.num_classes = 10
  cfg.input.fourier.num_bands = 8
  cfg.input.fourier.max_resolution = (32, 32)
  cfg.num_latents = 16
  cfg.num_latent_channels = 32
  cfg.num_blocks = 2
  cfg.num_self_attends_per_block = 2
  cfg.num_self_attend_heads = 4
  return cfg


def _fmnist_pixels() -> ml_collections.ConfigDict:
  cfg = fashion_mnist()
  cfg.input.prep_type = "pixels"
  cfg.input.spatial_downsample = 1
  return cfg


def _fmnist_baseline(architecture: str) -> ml_collections.ConfigDict:
  cfg = _fmnist_pixels()
  cfg.architecture = architecture
  return cfg


@register
def fmnist_perceiver_ff() -> ml_collections.ConfigDict:
  return _fmnist_pixels()


@register
def fmnist_perceiver_learned() -> ml_collections.ConfigDict:
  cfg = _fmnist_pixels()
  cfg.input.position_encoding_type = "trainable"
  cfg.input.trainable.num_channels = 34  # the width of the 8-band Fourier features
  cfg.num_cross_attends = 1
  cfg.num_cross_attend_heads = 5  # 1 + 34 input channels: 7 per head
  return cfg


@register
def fmnist_convnet_ff() -> ml_collections.ConfigDict:
  return _fmnist_baseline("convnet")


@register
def fmnist_vit_ff() -> ml_collections.ConfigDict:
  return _fmnist_baseline("vit")


@register
def fmnist_transformer_ff() -> ml_collections.ConfigDict:
  cfg = _fmnist_baseline("transformer")
  cfg.input.spatial_downsample = 2  # every second pixel: 14x14 tokens, features of that grid
  # 64 wide and 2 layers: attention over 196 tokens at the ViT's size would cost 5 times the
  # other models' step on a CPU.
  cfg.baseline.num_channels = 64
  cfg.baseline.num_layers = 2
  return cfg


@register
def language_perceiver_io() -> ml_collections.ConfigDict:
  """The released byte-level masked language model (module tree and shapes as released)."""
  cfg = base_config("text", num_classes=262)
  cfg.num_latents = 256
  cfg.num_latent_channels = 1280
  cfg.num_blocks = 1
  cfg.num_self_attends_per_block = 26
  cfg.num_cross_attend_heads = 8
  cfg.cross_attend_qk_channels = 256
  cfg.cross_attend_v_channels = 1280
  cfg.num_self_attend_heads = 8
  cfg.self_attend_qk_channels = 256
  cfg.self_attend_v_channels = 1280
  cfg.decoder.type = "embedding"
  cfg.decoder.num_heads = 8
  cfg.decoder.qk_channels = 256
  cfg.decoder.use_query_residual = False
  return cfg


@register
def mlm_testing() -> ml_collections.ConfigDict:
  cfg = language_perceiver_io()
  cfg.input_shape = (64,)
  cfg.text.embed_dim = 32
  cfg.num_latents = 8
  cfg.num_latent_channels = 48
  cfg.num_self_attends_per_block = 2
  cfg.num_cross_attend_heads = 4
  cfg.cross_attend_qk_channels = 16
  cfg.cross_attend_v_channels = 48
  cfg.num_self_attend_heads = 4
  cfg.self_attend_qk_channels = 16
  cfg.self_attend_v_channels = 48
  cfg.decoder.num_heads = 4
  cfg.decoder.qk_channels = 16
  return cfg


@register
def mlm_mini() -> ml_collections.ConfigDict:
  """The miniature byte model of `experiments/mlm_bytes/` and the `mlm-small` benchmark."""
  cfg = mlm_testing()
  cfg.input_shape = (256,)
  cfg.text.embed_dim = 128
  cfg.num_latents = 64
  for name in ("num_latent_channels", "cross_attend_v_channels", "self_attend_v_channels"):
    cfg[name] = 128
  cfg.num_self_attends_per_block = 4
  for name in ("cross_attend_qk_channels", "self_attend_qk_channels"):
    cfg[name] = 64
  cfg.decoder.qk_channels = 64
  return cfg


@register
def optical_flow() -> ml_collections.ConfigDict:
  """The released optical-flow model (module tree and shapes as released)."""
  cfg = base_config("flow", num_classes=2)  # 2 output channels: (u, v) per pixel
  cfg.num_latents = 2048
  cfg.num_latent_channels = 512
  cfg.num_blocks = 1
  cfg.num_self_attends_per_block = 24
  cfg.num_cross_attend_heads = 1
  cfg.num_self_attend_heads = 16
  cfg.decoder.type = "flow"
  cfg.decoder.num_heads = 1
  cfg.decoder.use_query_residual = False
  return cfg


@register
def flow_testing() -> ml_collections.ConfigDict:
  cfg = optical_flow()
  cfg.input_shape = (2, 32, 48, 3)
  cfg.flow.num_channels = 16
  cfg.flow.fourier.num_bands = 8
  cfg.flow.fourier.max_resolution = (32, 48)
  cfg.num_latents = 16
  cfg.num_latent_channels = 32
  cfg.num_self_attends_per_block = 2
  cfg.num_self_attend_heads = 4
  return cfg


@register
def flow_mini() -> ml_collections.ConfigDict:
  cfg = optical_flow()
  cfg.input_shape = (2, 32, 48, 3)
  cfg.flow.num_channels = 32
  cfg.flow.fourier.num_bands = 16
  cfg.flow.fourier.max_resolution = (32, 48)
  cfg.num_latents = 128
  cfg.num_latent_channels = 128
  cfg.num_self_attends_per_block = 4
  cfg.num_self_attend_heads = 4
  # Unlike the release, each pixel's output also sees its own inputs, and the output Linear
  # starts random: with the release's decoder the miniature stayed at zero flow
  # (experiments/flow/README.md).
  cfg.decoder.use_query_residual = True
  cfg.flow.zero_init_output = False
  return cfg


@register
def multimodal_autoencoding() -> ml_collections.ConfigDict:
  """The released Kinetics-700 video autoencoder (module tree and shapes as released)."""
  cfg = base_config("audio_video_label", num_classes=700)
  cfg.encoder_name = "encoder"
  cfg.num_latents = 784  # 28 x 28
  cfg.num_latent_channels = 512
  cfg.num_blocks = 1
  cfg.num_self_attends_per_block = 8
  cfg.num_cross_attend_heads = 1
  cfg.num_self_attend_heads = 8
  cfg.decoder.type = "multimodal"
  cfg.decoder.num_heads = 1
  cfg.decoder.use_query_residual = False
  return cfg


@register
def multimodal_testing() -> ml_collections.ConfigDict:
  """The released layout at tiny sizes: 4 frames of 16 x 16, 640 audio samples, 10 classes."""
  cfg = multimodal_autoencoding()
  cfg.num_classes = 10
  section = cfg.audio_video_label
  section.audio.update(num_samples=640, samples_per_patch=16, num_bands=8, max_resolution=(640,))
  section.image.update(num_frames=4, image_size=16, num_bands=4, max_resolution=(4, 4, 4))
  section.queries.update(
    audio_num_bands=8,
    audio_max_resolution=(640,),
    image_num_bands=4,
    image_max_resolution=(4, 4, 4),
    label_channels=32,
    output_channels=32,
  )
  cfg.num_latents = 16
  cfg.num_latent_channels = 32
  cfg.num_self_attends_per_block = 2
  cfg.num_self_attend_heads = 4
  return cfg
