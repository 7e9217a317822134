"""The benchmark suite's workloads, analytic FLOP counts and measurements.

`scripts/benchmark.py` is the command line; this module holds what it measures so that
tests can check the pieces (the FLOP counts against XLA's, the workload shapes).

Workloads (fixed, so that results compare across commits):
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

FLOPs are counted as in the papers' and most MFU reports: matrix multiplies only, a
multiply and an add counted separately (2 per multiply-accumulate); a training step is 3x
the forward pass (the backward pass computes the gradient of each product with respect to
both of its operands). Elementwise work (softmax, LayerNorm, GELU) is left out; XLA's cost
analysis, reported beside it, counts it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import resource
import statistics
import time

import ml_collections

from perceiver_jax import atomic
from perceiver_jax import model as model_lib
from perceiver_jax import registry
from perceiver_jax.models import encoder as encoder_lib

WORKLOADS = ("io-small", "perceiver-small", "imagenet-long", "scaling")
SCALING_INPUTS = (1024, 4096, 16384, 65536)
# The Transformer's [B, H, M, M] attention (logits, weights and their gradients) outgrows
# this machine's memory beyond this many inputs at the scaling workload's batch.
SCALING_TRANSFORMER_MAX_INPUTS = 4096


@dataclasses.dataclass(frozen=True)
class Case:
  """One measured configuration: a model config at a batch size, with a label."""

  workload: str
  label: str
  model: ml_collections.ConfigDict
  batch_size: int


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
  cfg.baseline = dict(
    stage_channels=(32,),
    blocks_per_stage=1,
    num_channels=256,
    num_layers=2,
    num_heads=4,
    patch_size=1,
    widening_factor=4,
  )
  return cfg


def cases(workload: str, chunk_size: int = 4096) -> list[Case]:
  """The configurations a workload measures."""
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
  raise ValueError(f"unknown workload {workload!r}; expected one of {WORKLOADS}")


# ---------------------------------------------------------------------------------------
# Analytic FLOPs.


def _block_flops(num_q, num_kv, q_width, kv_width, qk, v, out_width, widening) -> int:
  """Forward FLOPs of one attention block (Q/K/V/output projections, QK^T, AV, MLP)."""
  projections = num_q * q_width * qk + num_kv * kv_width * (qk + v) + num_q * v * out_width
  attention = num_q * num_kv * (qk + v)
  mlp = 2 * num_q * out_width * widening * out_width
  return 2 * (projections + attention + mlp)


def _preprocessor_flops(cfg: ml_collections.ConfigDict) -> int:
  """Forward FLOPs of an image preprocessor's convolutions and position projection."""
  if model_lib.modality(cfg) != "image":
    return 0
  inp = cfg.input
  height, width, channels = cfg.input_shape
  rows, cols = model_lib.input_grid(cfg)
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
      from perceiver_jax.models import position_encoding  # noqa: PLC0415

      pos = position_encoding.num_fourier_channels(
        2, inp.fourier.num_bands, inp.fourier.concat_pos, inp.fourier.sine_only
      )
    else:
      pos = inp.trainable.num_channels
    flops += 2 * rows * cols * pos * inp.project_pos_dim
  return flops


def _num_inputs(cfg: ml_collections.ConfigDict) -> int:
  if model_lib.modality(cfg) == "points":
    return cfg.input_shape[0]
  rows, cols = model_lib.input_grid(cfg)
  return rows * cols


