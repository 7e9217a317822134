"""The benchmark suite's workloads: fixed model configurations that compare across commits.

io-small         Perceiver IO layout: 64x64x3 pixels + 2-D Fourier features (64 bands,
                 max resolution 64) = 4,096 x 261 inputs; latents 256 x 512; one
                 cross-attend (1 head, qk = v = 261); 2 blocks of 4 shared self-attends
                 (8 heads); widening 1; one 512-d classification query with a query
                 residual; 10 classes; batch 8.
perceiver-small  the original Perceiver layout on the same inputs: latents 128 x 256,
                 4 interleaved cross-attends (the first with its own weights, the other
                 3 sharing one set), 4 shared blocks of 2 self-attends, mean-pool head;
                 batch 8.
imagenet-long    224x224 pixels (50,176 x 261 inputs), latents 512 x 1024, one
                 cross-attend and one self-attend, classification query; batch 2;
                 plain and chunked cross-attention.
scaling          io-small's model on M = 1,024 ... 65,536 inputs (square images), next
                 to a Transformer encoder on the same inputs.
paper-models     the registry's paper models at their real shapes, batch 1.
mlm-small        the masked-language-model training step of a small byte model in the
                 released model's layout, at the sizes of the miniature pretraining run
                 (`configs/mlm.py:mini`): 256 bytes embedded in 128 channels plus learned
                 positions, latents 64 x 128, one cross-attend (8 heads, qk 64, v 128), 4
                 self-attends (8 heads, qk 64), 256 byte queries cross-attending to the
                 latents (8 heads, qk 64), logits through the transposed embedding (262
                 ids); batch 8 of masked byte ids with weights (task `masked_lm`).
flow-train       the optical-flow training step of the miniature flow model
                 (`registry.flow_mini`, the model of experiments/flow/): frame pairs
                 2 x 32 x 48 x 3, each pixel's 3x3 neighbourhood in both frames through a
                 Linear to 32 channels plus 16-band Fourier features (98 channels, 1,536
                 inputs), latents 128 x 128, 4 self-attends (4 heads), every pixel's input
                 cross-attending to the latents for its flow; batch 16 of generated pairs
                 (`flow_batch`) with their exact flow (task `flow`: end-point error).
flow-tiled       tiled inference (`tools.flow_inference`): frame pairs of MPI-Sintel's size,
                 436 x 1024, cut into 6 tiles of the released model's 368 x 496 overlapping
                 by at least 20 pixels, the tiles through the model `batch_size` at a time
                 (`TiledCase`); the released model (`registry.optical_flow`, 41M parameters)
                 and a small one with flow_mini's widths at the same tile. The released
                 model's cross-attends hold [batch, 182,528, 2,048] float32 logits (1.4 GiB
                 per tile) in the encoder and again in the decoder: XLA's CPU buffers for
                 one call are 3.4, 9.5 and 28.6 GiB at 1, 2 and 6 tiles (chunking the
                 encoder's keys saves 10%; the decoder's keys are the 2,048 latents), so
                 on a CPU the tile batch sizes are 1 and 2, on an accelerator 1 and 6 (a
                 whole Sintel pair per call): `TILE_BATCH_SIZES`.
imagenet-io      the ImageNet Perceiver IO of the release (`registry.io_fourier`: 224 x 224
                 pixels + Fourier features, 512 x 1,024 latents, 8 blocks of 6 self-attends,
                 48.4M parameters) at batch `IMAGENET_IO_BATCH`: the GPU comparison with
                 transformers' port (`benchmarks/peers/`, `scripts/gpu_benchmark.sh`); not
                 part of the suite's `all`.
imagenet-memory  forward + backward of a registry variant (the full ImageNet Perceiver by
                 default) in plain, chunked and chunked + remat modes (`MEMORY_MODES`).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax import registry
from perceiver_jax.data import bytes_tokenizer
from perceiver_jax.data import flow as flow_data
from perceiver_jax.data import flow_procedural
from perceiver_jax.data import mlm_masking

MODEL_WORKLOADS = (
  "io-small",
  "perceiver-small",
  "imagenet-long",
  "scaling",
  "paper-models",
  "mlm-small",
  "flow-train",
)
# (timed steps, warm-up steps) per model workload.
STEPS = {
  "io-small": (20, 3),
  "perceiver-small": (20, 3),
  "imagenet-long": (5, 1),
  "scaling": (5, 2),
  "paper-models": (3, 1),
  "mlm-small": (20, 3),
  "flow-train": (10, 2),
}
# imagenet-long's target is a ratio of two cases: measured in 3 alternating rounds.
ROUNDS = {"imagenet-long": 3}
PAPER_MODELS = (
  "io_fourier",
  "io_conv",
  "io_learned",
  "perceiver_ff",
  "perceiver_learned",
  "modelnet40",
)
SCALING_INPUTS = (1024, 4096, 16384, 65536)
IMAGENET_IO_BATCH = 16
# The Transformer's [B, H, M, M] attention (logits, weights and their gradients) outgrows
# this machine's memory beyond this many inputs at the scaling workload's batch.
SCALING_TRANSFORMER_MAX_INPUTS = 4096
# imagenet-memory: mode -> model overrides (None: the suite's chunk size).
MEMORY_MODES = {
  "plain": {"attention_chunk_size": 0, "remat": False},
  "chunked": {"attention_chunk_size": None, "remat": False},
  "chunked+remat": {"attention_chunk_size": None, "remat": True},
}
# flow-tiled: frame pairs of MPI-Sintel's size in tiles of the released model's size, with
# the release's minimum overlap (`config.data.tile_overlap`).
FLOW_TILE = (368, 496)
SINTEL_FRAME_SIZE = (436, 1024)
FLOW_TILE_OVERLAP = 20
TILED_MODELS = ("small", "released")
# Tiles per call of the model, per platform ("cpu" or any accelerator), and (timed pairs,
# warm-up pairs): a released tile's forward pass is 1.9 TFLOP, most of a minute on a CPU.
TILE_BATCH_SIZES = {"cpu": (1, 2), "accelerator": (1, 6)}
TILED_PAIRS = {"cpu": (1, 1), "accelerator": (5, 1)}


@dataclasses.dataclass(frozen=True)
class Case:
  """One measured configuration: a model config at a batch size, with a label, trained on
  synthetic batches of `task` (classification: random inputs; masked_lm: `masked_lm_batch`;
  flow: `flow_batch`)."""

  workload: str
  label: str
  model: ml_collections.ConfigDict
  batch_size: int
  task: str = "classification"


def _pixels_model(side: int) -> ml_collections.ConfigDict:
  """`side` x `side` x 3 pixels + 64-band 2-D Fourier features (261 channels), 10 classes."""
  cfg = registry.get_model_config("io_fourier")
  cfg.input_shape = (side, side, 3)
  cfg.num_classes = 10
  cfg.input.fourier.max_resolution = (side, side)
  return cfg


def io_small(side: int = 64) -> ml_collections.ConfigDict:
  cfg = _pixels_model(side)
  cfg.input.fourier.max_resolution = (64, 64)
  cfg.num_latents = 256
  cfg.num_latent_channels = 512
  cfg.num_blocks = 2
  cfg.num_self_attends_per_block = 4
  cfg.num_cross_attends = 1
  return cfg


def perceiver_small() -> ml_collections.ConfigDict:
  cfg = _pixels_model(64)
  cfg.num_latents = 128
  cfg.num_latent_channels = 256
  cfg.num_blocks = 4
  cfg.num_self_attends_per_block = 2
  cfg.num_cross_attends = 4
  cfg.cross_attend_placement = "interleaved"
  cfg.decoder.type = "projection"
  return cfg


def imagenet_long(chunk_size: int = 0) -> ml_collections.ConfigDict:
  cfg = _pixels_model(224)
  cfg.num_blocks = 1
  cfg.num_self_attends_per_block = 1
  cfg.num_cross_attends = 1
  cfg.attention_chunk_size = chunk_size
  return cfg


def scaling_transformer(side: int) -> ml_collections.ConfigDict:
  """A Transformer encoder on the same side x side pixels + Fourier features: a 256-wide
  embedding, 2 layers of 4 heads, widening 4, mean-pool head."""
  cfg = _pixels_model(side)
  cfg.input.fourier.max_resolution = (64, 64)
  cfg.architecture = "transformer"
  cfg.baseline.update(
    stage_channels=(32,),
    blocks_per_stage=1,
    num_channels=256,
    num_layers=2,
    num_heads=4,
    patch_size=1,
    widening_factor=4,
  )
  return cfg


def mlm_small() -> ml_collections.ConfigDict:
  """The byte model of `configs/mlm.py:mini` (`registry.mlm_mini`)."""
  return registry.get_model_config("mlm_mini")


def masked_lm_batch(cfg: ml_collections.ConfigDict, batch_size: int, seed: int = 0):
  """A masked-LM batch of a text model: byte ids of random 2-to-9-letter words joined by
  spaces, every sequence full (no padding), masked as the data pipeline masks
  (`mlm_masking.MaskingConfig()`: 15% of the words).

  Returns:
    (inputs int32 [B, L]: the masked ids, labels {"ids": int32 [B, L], "weights": float32
    [B, L]}: the targets of the task `masked_lm`).
  """
  rng = np.random.default_rng(seed)
  length = cfg.input_shape[0]
  masking = mlm_masking.MaskingConfig()
  ids = np.empty((batch_size, length), np.int32)
  inputs, weights = np.empty_like(ids), np.empty(ids.shape, np.float32)
  for row in range(batch_size):
    words = []
    while sum(len(word) + 1 for word in words) <= length:  # joined: one space fewer
      word = rng.integers(ord("a"), ord("z") + 1, size=rng.integers(2, 10)).astype(np.uint8)
      words.append(word.tobytes().decode())
    ids[row] = bytes_tokenizer.encode(" ".join(words))[:length]
    inputs[row], weights[row] = mlm_masking.mask_sequence(ids[row], rng, masking)
  return jnp.asarray(inputs), {"ids": jnp.asarray(ids), "weights": jnp.asarray(weights)}


def flow_mini() -> ml_collections.ConfigDict:
  """The miniature flow model of experiments/flow/ (`registry.flow_mini`)."""
  return registry.get_model_config("flow_mini")


def flow_batch(cfg: ml_collections.ConfigDict, batch_size: int, seed: int = 0):
  """A batch of generated frame pairs of a flow model's frame size with their exact flow
  (`flow_procedural.make_pair` with its default scene model), as the model takes them.

  Returns:
    (inputs float32 [B, 2, H, W, 3]: the two frames in [-1, 1], labels {"flow": float32
    [B, H, W, 2] in pixels, "valid": float32 [B, H, W], all 1}: the targets of the task
    `flow`).
  """
  rng = np.random.default_rng(seed)
  scene = flow_procedural.scene_config(flow_procedural.default_config())
  size = tuple(cfg.input_shape[1:3])
  pairs = [flow_procedural.make_pair(rng, size, scene) for _ in range(batch_size)]
  inputs = np.stack(
    [np.stack([flow_data.normalize(p["frame1"]), flow_data.normalize(p["frame2"])]) for p in pairs]
  )
  labels = {
    "flow": np.stack([p["flow"] for p in pairs]).astype(np.float32),
    "valid": np.stack([p["valid"] for p in pairs]).astype(np.float32),
  }
  return jnp.asarray(inputs), {key: jnp.asarray(value) for key, value in labels.items()}


def with_tile(cfg: ml_collections.ConfigDict, tile: tuple[int, int]) -> ml_collections.ConfigDict:
  """A copy of flow model `cfg` taking frames of `tile` (height, width), its Fourier
  features' maximum resolution that tile."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.input_shape = (2, *tile, cfg.input_shape[-1])
  cfg.flow.fourier.max_resolution = tuple(tile)
  return cfg


