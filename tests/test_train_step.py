"""Tests for perceiver_jax/train_step.py: the pmapped step on 8 CPU devices."""

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import optax
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax import train_step as ts


def _classification(**fields):
  cfg = tasks.default_config("classification")
  for key, value in fields.items():
    cfg[key] = value
  return tasks.get(cfg)


@pytest.fixture(scope="module")
def setup():
  cfg = registry.get_model_config("testing")
  forward = model.build_model(cfg)
  schedule = optax.constant_schedule(1e-3)
  tx = optax.chain(optax.clip_by_global_norm(10.0), optax.lamb(schedule, weight_decay=0.1))
  rng = jax.random.PRNGKey(0)
  images = jax.random.uniform(rng, (16, *cfg.input_shape))
  labels = jnp.arange(16) % cfg.num_classes
  state = jax.jit(lambda: ts.init_train_state(forward, tx, rng, images[:1]))()
  return forward, tx, schedule, state, images, labels


def _run(setup, num_devices, steps=3):
  forward, tx, schedule, state, images, labels = setup
  step = jax.pmap(
    ts.make_train_step(forward, tx, schedule, _classification(label_smoothing=0.1)),
    axis_name=ts.AXIS,
    devices=jax.devices()[:num_devices],
  )
  state = ts.replicate(state, num_devices)
  batch = {
    "inputs": images.reshape(num_devices, -1, *images.shape[1:]),
    "labels": labels.reshape(num_devices, -1),
  }
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    history.append(jax.tree.map(lambda m: float(m[0]), metrics))
  return jax.tree.map(lambda x: np.asarray(x[0]), state), history


def test_eight_devices_equal_one_device_on_the_same_global_batch(setup):
  assert jax.device_count() >= 8, "conftest.py forces 8 CPU devices"
  state_1, history_1 = _run(setup, 1)
  state_8, history_8 = _run(setup, 8)
  initial = setup[3].params

  def updates(params):
    """(the updates of all but the key biases, the key biases' updates), in float64."""
    moved = jax.tree.map(lambda p, p0: np.float64(p) - np.float64(p0), params, initial)
    return numerics.split_key_biases(moved)

  updates_1, key_updates_1 = updates(state_1.params)
  updates_8, key_updates_8 = updates(state_8.params)
  # Compared with each leaf's update, not its value: float noise changes an update by < 0.1% of
  # its leaf's (LAMB's per-element scaling amplifies it where a gradient is near zero); a
  # sharding bug, e.g. a device stepping with its own gradient, changes it by ~100%.
  numerics.assert_trees_close_to_scale(updates_8, updates_1, rtol=1e-2)
  # The key biases' gradient is float noise (zero in exact arithmetic, see numerics.py); LAMB,
  # dividing it by Adam's eps of 1e-6, moves them by far less than a real gradient does (~lr
  # per step): under 1e-5 here.
  assert numerics.scale((key_updates_1, key_updates_8)) < 0.1 * 1e-3 * 3
  for m1, m8 in zip(history_1, history_8, strict=True):
    assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-5)
  assert int(state_8.step) == 3
  assert history_8[-1]["loss"] < history_8[0]["loss"]  # the same batch: the loss falls


def test_replicas_stay_identical_and_metrics_are_reported(setup):
  forward, tx, schedule, state, images, labels = setup
  step = jax.pmap(ts.make_train_step(forward, tx, schedule, _classification()), axis_name=ts.AXIS)
  n = jax.local_device_count()
  state = ts.replicate(state, n)
  batch = {
    "inputs": images[: 2 * n].reshape(n, 2, *images.shape[1:]),
    "labels": labels[: 2 * n].reshape(n, 2),
  }
  state, metrics = step(state, batch)
  for leaf in jax.tree.leaves(state.params):
    np.testing.assert_array_equal(leaf[0], leaf[-1])
  assert set(metrics) == {"loss", "top1", "grad_norm", "param_norm", "learning_rate"}
  assert float(metrics["learning_rate"][0]) == pytest.approx(1e-3)


def test_eval_step_counts_each_real_example_once(setup):
  forward, _, _, state, images, labels = setup
  n = 8
  mask = (jnp.arange(16) < 13).astype(jnp.float32)  # 3 padded examples
  batch = {
    "inputs": images.reshape(n, 2, *images.shape[1:]),
    "labels": labels.reshape(n, 2),
    "mask": mask.reshape(n, 2),
  }
  eval_step = jax.pmap(
    ts.make_eval_step(forward, _classification()), axis_name=ts.AXIS, devices=jax.devices()[:n]
  )
  params, model_state = ts.replicate((state.params, state.state), n)
  sums = jax.tree.map(lambda x: float(x[0]), eval_step(params, model_state, batch))
  assert sums["count"] == 13
  logits, _ = forward.apply(state.params, state.state, None, images[:13], is_training=False)
  expected_top1 = float(jnp.sum(jnp.argmax(logits, -1) == labels[:13]))
  assert sums["top1_sum"] == expected_top1
