"""The PyTorch peers of the peer benchmark, at the shapes of our workloads.

Every shape is read from our own workload's config (`benchmark_workloads.cases`), so that a
change there moves the peer with it:

  hf          transformers' `PerceiverModel` with a `PerceiverImagePreprocessor` (pixels +
              2-D Fourier features: 64 bands, our max resolution, position concatenated,
              sine and cosine) and a `PerceiverClassificationDecoder` (one trainable
              D-wide query with a query residual): the layout of
              `PerceiverForImageClassificationFourier`, which fixes the Fourier features'
              max resolution at 224 where io-small's is 64. io-small (64 x 64 pixels,
              256 x 512 latents, 2 blocks of 4 self-attends, batch 8), imagenet-long
              (224 x 224, 512 x 1,024 latents, 1 self-attend, batch 2) and imagenet-io
              (the release's 224 x 224 model: 8 blocks of 6, 1,000 classes, batch 16).
              Our parameter count and our FLOP count exactly (checked in `build`).
  lucidrains  perceiver-pytorch's `Perceiver` on perceiver-small's inputs: 64 x 64 pixels +
              its Fourier features (64 bands up to max_freq 64, the frequencies of ours:
              261 channels), 128 x 256 latents, 4 cross-attends each followed by 2
              self-attends, the first block with its own weights and the other 3 sharing
              one set, a mean-pool head, batch 8. Its heads are given our widths (cross:
              1 head of 261 channels, self: 8 heads of 32, where its defaults are 64
              per head). Its own layout elsewhere: GEGLU feed-forwards 4 x wide after every
              attention (ours: GELU MLPs 1 x wide), its own self-attends in the first block
              (ours share one set across all 4 blocks), no biases on Q/K/V, keys and values
              of the shared cross-attends recomputed at every call, a LayerNorm before
              the classifier. Hence 6,365,314 parameters to our 1,634,976 (the GEGLU
              feed-forwards are 4.7M of them) and 237.1 GFLOP per step to our 135.2
              (with its default 64 channels per head: 7,006,494 and 130.2).

A training step: zero the gradients; forward (train mode, no dropout) on a fixed batch of
random normal pixels with labels cycling over the classes; cross-entropy; backward;
`clip_grad_norm_` at 10; a LAMB step (pytorch-optimizer's, with our
`default_optimizer_config`: b1 0.9, b2 0.999, eps 1e-6, weight decay 0.1 added to the Adam
direction before the trust ratio, on Linear weights only as our `weight_decay_mask`; lr
1e-3). pytorch-optimizer's LAMB differs from optax's in its numerics only (no bias correction
of the moments; ||w|| clamped at 10 in the trust ratio). bfloat16: the float32 model and
optimizer with the forward and the loss under `torch.autocast(device, torch.bfloat16)`,
PyTorch's mixed-precision recipe.

Training FLOPs are counted as ours (`perceiver_jax/tools/flops.py`): matrix multiplies only,
2 per multiply-add, 3 x the forward pass. Here from the peer's modules: hooks on every
`nn.Linear` (its shape times the rows it is applied to) and, for each attention call, Q K^T
and the weighted sum of V (queries x keys x (qk + v) multiply-adds), on one forward pass;
cross-checked against a hand formula (lucidrains) or our own count (hf) when built.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable

import torch
import torch.nn.functional as F

from perceiver_jax import model as model_lib
from perceiver_jax.tools import benchmark_workloads
from perceiver_jax.tools import flops as flops_lib

IMPLS_FOR_WORKLOAD = {
  "io-small": ("hf",),
  "perceiver-small": ("lucidrains",),
  "imagenet-long": ("hf",),
  "imagenet-io": ("hf",),
}
DTYPES = ("float32", "bfloat16")
# Our `default_optimizer_config` (b1, b2, eps, weight decay), at the benchmark's lr.
LAMB = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
CLIP_GLOBAL_NORM = 10.0


@dataclasses.dataclass
class PeerCase:
  name: str  # e.g. "hf io-small"
  impl: str  # "hf" or "lucidrains"
  workload: str  # a key of IMPLS_FOR_WORKLOAD
  dtype: str  # "float32" or "bfloat16"
  batch_size: int
  num_params: int
  train_flops_per_step: int  # analytic, counted as ours (see the module's docstring)
  step: Callable[[], float]  # one training step, synchronous; returns the loss
  notes: str  # one line: the layout next to ours, versions, threads


@dataclasses.dataclass
class _Peer:
  """A peer model with its fixed batch: `forward(inputs)` gives the logits [B, classes]."""

  model: torch.nn.Module
  inputs: torch.Tensor
  forward: Callable[[torch.Tensor], torch.Tensor]
  num_classes: int
  hand_flops: int  # the hand formula's (or our) training FLOPs per step at the batch size
  notes: str


def _our_case(workload: str) -> benchmark_workloads.Case:
  """Our workload's (first) case: its model config and batch size."""
  case = benchmark_workloads.cases(workload)[0]
  inp = case.model.input
  fourier = inp.fourier
  # The layout both peers take: pixels + concatenated sine/cosine Fourier features.
  if (
    case.model.modality != "image"
    or inp.prep_type != "pixels"
    or inp.spatial_downsample != 1
    or inp.position_encoding_type != "fourier"
    or inp.project_pos_dim > 0
    or not fourier.concat_pos
    or fourier.sine_only
  ):
    raise ValueError(f"{workload}: our model is not pixels + concatenated Fourier features")
  return case