def forward_flops(cfg: ml_collections.ConfigDict) -> int | None:
  """Matrix-multiply FLOPs of one example's forward pass; None where not counted
  (ConvNet baselines, audio/video models)."""
  kind, arch = model_lib.modality(cfg), model_lib.architecture(cfg)
  if kind == "audio_video" or arch in ("convnet", "vit"):
    return None
  num_inputs, in_width = _num_inputs(cfg), model_lib.input_channels(cfg)
  flops = _preprocessor_flops(cfg)
  if arch == "transformer":
    base = cfg.baseline
    width = base.num_channels
    flops += 2 * num_inputs * in_width * width
    layer = _block_flops(
      num_inputs, num_inputs, width, width, width, width, width, base.widening_factor
    )
    return flops + base.num_layers * layer + 2 * width * cfg.num_classes
  latents, width = cfg.num_latents, cfg.num_latent_channels
  cross_qk = cfg.cross_attend_qk_channels or in_width
  cross_v = cfg.cross_attend_v_channels or cross_qk
  cross = _block_flops(
    latents, num_inputs, width, in_width, cross_qk, cross_v, width, cfg.cross_attend_widening_factor
  )
  # Cross-attends that share weights see the same inputs, so their keys and values are
  # the same: the encoder computes them, and their gradients, once per weight set.
  key_value = 2 * num_inputs * in_width * (cross_qk + cross_v)
  num_sets = (
    encoder_lib.cross_attend_weight_index(cfg.num_cross_attends - 1, cfg.share_cross_attend_weights)
    + 1
  )
  flops -= (cfg.num_cross_attends - num_sets) * key_value
  latent = _block_flops(
    latents, latents, width, width, width, width, width, cfg.self_attend_widening_factor
  )
  flops += cfg.num_cross_attends * cross
  flops += cfg.num_blocks * cfg.num_self_attends_per_block * latent
  if cfg.decoder.type == "classification":
    flops += _block_flops(1, latents, width, width, width, width, width, 1)
  return flops + 2 * width * cfg.num_classes


def train_flops(cfg: ml_collections.ConfigDict) -> int | None:
  """Matrix-multiply FLOPs of one example's training step: forward + backward = 3 x forward."""
  forward = forward_flops(cfg)
  return None if forward is None else 3 * forward


# ---------------------------------------------------------------------------------------
# Measurements.


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _median_seconds(fn, steps: int, warmup: int) -> float:
  import jax  # noqa: PLC0415

  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


@functools.cache
def _jitted_matmul():
  import jax  # noqa: PLC0415

  return jax.jit(lambda a, b: a @ b)


def _matmul(a, b):
  return _jitted_matmul()(a, b)


def matmul_peak(dtype: str = "float32", sizes=(1024, 2048, 3072), steps: int = 10) -> dict:
  """This machine's matmul throughput: the best over `sizes` of the median time of an
  n x n x n product in `dtype` (FLOP/s, 2 n^3 per product)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  best = {"flops_per_s": 0.0}
  for n in sizes:
    keys = jax.random.split(jax.random.PRNGKey(n), 2)
    a = jax.random.normal(keys[0], (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(keys[1], (n, n), jnp.float32).astype(dtype)
    seconds = _median_seconds(lambda a=a, b=b: _matmul(a, b), steps, warmup=2)
    rate = 2 * n**3 / seconds
    if rate > best["flops_per_s"]:
      best = {"flops_per_s": rate, "size": n, "dtype": dtype}
  return best


def _xla_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return float(cost["flops"]) if cost and "flops" in cost else None


def _xla_bytes(compiled) -> int | None:
  """The buffers a compiled step holds at once: its arguments, outputs and temporaries,
  with each donated argument counted once (its output reuses its buffer)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(
    analysis.temp_size_in_bytes
    + analysis.argument_size_in_bytes
    + analysis.output_size_in_bytes
    - analysis.alias_size_in_bytes
  )


