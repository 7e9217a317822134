"""The pure training and evaluation steps, built once and pmapped.

Shapes: a batch is a dict of arrays shaped `[local_devices, per_device, ...]` outside
`pmap`, `[per_device, ...]` inside it: `inputs` (images [b, H, W, C], points [b, P, 3], or
a dict of modality arrays), `labels` [b] (int), [b, K] (soft, after MixUp/CutMix) or
[b, K] multi-hot (multi-label), and for evaluation `mask` [b] (0 for padding). Windowed
evaluation inputs carry a window axis, [b, W, ...].

Everything the steps need comes in as arguments: they read no flags or globals.
"""

from __future__ import annotations

from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceiver_jax import losses
from perceiver_jax import optimizer as optimizer_lib

AXIS = "batch"


class TrainState(NamedTuple):
  step: jax.Array  # [] int32
  params: hk.Params
  state: hk.State  # BatchNorm statistics
  opt_state: optax.OptState
  rng: jax.Array  # the base key; each step and device folds in its own indices


def init_train_state(
  forward: hk.TransformedWithState,
  tx: optax.GradientTransformation,
  rng: jax.Array,
  example_inputs,
) -> TrainState:
  """A fresh state; call once (e.g. under `jax.jit`) and replicate to the devices."""
  init_rng, train_rng = jax.random.split(rng)
  params, state = forward.init(init_rng, example_inputs, is_training=True)
  return TrainState(jnp.zeros((), jnp.int32), params, state, tx.init(params), train_rng)


def replicate(tree, num_devices: int):
  """A copy of every leaf for each device: the `pmap` input layout [devices, ...].

  Built on the host (a broadcast view, no copy), whatever device or sharding the
  leaves had (freshly initialised or restored), so that `pmap` places the copies.
  """
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (num_devices, *np.shape(x))), tree)


def make_train_step(
  forward: hk.TransformedWithState,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  *,
  label_smoothing: float = 0.0,
  multi_label: bool = False,
  axis_name: str = AXIS,
):
  """Returns `train_step(state, batch) -> (state, metrics)` to run under `pmap`.

  Gradients, BatchNorm statistics and metrics are averaged over `axis_name`; each
  device draws its own dropout key from (base key, step, device index).
  """

  def loss_fn(params, model_state, inputs, labels, rng):
    logits, model_state = forward.apply(params, model_state, rng, inputs, is_training=True)
    if multi_label:
      loss = losses.sigmoid_cross_entropy(logits, labels)
    else:
      loss = losses.softmax_cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return loss, (logits, model_state)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    device = jax.lax.axis_index(axis_name)
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), device)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, model_state)), grads = grad_fn(
      state.params, state.state, batch["inputs"], batch["labels"], rng
    )
    grads = jax.lax.pmean(grads, axis_name)
    model_state = jax.lax.pmean(model_state, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss}
    if not multi_label:
      labels = batch["labels"]
      metrics["top1"] = jnp.mean(losses.topk_correct(logits, labels, 1))
    metrics = jax.lax.pmean(metrics, axis_name)
    metrics["grad_norm"] = optimizer_lib.global_norm(grads)
    metrics["param_norm"] = optimizer_lib.global_norm(params)
    metrics["learning_rate"] = schedule(state.step)
    new_state = TrainState(state.step + 1, params, model_state, opt_state, state.rng)
    return new_state, metrics

  return train_step


def _fold_windows(inputs, num_windows: int):
  """[b, W, ...] leaves -> [b * W, ...]."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] * num_windows, *x.shape[2:]), inputs)


def make_eval_step(
  forward: hk.TransformedWithState,
  *,
  multi_label: bool = False,
  num_windows: int = 0,
  axis_name: str = AXIS,
):
  """Returns `eval_step(params, state, batch)` to run under `pmap`.

  Single-label: metric sums (not means) over the real examples of all devices, so that a
  whole split is counted exactly once by adding batches and dividing at the end.
  Multi-label: per-example sigmoid scores [b, K] (mAP needs the whole split's ranking).
  With `num_windows = W > 0` the inputs are [b, W, ...]; the windows of an example are
  scored separately and their probabilities averaged (softmax or sigmoid).
  """

  def eval_step(params: hk.Params, model_state: hk.State, batch: dict) -> dict:
    inputs = batch["inputs"]
    if num_windows:
      inputs = _fold_windows(inputs, num_windows)
    logits, _ = forward.apply(params, model_state, None, inputs, is_training=False)
    logits = logits.astype(jnp.float32)
    if multi_label:
      scores = jax.nn.sigmoid(logits)
      if num_windows:
        scores = jnp.mean(scores.reshape(-1, num_windows, scores.shape[-1]), axis=1)
      return {"scores": scores}
    if num_windows:
      probs = jax.nn.softmax(logits).reshape(-1, num_windows, logits.shape[-1])
      logits = jnp.log(jnp.maximum(jnp.mean(probs, axis=1), 1e-30))
    sums = losses.classification_metric_sums(logits, batch["labels"], batch["mask"])
    return jax.lax.psum(sums, axis_name)

  return eval_step