def _hf_peer(case: benchmark_workloads.Case) -> _Peer:
  """transformers' Perceiver IO classifier in the layout of our config `case.model`."""
  import transformers  # noqa: PLC0415
  from transformers.models.perceiver import modeling_perceiver as hf  # noqa: PLC0415

  cfg = case.model
  if cfg.decoder.type != "classification" or cfg.num_cross_attends != 1:
    raise ValueError(f"{case.workload}: the hf peer takes one cross-attend and a query decoder")
  if (cfg.cross_attend_qk_channels, cfg.cross_attend_v_channels) != (0, 0) or (
    cfg.self_attend_qk_channels,
    cfg.self_attend_v_channels,
  ) != (0, 0):
    raise ValueError(f"{case.workload}: the hf peer takes the default qk/v widths")
  height, width, channels = cfg.input_shape
  config = transformers.PerceiverConfig(
    num_latents=cfg.num_latents,
    d_latents=cfg.num_latent_channels,
    d_model=model_lib.input_channels(cfg),  # 3 pixel channels + 2 x (2 x 64 bands + 1)
    num_blocks=cfg.num_blocks,
    num_self_attends_per_block=cfg.num_self_attends_per_block,
    num_self_attention_heads=cfg.num_self_attend_heads,
    num_cross_attention_heads=cfg.num_cross_attend_heads,
    # qk_channels/v_channels left unset: the cross-attend's qk = v = its input width
    # (cross_attention_shape_for_attention 'kv'), the self-attends' the latent width.
    self_attention_widening_factor=cfg.self_attend_widening_factor,
    cross_attention_widening_factor=cfg.cross_attend_widening_factor,
    attention_probs_dropout_prob=0.0,
    hidden_act="gelu_pytorch_tanh",  # ours: "gelu_tanh" (the port's default is exact GELU)
    use_query_residual=True,
    image_size=height,
    num_labels=cfg.num_classes,
  )
  fourier = cfg.input.fourier
  preprocessor = hf.PerceiverImagePreprocessor(
    config,
    prep_type="pixels",
    spatial_downsample=1,
    position_encoding_type="fourier",
    fourier_position_encoding_kwargs=dict(
      num_bands=fourier.num_bands,
      max_resolution=tuple(fourier.max_resolution),
      concat_pos=True,
      sine_only=False,
    ),
  )
  decoder = hf.PerceiverClassificationDecoder(
    config,
    num_channels=cfg.num_latent_channels,
    trainable_position_encoding_kwargs=dict(num_channels=cfg.num_latent_channels, index_dims=1),
    use_query_residual=cfg.decoder.use_query_residual,
  )
  model = hf.PerceiverModel(config, input_preprocessor=preprocessor, decoder=decoder)
  return _Peer(
    model=model,
    inputs=torch.randn(case.batch_size, channels, height, width),  # channels first, as it takes
    forward=lambda inputs: model(inputs=inputs).logits,
    num_classes=cfg.num_classes,
    # The same layout as ours, so our own count.
    hand_flops=flops_lib.train_flops(cfg) * case.batch_size,
    notes=(
      "transformers PerceiverModel + PerceiverImagePreprocessor (Fourier max resolution "
      f"{tuple(fourier.max_resolution)}) + PerceiverClassificationDecoder: our layout, "
      "tanh GELU as ours, pixels channels-first"
    ),
  )


