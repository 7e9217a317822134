"""LAMB with gradient clipping, selective weight decay and the papers' learning-rate schedules.

Configured by the `config.optimizer` section (`default_optimizer_config()` lists
and documents every field). The two published ImageNet recipes:
  Perceiver [P]:     LAMB, lr 0.004 (not scaled by batch), schedule='step',
                     divided by 10 at epochs (84, 102, 114) of 120.
  Perceiver IO [PIO]: LAMB (b1 0.9, b2 0.999, eps 1e-6), lr 5e-4 x batch/256,
                     schedule='constant_cosine' (flat for half of training, then
                     cosine to 0, no warm-up), weight decay 0.1, clip norm 10.
Step counts are optax's: the first update is step 0, so a schedule's value at
step s is the learning rate of the (s+1)-th update.
"""

from __future__ import annotations

import functools
import math

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import optax

from perceiver_jax import fusion

SCHEDULES = ("step", "constant_cosine", "warmup_cosine", "constant")
OPTIMIZERS = ("lamb", "adamw")
# The float fields, all of which must be finite.
_FLOAT_FIELDS = (
  "learning_rate",
  "b1",
  "b2",
  "eps",
  "weight_decay",
  "clip_global_norm",
  "decay_factor",
  "constant_fraction",
)
# Leaves that are exempt from weight decay in any module: Linear/Conv biases, and the output
# bias of the language model's `embedding_decoder`.
_BIAS_LEAVES = ("b", "bias")
# Leaves that are decayed in any module: Linear/Conv weights and token embeddings (as in BERT;
# the language model's embedding is also its output projection).
_WEIGHT_LEAVES = ("w", "embeddings")
# Leaves that are exempt when they belong to a LayerNorm/BatchNorm module.
_NORM_LEAVES = ("scale", "offset")


def default_optimizer_config() -> ml_collections.ConfigDict:
  """The Perceiver IO ImageNet recipe as a `config.optimizer` section."""
  return ml_collections.ConfigDict(
    dict(
      # One of OPTIMIZERS: "lamb" (the papers) or "adamw" (same Adam direction and decoupled,
      # masked weight decay, without LAMB's per-leaf trust ratio).
      name="lamb",
      # Base learning rate; the peak value of every schedule (after batch scaling).
      learning_rate=5e-4,
      # Multiply learning_rate by batch_size / 256 (Perceiver IO: 5e-4 -> 2e-3 at 1024).
      scale_lr_by_batch=True,
      # Adam moment decay rates and the denominator's epsilon inside LAMB.
      b1=0.9,
      b2=0.999,
      eps=1e-6,
      # Decoupled weight decay, added to the Adam direction before the trust ratio;
      # only on kernels (see `weight_decay_mask`).
      weight_decay=0.1,
      # Whether `pos_embs` leaves (the latent array, learned input positions and
      # decoder queries) are decayed. Perceiver IO does not decay them.
      decay_position_embeddings=False,
      # Clip the gradient's global norm to this value before LAMB; 0 disables.
      clip_global_norm=10.0,
      # One of SCHEDULES.
      schedule="constant_cosine",
      # schedule='step': multiply by decay_factor at the start of each of these epochs.
      decay_epochs=(84, 102, 114),
      decay_factor=0.1,
      # schedule='constant_cosine': flat for this fraction of training, then cosine to 0.
      constant_fraction=0.5,
      # schedule='warmup_cosine': linear from 0 to the peak over this many steps, then
      # cosine to 0 at the end of training. Warm-up often stops LAMB from training [PIO].
      warmup_steps=0,
    )
  )


def _fail(field: str, value, message: str):
  raise ValueError(f"config.optimizer.{field}={value!r}: {message}")


def validate_optimizer_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  if cfg.name not in OPTIMIZERS:
    _fail("name", cfg.name, f"unknown optimizer; expected one of {OPTIMIZERS}")
  # NaN passes every comparison below (`nan <= 0` is False), so finiteness comes first.
  for field in _FLOAT_FIELDS:
    if not math.isfinite(cfg[field]):
      _fail(field, cfg[field], "must be finite")
  if cfg.learning_rate <= 0:
    _fail("learning_rate", cfg.learning_rate, "must be positive")
  for field in ("b1", "b2"):
    if not 0 <= cfg[field] < 1:
      _fail(field, cfg[field], "must be in [0, 1)")
  if cfg.eps <= 0:
    _fail("eps", cfg.eps, "must be positive")
  if cfg.weight_decay < 0:
    _fail("weight_decay", cfg.weight_decay, "must be >= 0")
  if cfg.clip_global_norm < 0:
    _fail("clip_global_norm", cfg.clip_global_norm, "must be >= 0 (0 disables clipping)")
  if cfg.schedule not in SCHEDULES:
    _fail("schedule", cfg.schedule, f"unknown schedule; expected one of {SCHEDULES}")