def flow_small_tiled(tile: tuple[int, int] = FLOW_TILE) -> ml_collections.ConfigDict:
  """flow_mini's widths (32 + 66 input channels, latents 128 x 128, 4 self-attends) at
  `tile`."""
  return with_tile(flow_mini(), tile)


@dataclasses.dataclass(frozen=True)
class TiledCase:
  """flow-tiled: frame pairs of `frame_size` (H, W) run through flow model `model` in tiles
  of its frame size overlapping by at least `overlap` pixels, `batch_size` tiles per call."""

  label: str
  model: ml_collections.ConfigDict
  batch_size: int
  frame_size: tuple[int, int] = SINTEL_FRAME_SIZE
  overlap: int = FLOW_TILE_OVERLAP
  workload: str = "flow-tiled"


def tiled_case(
  model: str,
  batch_size: int,
  tile: tuple[int, int] = FLOW_TILE,
  frame_size: tuple[int, int] = SINTEL_FRAME_SIZE,
  overlap: int = FLOW_TILE_OVERLAP,
) -> TiledCase:
  """flow-tiled's case of `model` (one of `TILED_MODELS`) at `batch_size` tiles per call;
  `tile`, `frame_size` and `overlap` are the workload's unless a test shrinks them."""
  if model == "released":
    cfg = with_tile(registry.get_model_config("optical_flow"), tile)
  elif model == "small":
    cfg = flow_small_tiled(tile)
  else:
    raise ValueError(f"flow-tiled model {model!r}: expected one of {TILED_MODELS}")
  if batch_size < 1:
    raise ValueError(f"flow-tiled batch_size={batch_size}: must be at least 1")
  return TiledCase(f"{model} batch {batch_size}", cfg, batch_size, tuple(frame_size), overlap)