def _lucidrains_flops(
  inputs, in_width, latents, width, depth, self_per_cross, cross_inner, self_inner, classes
) -> int:
  """Hand formula: training FLOPs of one example of perceiver-pytorch's `Perceiver`
  (`depth` x (cross-attend + feed-forward, `self_per_cross` x (self-attend + feed-forward)),
  mean-pool head), counted as ours."""
  # Q, K and V, out (inner -> width), Q K^T and AV.
  cross = latents * width * cross_inner + inputs * in_width * 2 * cross_inner
  cross += latents * cross_inner * width + latents * inputs * 2 * cross_inner
  self_attend = latents * width * 3 * self_inner + latents * self_inner * width
  self_attend += latents * latents * 2 * self_inner
  # GEGLU: width -> 2 x 4 x width (value and gate), 4 x width -> width.
  feed_forward = latents * width * 8 * width + latents * 4 * width * width
  block = cross + feed_forward + self_per_cross * (self_attend + feed_forward)
  return 3 * 2 * (depth * block + width * classes)


def _lucidrains_peer(case: benchmark_workloads.Case) -> _Peer:
  """perceiver-pytorch's `Perceiver` on the inputs and widths of our config `case.model`."""
  from perceiver_pytorch import Perceiver  # noqa: PLC0415

  cfg = case.model
  height, width, channels = cfg.input_shape
  fourier = cfg.input.fourier
  if height != width or tuple(fourier.max_resolution) != (height, width):
    raise ValueError(f"{case.workload}: the lucidrains peer takes square images at their size")
  in_width = model_lib.input_channels(cfg)
  depth = cfg.num_cross_attends
  self_per_cross = cfg.num_blocks * cfg.num_self_attends_per_block // depth
  # Our widths per head: the cross-attend's qk = v = the input width, the self-attends' the
  # latent width, split over the heads.
  cross_dim_head = in_width // cfg.num_cross_attend_heads
  latent_dim_head = cfg.num_latent_channels // cfg.num_self_attend_heads
  model = Perceiver(
    input_channels=channels,
    input_axis=2,
    num_freq_bands=fourier.num_bands,
    # Its frequencies are linspace(1, max_freq / 2, bands) on positions in [-1, 1]: ours,
    # linspace(1, resolution / 2, bands), with max_freq the resolution.
    max_freq=float(fourier.max_resolution[0]),
    depth=depth,
    num_latents=cfg.num_latents,
    latent_dim=cfg.num_latent_channels,
    cross_heads=cfg.num_cross_attend_heads,
    latent_heads=cfg.num_self_attend_heads,
    cross_dim_head=cross_dim_head,
    latent_dim_head=latent_dim_head,
    self_per_cross_attn=self_per_cross,
    weight_tie_layers=True,
    fourier_encode_data=True,
    num_classes=cfg.num_classes,
    attn_dropout=0.0,
    ff_dropout=0.0,
  )
  hand_flops = _lucidrains_flops(
    height * width,
    in_width,
    cfg.num_latents,
    cfg.num_latent_channels,
    depth,
    self_per_cross,
    cross_dim_head * cfg.num_cross_attend_heads,
    latent_dim_head * cfg.num_self_attend_heads,
    cfg.num_classes,
  )
  return _Peer(
    model=model,
    inputs=torch.randn(case.batch_size, height, width, channels),  # channels last
    forward=model,
    num_classes=cfg.num_classes,
    hand_flops=hand_flops * case.batch_size,
    notes=(
      f"perceiver-pytorch Perceiver, max_freq {fourier.max_resolution[0]}, heads at our widths "
      f"(cross 1 x {cross_dim_head}, self {cfg.num_self_attend_heads} x {latent_dim_head}); "
      "unlike ours: GEGLU feed-forwards 4x wide, the first block's self-attends unshared, "
      "no Q/K/V biases, shared cross-attends' keys/values recomputed per call"
    ),
  )


