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
from perceiver_jax.data import mlm_masking

MODEL_WORKLOADS = (
  "io-small",
  "perceiver-small",
  "imagenet-long",
  "scaling",
  "paper-models",
  "mlm-small",
)
# (timed steps, warm-up steps) per model workload.
STEPS = {
  "io-small": (20, 3),
  "perceiver-small": (20, 3),
  "imagenet-long": (5, 1),
  "scaling": (5, 2),
  "paper-models": (3, 1),
  "mlm-small": (20, 3),
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
# The Transformer's [B, H, M, M] attention (logits, weights and their gradients) outgrows
# this machine's memory beyond this many inputs at the scaling workload's batch.
SCALING_TRANSFORMER_MAX_INPUTS = 4096
# imagenet-memory: mode -> model overrides (None: the suite's chunk size).
MEMORY_MODES = {
  "plain": {"attention_chunk_size": 0, "remat": False},
  "chunked": {"attention_chunk_size": None, "remat": False},
  "chunked+remat": {"attention_chunk_size": None, "remat": True},
}


@dataclasses.dataclass(frozen=True)
class Case:
  """One measured configuration: a model config at a batch size, with a label, trained on
  synthetic batches of `task` (classification: random inputs; masked_lm: `masked_lm_batch`)."""

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
  raise ValueError(f"unknown workload {workload!r}; expected one of {MODEL_WORKLOADS}")


def memory_case(variant: str, mode: str, batch_size: int, chunk_size: int) -> Case:
  """imagenet-memory: registry `variant` in one of `MEMORY_MODES` at `batch_size`."""
  if mode not in MEMORY_MODES:
    raise ValueError(f"unknown imagenet-memory mode {mode!r}; expected one of {list(MEMORY_MODES)}")
  cfg = registry.get_model_config(variant)
  for key, value in MEMORY_MODES[mode].items():
    cfg[key] = chunk_size if value is None else value
  return Case("imagenet-memory", mode, cfg, batch_size)