def _device_peak_bytes() -> int | None:
  import jax  # noqa: PLC0415

  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure(case: Case, *, dtype: str, steps: int, warmup: int, inference: bool = True) -> dict:
  """Compiles and times the training step (forward, backward, clipping, LAMB) and the
  inference forward pass of `case` on one device, with synthetic inputs held on it."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from perceiver_jax import optimizer as optimizer_lib  # noqa: PLC0415
  from perceiver_jax import train_step as ts  # noqa: PLC0415

  cfg = ml_collections.ConfigDict(case.model.to_dict())
  if dtype != "float32":
    cfg.compute_dtype = dtype
  forward = model_lib.build_model(cfg)
  schedule = optax.constant_schedule(1e-3)
  tx = optimizer_lib.make_optimizer(optimizer_lib.default_optimizer_config(), schedule)
  batch_size = case.batch_size
  inputs = model_lib.dummy_inputs(cfg, batch_size)
  inputs = jax.random.normal(jax.random.PRNGKey(0), inputs.shape, inputs.dtype)
  labels = jnp.arange(batch_size) % cfg.num_classes
  state = jax.jit(lambda rng: ts.init_train_state(forward, tx, rng, inputs[:1]))(
    jax.random.PRNGKey(1)
  )
  num_params = model_lib.count_params(state.params)
  # Onto the first device in pmap's layout, once: no step waits for a host transfer.
  to_device = jax.pmap(lambda tree: tree, devices=jax.local_devices()[:1])
  state = to_device(ts.replicate(state, 1))
  batch = to_device(ts.replicate({"inputs": inputs, "labels": labels}, 1))
  step = jax.pmap(ts.make_train_step(forward, tx, schedule), axis_name=ts.AXIS, donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  xla_train_flops = _xla_flops(compiled)
  holder = {"state": state}

  def train_once():
    holder["state"], metrics = compiled(holder["state"], batch)
    return metrics["loss"]

  train_s = _median_seconds(train_once, steps, warmup)
  loss = float(np.asarray(train_once())[0])
  result = {
    "workload": case.workload,
    "label": case.label,
    "dtype": dtype,
    "batch_size": batch_size,
    "num_inputs": _num_inputs(cfg),
    "num_params": num_params,
    "compile_s": compile_s,
    "train_step_s": train_s,
    "train_examples_per_s": batch_size / train_s,
    "train_flops_per_example": train_flops(cfg),
    "xla_train_flops_per_example": None
    if xla_train_flops is None
    else xla_train_flops / batch_size,
    "xla_train_bytes": _xla_bytes(compiled),
    "loss": loss,
    "finite": bool(np.isfinite(loss)),
  }
  if inference:
    params, model_state = jax.tree.map(
      lambda x: x[0], (holder["state"].params, holder["state"].state)
    )
    apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
    compiled_apply = apply.lower(params, model_state, inputs).compile()
    infer_s = _median_seconds(lambda: compiled_apply(params, model_state, inputs), steps, warmup)
    result.update(
      inference_s=infer_s,
      inference_examples_per_s=batch_size / infer_s,
      forward_flops_per_example=forward_flops(cfg),
    )
  result["device_peak_bytes"] = _device_peak_bytes()
  result["peak_rss_bytes"] = peak_rss_bytes()
  return result


def utilisation(result: dict, peak_flops_per_s: float) -> dict:
  """Model FLOP utilisation of the train step (and inference) against a matmul peak."""
  out = {}
  if result.get("train_flops_per_example"):
    out["train_mfu"] = (
      result["train_flops_per_example"] * result["train_examples_per_s"] / (peak_flops_per_s)
    )
  if result.get("forward_flops_per_example") and result.get("inference_examples_per_s"):
    out["inference_mfu"] = (
      result["forward_flops_per_example"] * result["inference_examples_per_s"] / peak_flops_per_s
    )
  return out


def median_run(runs: list[dict]) -> dict:
  """Of several measurements of one case, the one with the median training step (the
  lower median for an even count), with every run's step time added.

  Cases measured in alternating rounds share the machine's slow and fast spells, so the
  ratio of two cases' medians is far steadier than that of two single runs.
  """
  if not runs:
    raise ValueError("median_run needs at least one run")
  ordered = sorted(runs, key=lambda r: r["train_step_s"])
  return {
    **ordered[(len(ordered) - 1) // 2],
    "rounds": len(runs),
    "train_step_s_runs": [r["train_step_s"] for r in runs],
  }


def update_results(path: str, sections: dict[str, str]) -> None:
  """Replaces (or appends) each `## title` section of the Markdown file at `path`."""
  text = (
    pathlib.Path(path).read_text()
    if os.path.exists(path)
    else (
      "# Benchmarks\n\nWritten by `scripts/benchmark.py --results=benchmarks/results.md`; each "
      "section names its machine, commit and command.\n\n"
    )
  )
  for title, section in sections.items():
    heading = f"## {title}\n"
    if heading in text:
      start = text.index(heading)
      end = text.find("\n## ", start + len(heading))
      text = text[:start] + section + ("" if end < 0 else text[end + 1 :])
    else:
      text = text.rstrip("\n") + "\n\n" + section
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.atomic_write(path, "w") as f:
    f.write(text)
