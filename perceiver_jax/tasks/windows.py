"""Windowed evaluation: an example seen through W windows, its predictions averaged.

AudioSet evaluates each clip as W crops (`config.task.eval_windows`); the data layer gives
inputs [b, W, ...]. The windows are folded into the batch, scored in one forward pass, and the
per-window probabilities (softmax or sigmoid, chosen by the task) are averaged per example.
W = 0 means no window axis: both functions then return their argument unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fold(inputs, num_windows: int):
  """Every leaf [b, W, ...] -> [b * W, ...] (window-major within an example)."""
  if not num_windows:
    return inputs
  return jax.tree.map(lambda x: x.reshape(x.shape[0] * num_windows, *x.shape[2:]), inputs)


def average(probs: jax.Array, num_windows: int) -> jax.Array:
  """Per-window probabilities [b * W, K] -> their mean per example [b, K]."""
  if not num_windows:
    return probs
  return jnp.mean(probs.reshape(-1, num_windows, probs.shape[-1]), axis=1)