def cases(workload: str, chunk_size: int = 4096) -> list[Case]:
  """The configurations a model workload measures, in order."""
  if workload == "io-small":
    return [Case(workload, "io-small", io_small(), 8)]
  if workload == "perceiver-small":
    return [Case(workload, "perceiver-small", perceiver_small(), 8)]
  if workload == "imagenet-long":
    return [
      Case(workload, "plain", imagenet_long(0), 2),
      Case(workload, f"chunked {chunk_size}", imagenet_long(chunk_size), 2),
    ]
  if workload == "scaling":
    out = []
    for inputs in SCALING_INPUTS:
      side = math.isqrt(inputs)
      out.append(Case(workload, f"perceiver M={inputs}", io_small(side), 2))
      if inputs <= SCALING_TRANSFORMER_MAX_INPUTS:
        out.append(Case(workload, f"transformer M={inputs}", scaling_transformer(side), 2))
    return out
  if workload == "paper-models":
    return [Case(workload, name, registry.get_model_config(name), 1) for name in PAPER_MODELS]
  if workload == "mlm-small":
    return [Case(workload, "mlm-small", mlm_small(), 8, task="masked_lm")]
  if workload == "imagenet-io":
    cfg = registry.get_model_config("io_fourier")
    return [Case(workload, "imagenet-io", cfg, IMAGENET_IO_BATCH)]
  if workload == "flow-train":
    return [Case(workload, "flow-mini", flow_mini(), 16, task="flow")]
  raise ValueError(f"unknown workload {workload!r}; expected one of {MODEL_WORKLOADS}")


def memory_case(variant: str, mode: str, batch_size: int, chunk_size: int) -> Case:
  """imagenet-memory: registry `variant` in one of `MEMORY_MODES` at `batch_size`."""
  if mode not in MEMORY_MODES:
    raise ValueError(f"unknown imagenet-memory mode {mode!r}; expected one of {list(MEMORY_MODES)}")
  cfg = registry.get_model_config(variant)
  for key, value in MEMORY_MODES[mode].items():
    cfg[key] = chunk_size if value is None else value
  return Case("imagenet-memory", mode, cfg, batch_size)
