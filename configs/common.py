"""Helpers shared by the experiment configs."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config argument such as `variant=io_fourier,runlocal` against typed defaults.

  `key=value` pairs are converted to the type of the default (booleans accept
  true/false/1/0); a bare `key` sets a boolean default to True. Unknown keys and
  unparsable values raise ValueError naming the key and the value.
  """
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, has_value, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; expected one of {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      if not has_value:
        result[key] = True
      elif value.lower() in ("true", "1", "yes"):
        result[key] = True
      elif value.lower() in ("false", "0", "no"):
        result[key] = False
      else:
        raise ValueError(f"config argument {key}={value!r} is not a boolean")
    elif not has_value:
      raise ValueError(f"config argument {key!r} needs a value")
    else:
      try:
        result[key] = type(default)(value)
      except ValueError:
        raise ValueError(
          f"config argument {key}={value!r} is not a {type(default).__name__}"
        ) from None
  return result


def training_defaults() -> ml_collections.ConfigDict:
  """Trainer fields shared by every experiment config (durations in steps or epochs)."""
  from perceiver_jax import optimizer
  from perceiver_jax import tasks

  return ml_collections.ConfigDict(
    dict(
      seed=0,
      batch_size=128,  # global, over all devices and processes
      eval_batch_size=512,
      num_epochs=1.0,  # used when total_steps == 0
      total_steps=0,
      # What the model's outputs mean: loss, metrics, evaluation (perceiver_jax/tasks/).
      task=tasks.default_config("classification"),
      log_every_steps=100,
      eval_every_steps=1000,
      checkpoint_every_steps=1000,
      keep_checkpoints=3,
      optimizer=optimizer.default_optimizer_config(),
      # Start from these weights (a checkpoint directory or an official pickle): the model's
      # head is re-initialised if `exclude_head` (whatever decoder it has), and so is every
      # module under a prefix in `exclude` (each must name a module of the model).
      pretrained=dict(path="", exclude_head=True, exclude=()),
    )
  )


def shrink_for_local_run(config: ml_collections.ConfigDict) -> None:
  """`runlocal`: the same experiment, small enough to run on a laptop CPU in a minute."""
  config.total_steps = 20
  config.log_every_steps = 5
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 10
  config.optimizer.warmup_steps = 0  # runs of any few steps (tests override total_steps)
  config.batch_size = 32
  config.eval_batch_size = 256
  config.model.num_latents = min(config.model.num_latents, 32)
  config.model.num_blocks = min(config.model.num_blocks, 2)
  config.model.num_cross_attends = min(config.model.num_cross_attends, config.model.num_blocks)
  config.model.num_self_attends_per_block = 1


def lamb_warmup_cosine(
  config: ml_collections.ConfigDict, learning_rate: float, warmup_steps: int
) -> None:
  """The language recipes' optimizer (paper, Section 4.1 and its appendix): LAMB at a fixed
  learning rate (not scaled by the batch), linear warm-up then cosine decay to 0, weight
  decay 0.01."""
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = learning_rate
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = warmup_steps
  config.optimizer.weight_decay = 0.01


def tiny_language_run(config: ml_collections.ConfigDict) -> None:
  """`runlocal` of the language configs: 20 steps at batch 8, a checkpoint every 10 steps."""
  config.total_steps = 20
  config.log_every_steps = 5
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 10
  config.batch_size = 8
  config.eval_batch_size = 8
  config.optimizer.warmup_steps = 1
