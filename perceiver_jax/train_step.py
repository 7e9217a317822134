"""The pure training and evaluation steps, built once and pmapped.

Shapes: a batch is a dict of arrays shaped `[local_devices, per_device, ...]` outside
`pmap`, `[per_device, ...]` inside it: `inputs` (images [b, H, W, C], points [b, P, 3], or
a dict of modality arrays), the task's targets (e.g. `labels`), and for evaluation `mask` [b]
(0 for padding). What the model's outputs mean (loss, metrics, evaluation) is the task's
(perceiver_jax/tasks/); the steps know no task by name.

Everything the steps need comes in as arguments: they read no flags or globals.
"""

from __future__ import annotations

from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceiver_jax import optimizer as optimizer_lib
from perceiver_jax import tasks

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
  task: tasks.Task,
  *,
  axis_name: str = AXIS,
):
  """Returns `train_step(state, batch) -> (state, metrics)` to run under `pmap`.

  The task gives the loss and its metrics; gradients, BatchNorm statistics and metrics are
  averaged over `axis_name`; each device draws its own dropout key from (base key, step, device
  index). Metrics: `loss`, the task's, `grad_norm`, `param_norm`, `learning_rate`.
  """

  def loss_fn(params, model_state, batch, rng):
    outputs, model_state = forward.apply(
      params, model_state, rng, batch["inputs"], is_training=True, **task.model_kwargs(batch)
    )
    loss, task_metrics = task.loss(outputs, batch)
    return loss, (task_metrics, model_state)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    device = jax.lax.axis_index(axis_name)
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), device)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (task_metrics, model_state)), grads = grad_fn(state.params, state.state, batch, rng)
    grads = jax.lax.pmean(grads, axis_name)
    model_state = jax.lax.pmean(model_state, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = jax.lax.pmean({"loss": loss, **task_metrics}, axis_name)
    metrics["grad_norm"] = optimizer_lib.global_norm(grads)
    metrics["param_norm"] = optimizer_lib.global_norm(params)
    metrics["learning_rate"] = schedule(state.step)
    new_state = TrainState(state.step + 1, params, model_state, opt_state, state.rng)
    return new_state, metrics

  return train_step


def make_eval_step(forward: hk.TransformedWithState, task: tasks.Task, *, axis_name: str = AXIS):
  """Returns `eval_step(params, state, batch)` to run under `pmap`: the task's evaluation
  outputs of one batch (e.g. psum'd metric sums, or per-example scores)."""

  def eval_step(params: hk.Params, model_state: hk.State, batch: dict):
    def apply_fn(inputs, **model_kwargs):
      outputs, _ = forward.apply(
        params, model_state, None, inputs, is_training=False, **model_kwargs
      )
      return outputs

    return task.eval_step(apply_fn, batch, axis_name)

  return eval_step