def _attention_projections(model: torch.nn.Module) -> list[tuple[torch.nn.Linear, ...]]:
  """(query Linear, key Linear, qk + v channels) of each attention module of a peer."""
  out = []
  for module in model.modules():
    name = type(module).__name__
    if name == "PerceiverSelfAttention":  # transformers: query, key, value
      out.append((module.query, module.key, module.qk_channels + module.v_channels))
    elif name == "Attention" and hasattr(module, "to_kv"):  # perceiver-pytorch: to_q, to_kv
      out.append((module.to_q, module.to_kv, module.to_q.out_features * 2))
  return out


def count_train_flops(model: torch.nn.Module, forward: Callable[[], object]) -> int:
  """3 x the matrix-multiply FLOPs of the forward pass `forward()` (2 per multiply-add):
  every `nn.Linear` call, and Q K^T and AV of every attention call."""
  total = 0
  rows: dict[int, list[int]] = {}  # id(Linear) -> rows per call, in call order

  def linear_hook(module, args, _output):
    nonlocal total
    count = args[0].numel() // module.in_features
    total += 2 * count * module.in_features * module.out_features
    rows.setdefault(id(module), []).append(count)

  linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
  hooks = [m.register_forward_hook(linear_hook) for m in linears]
  try:
    with torch.no_grad():
      forward()
  finally:
    for hook in hooks:
      hook.remove()
  for query, key, qk_plus_v in _attention_projections(model):
    # A shared module is called once per use: its i-th query call goes with its i-th key
    # call. Queries x keys x (qk + v) multiply-adds (per example: the forward has batch 1).
    for q_rows, k_rows in zip(rows.get(id(query), []), rows.get(id(key), []), strict=True):
      total += 2 * q_rows * k_rows * qk_plus_v
  return 3 * total


def _weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
  """Parameter groups decayed as our `weight_decay_mask`: Linear weights only, not biases,
  LayerNorms, latents or queries."""
  decayed = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
  params = list(model.parameters())
  return [
    {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
    {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
  ]


def build(impl: str, workload: str, dtype: str, device: str = "cpu") -> PeerCase:
  """The peer `impl` of `workload` in `dtype` ('float32' or 'bfloat16') on torch `device`,
  ready to step."""
  if impl not in IMPLS_FOR_WORKLOAD.get(workload, ()):
    raise ValueError(f"no {impl!r} peer for workload {workload!r}: {IMPLS_FOR_WORKLOAD}")
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r}: expected one of {DTYPES}")
  import pytorch_optimizer  # noqa: PLC0415

  case = _our_case(workload)
  torch.manual_seed(0)
  peer = _hf_peer(case) if impl == "hf" else _lucidrains_peer(case)
  model = peer.model.to(device).train()
  inputs = peer.inputs.to(device)
  labels = (torch.arange(case.batch_size) % peer.num_classes).to(device)
  num_params = sum(p.numel() for p in model.parameters())
  # Counted on one example (matmul FLOPs are linear in the batch), then scaled.
  flops = count_train_flops(model, lambda: peer.forward(inputs[:1])) * case.batch_size
  if flops != peer.hand_flops:
    raise AssertionError(f"{impl} {workload}: {flops:,} FLOPs by its modules, {peer.hand_flops:,}")

  optimizer = pytorch_optimizer.Lamb(
    _weight_decay_groups(model, LAMB["weight_decay"]),
    lr=LAMB["lr"],
    betas=LAMB["betas"],
    eps=LAMB["eps"],
    # Decay added to the Adam direction before the trust ratio, as optax's (and the paper's).
    weight_decouple=False,
    max_grad_norm=0.0,  # clipping is clip_grad_norm_'s, below
  )
  device_type = torch.device(device).type
  autocast = dtype == "bfloat16"
  synchronize = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)

  def step() -> float:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
      loss = F.cross_entropy(peer.forward(inputs), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_GLOBAL_NORM)
    optimizer.step()
    loss = float(loss.detach())  # waits for the device
    synchronize()
    return loss

  library = {"hf": "transformers", "lucidrains": "perceiver-pytorch"}[impl]
  versions = ", ".join(
    f"{name} {importlib.metadata.version(name)}" for name in ("torch", library, "pytorch-optimizer")
  )
  notes = f"{peer.notes}; {versions}; {torch.get_num_threads()} torch threads"
  return PeerCase(
    name=f"{impl} {workload}",
    impl=impl,
    workload=workload,
    dtype=dtype,
    batch_size=case.batch_size,
    num_params=num_params,
    train_flops_per_step=flops,
    step=step,
    notes=notes,
  )