def learning_rate_schedule(
  cfg: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int, batch_size: int
) -> optax.Schedule:
  """The learning rate as a function of the update count (an int or int32 scalar).

  Args:
    cfg: the `config.optimizer` section.
    total_steps: number of updates in the whole run.
    steps_per_epoch: updates per epoch, to convert `decay_epochs` to steps.
    batch_size: global batch size, for `scale_lr_by_batch`.
  Returns:
    An `optax.Schedule` mapping step -> float32 learning rate; jit-compatible.
  """
  validate_optimizer_config(cfg)
  for name, value in (
    ("total_steps", total_steps),
    ("steps_per_epoch", steps_per_epoch),
    ("batch_size", batch_size),
  ):
    if value < 1:
      raise ValueError(f"{name}={value!r}: must be at least 1")
  peak = cfg.learning_rate * (batch_size / 256 if cfg.scale_lr_by_batch else 1.0)

  if cfg.schedule == "constant":
    return optax.constant_schedule(peak)

  if cfg.schedule == "step":
    epochs = tuple(cfg.decay_epochs)
    if any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)) or min(epochs, default=1) < 1:
      _fail("decay_epochs", epochs, "must be positive and strictly increasing")
    if epochs and epochs[-1] * steps_per_epoch >= total_steps:
      _fail(
        "decay_epochs",
        epochs,
        f"epoch {epochs[-1]} is at or beyond the end of training "
        f"({total_steps} steps = {total_steps / steps_per_epoch:g} epochs)",
      )
    if cfg.decay_factor <= 0:
      _fail("decay_factor", cfg.decay_factor, "must be positive")
    # optax decays at count >= boundary, so the first step of a decay epoch already has it.
    return optax.piecewise_constant_schedule(
      peak, {epoch * steps_per_epoch: cfg.decay_factor for epoch in epochs}
    )

  if cfg.schedule == "constant_cosine":
    if not 0 <= cfg.constant_fraction <= 1:
      _fail("constant_fraction", cfg.constant_fraction, "must be in [0, 1]")
    flat_steps = round(cfg.constant_fraction * total_steps)
    if flat_steps == total_steps:
      return optax.constant_schedule(peak)
    # A "warm-up" from the peak to the peak is the flat part; optax then does the cosine.
    return optax.warmup_cosine_decay_schedule(peak, peak, flat_steps, total_steps)

  # warmup_cosine
  if not 0 <= cfg.warmup_steps < total_steps:
    _fail("warmup_steps", cfg.warmup_steps, f"must be in [0, total_steps={total_steps})")
  return optax.warmup_cosine_decay_schedule(0.0, peak, cfg.warmup_steps, total_steps)


def _decays(path: tuple, decay_position_embeddings: bool) -> bool:
  names = [str(getattr(key, "key", key)) for key in path]
  module, leaf = "/".join(names[:-1]), names[-1]
  if leaf in _WEIGHT_LEAVES:
    return True
  if leaf in _BIAS_LEAVES:
    return False
  if leaf in _NORM_LEAVES and "norm" in module.rsplit("/", 1)[-1]:
    return False
  if leaf == "pos_embs":
    return decay_position_embeddings
  # An unknown parameter kind must be a decision, not a silent default.
  raise ValueError(f"weight_decay_mask: no rule for parameter {module}/{leaf}")


def weight_decay_mask(params: hk.Params, decay_position_embeddings: bool = False) -> hk.Params:
  """Which parameters get weight decay: the same tree as `params` with bool leaves.

  The rule, by leaf name and (for norms) the innermost module name of Haiku's
  `{module_path: {leaf: array}}` tree:
    `w` (Linear weight matrices, Conv kernels),
      `embeddings` (token embeddings)                      -> True
    `b`, `bias` (biases)                                   -> False
    `scale`, `offset` in a `*norm*` module (LayerNorm,
      BatchNorm)                                           -> False
    `pos_embs` (latents, learned positions, queries)      -> decay_position_embeddings
  Any other leaf raises ValueError, so that new parameter kinds are classified
  on purpose. Leaves may be arrays or `jax.ShapeDtypeStruct`s.
  """
  return jax.tree_util.tree_map_with_path(
    lambda path, _: _decays(path, decay_position_embeddings), params
  )


