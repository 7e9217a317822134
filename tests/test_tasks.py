"""Tests for perceiver_jax/tasks/: the registry, each task's loss against numpy, and each
evaluator over several pmapped batches with padding and windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import tasks
from perceiver_jax.tasks import average_precision
from perceiver_jax.tasks import windows

DEVICES = 4  # conftest.py forces 8 CPU devices


def _np_log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_sigmoid(logits):
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def _task(name, **fields):
  cfg = tasks.default_config(name)
  for key, value in fields.items():
    cfg[key] = value
  return tasks.get(cfg)


def _evaluate(task, inputs, labels, num_real, per_device=2):
  """Runs `task` over the split in batches of DEVICES * per_device, padding the last batch
  (mask 0, label rows of zeros), with the model apply_fn(x) = 2 * x (inputs are logits)."""
  batch_size = DEVICES * per_device
  padded = -(-num_real // batch_size) * batch_size
  pad = padded - num_real
  inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
  labels = np.concatenate([labels, np.zeros((pad, *labels.shape[1:]), labels.dtype)])
  mask = (np.arange(padded) < num_real).astype(np.float32)
  eval_step = jax.pmap(
    lambda batch: task.eval_step(lambda x: 2.0 * x, batch, "batch"),
    axis_name="batch",
    devices=jax.devices()[:DEVICES],
  )
  evaluator = task.evaluator()
  for start in range(0, padded, batch_size):
    batch = {
      key: value[start : start + batch_size].reshape(DEVICES, per_device, *value.shape[1:])
      for key, value in (("inputs", inputs), ("labels", labels), ("mask", mask))
    }
    evaluator.add(eval_step(batch), batch)
  return evaluator.result()


def test_registry_defaults_and_one_line_errors():
  assert set(tasks.TASKS) >= {"classification", "multi_label"}
  assert tasks.default_config("classification").to_dict() == dict(
    name="classification", label_smoothing=0.0, eval_windows=0
  )
  assert tasks.default_config("multi_label").to_dict() == dict(name="multi_label", eval_windows=0)
  assert _task("multi_label", eval_windows=16).eval_windows == 16
  cases = [
    ("classification", dict(label_smoothing=1.0), r"^config\.task\.label_smoothing=1\.0: "),
    ("classification", dict(eval_windows=-1), r"^config\.task\.eval_windows=-1: "),
    ("multi_label", dict(eval_windows=-2), r"^config\.task\.eval_windows=-2: "),
  ]
  for name, fields, message in cases:
    with pytest.raises(ValueError, match=message):
      _task(name, **fields)
  with pytest.raises(ValueError, match=r"^config\.task\.name='regression': expected one of"):
    tasks.default_config("regression")
  switched = tasks.default_config("classification")
  switched.name = "multi_label"  # the classification fields do not belong to multi_label
  with pytest.raises(ValueError, match=r"^config\.task\.label_smoothing=0\.0: not a field of"):
    tasks.get(switched)
  incomplete = tasks.default_config("classification")
  del incomplete["eval_windows"]
  with pytest.raises(ValueError, match=r"^config\.task\.eval_windows: missing"):
    tasks.get(incomplete)


def test_windows_fold_and_average_keep_examples_apart():
  inputs = {"audio": jnp.arange(2 * 3 * 4).reshape(2, 3, 4)}
  folded = windows.fold(inputs, 3)
  np.testing.assert_array_equal(folded["audio"][3:6], inputs["audio"][1])
  probs = jnp.asarray([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
  np.testing.assert_allclose(windows.average(probs, 2), [[0.25, 0.75], [0.6, 0.4]])
  assert windows.fold(inputs, 0) is inputs and windows.average(probs, 0) is probs


def test_classification_loss_and_top1_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = np.array([0, 1, 2, 3, 4, 0])
  loss, metrics = _task("classification", label_smoothing=0.1).loss(
    jnp.asarray(logits), {"labels": labels}
  )
  targets = np.eye(5)[labels] * 0.9 + 0.1 / 5
  expected = -(targets * _np_log_softmax(logits)).sum(-1).mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  assert float(metrics["top1"]) == pytest.approx(np.mean(logits.argmax(-1) == labels))
  assert set(metrics) == {"top1"}


@pytest.mark.parametrize("num_windows", [0, 3])
def test_classification_evaluator_counts_each_real_example_once(num_windows):
  rng = np.random.default_rng(1)
  num_real, num_classes = 13, 7  # two batches of 8, the second with 3 padding rows
  window_shape = (num_windows,) if num_windows else ()
  inputs = rng.normal(size=(num_real, *window_shape, num_classes)).astype(np.float32)
  labels = rng.integers(0, num_classes, num_real).astype(np.int32)
  result = _evaluate(_task("classification", eval_windows=num_windows), inputs, labels, num_real)

  log_probs = _np_log_softmax(2.0 * inputs)
  if num_windows:
    log_probs = np.log(np.exp(log_probs).mean(axis=1))
  ranks = (log_probs > log_probs[np.arange(num_real), labels][:, None]).sum(-1)
  assert result["eval/count"] == num_real
  np.testing.assert_allclose(
    result["eval/loss"], -log_probs[np.arange(num_real), labels].mean(), rtol=1e-5
  )
  assert result["eval/top1"] == pytest.approx(np.mean(ranks < 1))
  assert result["eval/top5"] == pytest.approx(np.mean(ranks < 5))


def test_multi_label_loss_against_numpy():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(4, 6)).astype(np.float32) * 4
  labels = (rng.random((4, 6)) < 0.4).astype(np.float32)
  loss, metrics = _task("multi_label").loss(jnp.asarray(logits), {"labels": labels})
  probs = _np_sigmoid(logits)
  expected = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert metrics == {}


@pytest.mark.parametrize("num_windows", [0, 2])
def test_multi_label_evaluator_reports_map_of_window_averaged_scores(num_windows):
  rng = np.random.default_rng(3)
  num_real, num_classes = 11, 5
  window_shape = (num_windows,) if num_windows else ()
  inputs = rng.normal(size=(num_real, *window_shape, num_classes)).astype(np.float32)
  labels = (rng.random((num_real, num_classes)) < 0.4).astype(np.float32)
  labels[0] = 1.0  # every class has a positive example
  result = _evaluate(_task("multi_label", eval_windows=num_windows), inputs, labels, num_real)

  scores = _np_sigmoid(2.0 * inputs)
  if num_windows:
    scores = scores.mean(axis=1)
  assert result["eval/count"] == num_real
  expected_map = average_precision.mean_average_precision(scores, labels)
  np.testing.assert_allclose(result["eval/mAP"], expected_map, rtol=1e-6)
  bce = -(labels * np.log(scores) + (1 - labels) * np.log(1 - scores)).mean()
  np.testing.assert_allclose(result["eval/loss"], bce, rtol=1e-5)
  assert set(result) == {"eval/mAP", "eval/loss", "eval/count"}