def make_optimizer(
  cfg: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """Global-norm clipping (if `clip_global_norm` > 0), then LAMB (or AdamW).

  LAMB (optax.lamb): Adam direction with bias correction, plus
  `weight_decay * w` on the leaves `weight_decay_mask` selects, then each leaf's
  update is rescaled by the trust ratio ||w|| / ||update|| (1 where either norm
  is 0), then multiplied by -schedule(step). The trust ratio applies to every
  leaf, decayed or not, as in the LAMB paper. `name="adamw"` (optax.adamw) is the same
  without the trust ratio: the learning rate is then an absolute step size.

  Args:
    cfg: the `config.optimizer` section.
    schedule: e.g. from `learning_rate_schedule`.
  Returns:
    An `optax.GradientTransformation` whose `update` needs `params`.
  """
  validate_optimizer_config(cfg)
  # A callable mask is evaluated on the params at init/update, so the optimizer can
  # be built before the model is initialised.
  mask = functools.partial(
    weight_decay_mask, decay_position_embeddings=cfg.decay_position_embeddings
  )
  # optax.lamb's and optax.adamw's chains (the same states), with the Adam moments written
  # out in place (`scale_by_adam`) and the trust ratio's norms computed as below.
  adam = scale_by_adam(cfg.b1, cfg.b2, cfg.eps)
  decay = optax.add_decayed_weights(cfg.weight_decay, mask)
  learning_rate = optax.scale_by_learning_rate(schedule)
  if cfg.name == "lamb":
    tx = optax.chain(adam, decay, scale_by_trust_ratio(), learning_rate)
  else:
    tx = optax.chain(adam, decay, learning_rate)
  if cfg.clip_global_norm > 0:
    return optax.chain(clip_by_global_norm(cfg.clip_global_norm), tx)
  return tx


# Norms as dot products. XLA:CPU lowers a large sum of squares to a tree of reduce-window
# ops, a kernel compiled per parameter leaf; a dot product is a library call. On io-small's
# 104 leaves this halves the optimizer's compile time (6.7 s -> 3.6 s on a busy machine).


def squared_norm(x: jax.Array) -> jax.Array:
  flat = x.reshape(-1)
  return jnp.vdot(flat, flat)


def global_norm(tree) -> jax.Array:
  """sqrt of the sum of squares of all leaves (`optax.tree.norm`)."""
  return jnp.sqrt(sum(squared_norm(x) for x in jax.tree_util.tree_leaves(tree)))


def scale_by_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """`optax.scale_by_adam` (the same updates and state) whose new moments pass a fusion
  barrier (`fusion.barrier`).

  Without it, XLA:CPU fuses the moment updates into each of their consumers (the update
  direction, the trust ratio's norm), which then read the old moments after the new ones
  have overwritten them in place in the donated state: it copies every moment at the start
  of the step instead, two copies of the parameters' size (imagenet-long chunked: 60 of the
  step's 356 MiB of temporaries; README, "Performance").
  """
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

  def update(updates, state, params=None):
    updates, state = adam.update(updates, state, params)
    return updates, fusion.barrier(state)

  return optax.GradientTransformation(adam.init, update)


def scale_by_trust_ratio() -> optax.GradientTransformation:
  """Each leaf's update times ||w|| / ||update||, or 1 where either norm is 0
  (`optax.scale_by_trust_ratio`, with the same state)."""

  def update(updates, state, params):
    def scale(u, w):
      w_norm, u_norm = jnp.sqrt(squared_norm(w)), jnp.sqrt(squared_norm(u))
      ratio = jnp.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
      return u * ratio.astype(u.dtype)

    return jax.tree.map(scale, updates, params), state

  return optax.GradientTransformation(lambda params: optax.ScaleByTrustRatioState(), update)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales all updates by min(1, max_norm / global norm) (`optax.clip_by_global_norm`,
  with the same state)."""

  def update(updates, state, params=None):
    del params
    norm = global_norm(updates)
    scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.ClipByGlobalNormState(), update)
